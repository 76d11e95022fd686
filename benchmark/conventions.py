"""The one place where the suite's image conventions are defined.

* **HU windows** (display / metric windows): a window ``(lo, hi)`` in HU. Metrics clip an image in HU
  to the window and scale it to [0, 1] with ``data_range = 1`` (:func:`window_to_unit`); figures use
  the same windows. The default is the abdomen soft-tissue window [−160, 240] HU (level 40, width 400).
* **Network normalisation**: networks and training losses see ``(HU + 1024) / 4096``, so air
  (−1000 HU) ≈ 0.006, water 0.25, dense bone (1500 HU) ≈ 0.62; nothing is clipped, so no information
  is lost and :func:`net_to_hu` inverts it exactly.
* **Patch sampling**: random square crops drawn from a seeded ``torch.Generator``, with optional
  augmentation by 90° rotations and flips (the dihedral group D4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmark.errors import UserError


@dataclass(frozen=True)
class HUWindow:
    """A display window in HU; ``level``/``width`` follow the radiology convention."""

    name: str
    lo: float
    hi: float

    @property
    def level(self) -> float:
        return (self.lo + self.hi) / 2

    @property
    def width(self) -> float:
        return self.hi - self.lo


WINDOWS: dict[str, HUWindow] = {
    "abdomen": HUWindow("abdomen", -160.0, 240.0),  # L40 W400: the study default
    "liver": HUWindow("liver", -25.0, 125.0),  # L50 W150
    "chest": HUWindow("chest", -1350.0, 150.0),  # lung window L-600 W1500
    "mediastinum": HUWindow("mediastinum", -125.0, 225.0),  # L50 W350
    "head": HUWindow("head", 0.0, 80.0),  # brain L40 W80
    "bone": HUWindow("bone", -450.0, 1050.0),  # L300 W1500
}
DEFAULT_WINDOW = WINDOWS["abdomen"]

# Network normalisation (see module docstring).
NET_OFFSET_HU = 1024.0
NET_SCALE_HU = 4096.0


def parse_window(spec: str | tuple[float, float] | list[float] | HUWindow | None) -> HUWindow:
    """Accept a preset name (``"abdomen"``), ``"lo,hi"``, a pair, or an :class:`HUWindow`."""
    if spec is None:
        return DEFAULT_WINDOW
    if isinstance(spec, HUWindow):
        return spec
    if isinstance(spec, str):
        if spec in WINDOWS:
            return WINDOWS[spec]
        parts = spec.split(",")
        if len(parts) != 2:
            raise UserError(
                f"{spec!r} is neither a window preset ({', '.join(WINDOWS)}) nor 'lo,hi' in HU", field="window"
            )
        try:
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError:
            raise UserError(f"{spec!r}: 'lo,hi' must be two numbers in HU", field="window") from None
    else:
        if len(spec) != 2:
            raise UserError(f"{spec!r}: a window is two numbers [lo, hi] in HU", field="window")
        lo, hi = float(spec[0]), float(spec[1])
    if not hi > lo:
        raise UserError(f"[{lo}, {hi}]: the upper bound must exceed the lower", field="window")
    return HUWindow(f"{lo:g},{hi:g}", lo, hi)


def window_to_unit(hu, window: HUWindow | str | tuple[float, float] | None = None):
    """Clip HU to the window and scale to [0, 1] (``data_range = 1``). numpy or torch in, same out."""
    w = parse_window(window)
    if isinstance(hu, torch.Tensor):
        return ((hu.clamp(w.lo, w.hi) - w.lo) / w.width).to(hu.dtype if hu.is_floating_point() else torch.float32)
    arr = np.asarray(hu, dtype=np.float32)
    return ((np.clip(arr, w.lo, w.hi) - w.lo) / w.width).astype(np.float32)


def hu_to_net(hu):
    """HU → network space ``(HU + 1024) / 4096`` (numpy or torch)."""
    return (hu + NET_OFFSET_HU) / NET_SCALE_HU


def net_to_hu(x):
    """Network space → HU; the exact inverse of :func:`hu_to_net`."""
    return x * NET_SCALE_HU - NET_OFFSET_HU


def sample_patches(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    n: int,
    patch_size: int | None,
    generator: torch.Generator,
    *,
    augment: bool = False,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``n`` aligned random crops from ``(S, H, W)`` input/target stacks.

    ``weights`` (length S) makes slice choice non-uniform, e.g. patient-balanced sampling
    (:func:`patient_balanced_weights`). Every random number comes from ``generator``, so a seeded
    generator gives the same patches on any machine. Returns ``(x, y, slice_index)`` with x, y of
    shape ``(n, 1, p, p)`` (``p = H`` and no crop when ``patch_size`` is None).
    """
    s, h, w = inputs.shape
    if weights is None:
        idx = torch.randint(0, s, (n,), generator=generator)
    else:
        idx = torch.multinomial(weights.double(), n, replacement=True, generator=generator)
    if patch_size is None or (patch_size >= h and patch_size >= w):
        x = inputs[idx].unsqueeze(1)
        y = targets[idx].unsqueeze(1)
    else:
        if patch_size > h or patch_size > w:
            raise UserError(f"patch size {patch_size} exceeds the image size {h}x{w}", field="training.patch_size")
        top = torch.randint(0, h - patch_size + 1, (n,), generator=generator)
        left = torch.randint(0, w - patch_size + 1, (n,), generator=generator)
        ar = torch.arange(patch_size)
        rows = (top[:, None] + ar[None, :])[:, :, None]
        cols = (left[:, None] + ar[None, :])[:, None, :]
        x = inputs[idx[:, None, None], rows, cols].unsqueeze(1)
        y = targets[idx[:, None, None], rows, cols].unsqueeze(1)
    if augment:
        k = torch.randint(0, 4, (n,), generator=generator)
        flip = torch.randint(0, 2, (n,), generator=generator).bool()
        xs, ys = [], []
        for i in range(n):
            xi, yi = torch.rot90(x[i], int(k[i]), (-2, -1)), torch.rot90(y[i], int(k[i]), (-2, -1))
            if flip[i]:
                xi, yi = xi.flip(-1), yi.flip(-1)
            xs.append(xi)
            ys.append(yi)
        x, y = torch.stack(xs), torch.stack(ys)
    return x.contiguous(), y.contiguous(), idx


def patient_balanced_weights(patients: np.ndarray | list[str]) -> torch.Tensor:
    """Per-slice sampling weights that give every patient the same total probability."""
    arr = np.asarray(patients)
    _, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
    return torch.from_numpy(1.0 / counts[inverse]).double()
