"""PNG previews of a paired dataset: the target next to the inputs at several doses, in an HU window.

The window comes from :mod:`benchmark.core.conventions` (default abdomen, [−160, 240] HU), the same as the
metrics and figures use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.core.conventions import HUWindow, parse_window, window_to_unit
from benchmark.core.errors import UserError
from benchmark.core.io import atomic_write
from benchmark.data.base import Dataset, Split


def pick_slice(dataset: Dataset, split: Split, condition: str, slice_id: str | None) -> int:
    """Index of ``slice_id`` in the split (default: a middle slice of the first abdomen patient when the
    dataset labels body regions, else the first slice of the middle patient)."""
    pairs = dataset.load(split, condition)
    ids = [str(s) for s in pairs.slice_ids]
    regions = pairs.extra.get("regions")
    if slice_id is None and regions is not None and "abdomen" in set(regions.tolist()):
        rows = np.flatnonzero(np.asarray(regions) == "abdomen")
        first = [r for r in rows if pairs.patients[r] == pairs.patients[rows[0]]]
        return int(first[len(first) // 2])
    if slice_id is None:
        patients = list(dict.fromkeys(str(p) for p in pairs.patients))
        middle = patients[len(patients) // 2]
        return next(i for i, p in enumerate(pairs.patients) if str(p) == middle)
    if slice_id not in ids:
        raise UserError(f"no slice {slice_id!r} in the {split} split; e.g. {', '.join(ids[:5])}", field="slice")
    return ids.index(slice_id)


def write_preview(
    dataset: Dataset,
    path: Path,
    *,
    rows: list[list[str]],
    split: Split = "test",
    slice_id: str | None = None,
    window: str | HUWindow | None = None,
) -> Path:
    """Write a PNG grid: per row, the target then the inputs of the row's conditions.

    ``rows`` lists condition names, e.g. ``[["100_720", "25_720", "10_720"], ["100_180", ...]]``.
    """
    import matplotlib  # here, so that the Agg backend is chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    win = parse_window(window)
    idx = pick_slice(dataset, split, rows[0][0], slice_id)
    n_cols = 1 + max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(3 * n_cols, 3.2 * len(rows)), squeeze=False)
    for r, conds in enumerate(rows):
        first = dataset.load(split, conds[0])
        panels = [("target", np.asarray(first.targets[idx]))]
        panels += [(c, np.asarray(dataset.load(split, c).inputs[idx])) for c in conds]
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(panels):
                title, img = panels[c]
                ax.imshow(window_to_unit(img, win), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(title, fontsize=10)
    fig.suptitle(f"{dataset.kind} · {split} · {first.slice_ids[idx]} · window [{win.lo:g}, {win.hi:g}] HU", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110), suffix=path.suffix or ".png")
    plt.close(fig)
    return path
