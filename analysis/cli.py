"""Command functions mounted by :mod:`benchmark.cli`: ``ldct-bench score`` and ``ldct-bench weights``.

``score`` reads images in HU from DICOM files (:func:`benchmark.core.dicom.read_hu`, the conversion a
matrix run uses), ``.npy`` arrays (2-D images or 3-D stacks, already in HU), or folders of
them (paired with the reference folder by file name without extension), scores them with
:func:`analysis.metrics.compute_metrics` and prints CSV ``image,metric,value``.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated, TextIO

import numpy as np
import typer

from benchmark.core.dicom import is_dicom
from benchmark.core.dicom import read_hu as read_dicom_hu
from benchmark.core.errors import UserError


def read_hu(path: Path) -> np.ndarray:
    """An image file → float32 HU array, ``(N, H, W)`` (a 2-D image gives N = 1).

    ``.npy``: the array as stored (must be 2-D or 3-D, in HU). DICOM: the suite's one conversion
    (:func:`benchmark.core.dicom.read_hu`, the same as a matrix run's: slope and intercept, padding
    below −1024 HU raised to −1024), single- or multi-frame.
    """
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the .npy array: {exc}", field=str(path)) from None
    elif is_dicom(path):
        arr = read_dicom_hu(path, frames=True)
    else:
        raise UserError("not a .npy array or a DICOM file", field=str(path))
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise UserError(
            f"expected a 2-D image or a 3-D stack (N, H, W), got shape {arr.shape}", field=str(path)
        )
    return arr


def list_images(path: Path) -> dict[str, Path]:
    """``{name: file}`` for a file or for the ``.npy``/DICOM files directly inside a folder (sorted);
    ``name`` is the file name without its extension (the pairing key)."""
    if not path.exists():
        raise UserError("no such file or folder", field=str(path))
    if path.is_file():
        return {path.stem: path}
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix.lower() == ".npy" or is_dicom(p)))
    if not files:
        raise UserError("the folder holds no .npy or DICOM files", field=str(path))
    out: dict[str, Path] = {}
    for f in files:
        if f.stem in out:
            raise UserError(
                f"two images share the name {f.stem!r}: {out[f.stem].name}, {f.name}", field=str(path)
            )
        out[f.stem] = f
    return out


def pair_images(pred: Path, ref: Path | None) -> list[tuple[str, Path, Path | None]]:
    """``[(name, pred_file, ref_file)]``; a single file is paired with a single file whatever the names,
    folders by name. Unpaired names on either side are a :class:`UserError` listing them."""
    preds = list_images(pred)
    if ref is None:
        return [(n, p, None) for n, p in preds.items()]
    refs = list_images(ref)
    if pred.is_file() and ref.is_file():
        return [(pred.stem, pred, ref)]
    only_pred, only_ref = sorted(set(preds) - set(refs)), sorted(set(refs) - set(preds))
    if only_pred or only_ref:
        parts = []
        if only_pred:
            parts.append(f"without a reference: {', '.join(only_pred)}")
        if only_ref:
            parts.append(f"without a prediction: {', '.join(only_ref)}")
        raise UserError("images are paired by file name; " + "; ".join(parts), field="ref")
    return [(n, preds[n], refs[n]) for n in preds]


def parse_metric_names(spec: str) -> list[str]:
    """``"psnr,ssim"`` → ``["psnr", "ssim"]``, each checked against the registry (close-match hint)."""
    from analysis.metrics import info  # lazy: CLI start-up

    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise UserError("give at least one metric name", field="metrics")
    return [info(n).name for n in names]


def _rows(
    pairs: list[tuple[str, Path, Path | None]], names: list[str], window: str, device: str, batch_size: int
) -> list[tuple[str, str, float]]:
    """Read every pair, score images of equal size together (one batched call per size), and return
    the rows in file order (image-major)."""
    from analysis.metrics import compute_metrics  # lazy: CLI start-up

    images: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    for name, pred_file, ref_file in pairs:
        pred = read_hu(pred_file)
        ref = read_hu(ref_file) if ref_file is not None else None
        if ref is not None and ref.shape != pred.shape:
            raise UserError(
                f"shape {pred.shape} differs from the reference's {ref.shape} ({ref_file})",
                field=str(pred_file),
            )
        labels = [name] if pred.shape[0] == 1 else [f"{name}[{i}]" for i in range(pred.shape[0])]
        images += [(label, pred[i], None if ref is None else ref[i]) for i, label in enumerate(labels)]
    values: dict[str, dict[str, float]] = {}
    for shape in dict.fromkeys(p.shape for _, p, _ in images):
        group = [im for im in images if im[1].shape == shape]
        refs = None if group[0][2] is None else np.stack([r for _, _, r in group if r is not None])
        out = compute_metrics(
            names,
            np.stack([p for _, p, _ in group]),
            refs,
            window=window,
            device=device,
            batch_size=batch_size,
            progress=len(group) > batch_size,
        )
        for i, (label, _, _) in enumerate(group):
            values[label] = {m: float(out[m][i]) for m in names}
    return [(label, m, values[label][m]) for label, _, _ in images for m in names]


def write_csv(rows: list[tuple[str, str, float]], out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image", "metric", "value"])
    for image, metric, value in rows:
        writer.writerow([image, metric, f"{value:.10g}"])


def score(
    pred: Annotated[
        Path, typer.Argument(help="prediction: a DICOM file, a .npy array in HU, or a folder of them")
    ],
    ref: Annotated[
        Path | None,
        typer.Option("--ref", "-r", help="reference (same kind as PRED; folders pair by file name)"),
    ] = None,
    metrics: Annotated[
        str, typer.Option("--metrics", "-m", help="comma-separated metric names (`ldct-bench list metrics`)")
    ] = "psnr,ssim,rmse_hu",
    window: Annotated[
        str,
        typer.Option(
            "--window", "-w", help="HU window: a preset (abdomen, liver, ...) or lo,hi, e.g. -160,240"
        ),
    ] = "abdomen",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    batch_size: Annotated[int, typer.Option("--batch-size", help="images per chunk")] = 16,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write the CSV here, not to stdout")
    ] = None,
) -> None:
    """Score PRED (against --ref for full-reference metrics); print CSV `image,metric,value`."""
    from analysis.metrics import METRICS, MetricUnavailable, available  # lazy: CLI start-up
    from benchmark.core.conventions import parse_window  # lazy: CLI start-up

    names = parse_metric_names(metrics)
    parse_window(window)
    fr = [n for n in names if METRICS[n].full_reference]
    if fr and ref is None:
        raise UserError(f"full-reference metric(s) {', '.join(fr)} need --ref", field="ref")
    for n in names:
        ok, reason = available(n)
        if not ok:
            raise MetricUnavailable(n, reason)
    pairs = pair_images(pred, ref if fr else None)
    rows = _rows(pairs, names, window, device, batch_size)
    if output is None:
        write_csv(rows, sys.stdout)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "w", newline="") as f:
            write_csv(rows, f)


weights_app = typer.Typer(no_args_is_help=True, add_completion=False)


@weights_app.command("status")
def weights_status(
    csv_out: Annotated[bool, typer.Option("--csv", help="CSV instead of a table")] = False,
) -> None:
    """List every weight file: path, presence, size, sha256 and whether it matches the published hash."""
    import pandas as pd  # lazy: CLI start-up

    from benchmark.core.weights import status  # lazy: CLI start-up

    df = pd.DataFrame(status())
    if csv_out:
        typer.echo(df.to_csv(index=False), nl=False)
        return
    from rich.console import Console  # lazy: CLI start-up
    from rich.table import Table  # lazy: CLI start-up

    table = Table(title="weight files")
    for col in ["key", "present", "size_bytes", "hash_ok", "path", "used_by"]:
        table.add_column(col)
    for row in df.itertuples(index=False):
        table.add_row(
            row.key,
            "yes" if row.present else "MISSING",
            str(row.size_bytes or ""),
            "" if row.hash_ok is None else str(row.hash_ok),
            row.path,
            row.used_by,
        )
    Console(width=200).print(table)
    missing = df.loc[~df["present"], "key"].tolist()
    if missing:
        typer.echo(
            f"missing: {', '.join(missing)}; run `ldct-bench weights fetch KEY` or `ldct-bench weights import FILE`"
        )


@weights_app.command("fetch")
def weights_fetch(
    keys: Annotated[list[str] | None, typer.Argument(help="weight keys (default: all missing)")] = None,
    force: Annotated[bool, typer.Option("--force", help="download again even if present")] = False,
) -> None:
    """Download weight files to torchvision's cache (needs internet); the hash prefix is checked."""
    from benchmark.core.weights import WEIGHTS, fetch, get, is_present  # lazy: CLI start-up

    todo = [get(k).key for k in keys] if keys else [k for k in WEIGHTS if not is_present(k)]
    if not todo:
        typer.echo("all weight files are present")
    for key in todo:
        typer.echo(f"{key}: {fetch(key, force=force)}")


@weights_app.command("import")
def weights_import(
    file: Annotated[Path, typer.Argument(help="a weight file obtained elsewhere")],
    key: Annotated[
        str | None, typer.Option("--key", "-k", help="weight key (default: from the file name/hash)")
    ] = None,
    no_check: Annotated[
        bool, typer.Option("--no-check", help="accept a file whose sha256 does not match")
    ] = False,
) -> None:
    """Copy FILE into torchvision's cache under its standard name, checking its sha256 prefix."""
    from benchmark.core.weights import import_file  # lazy: CLI start-up

    dst = import_file(file, key, check_hash=not no_check)
    typer.echo(f"imported {file} -> {dst}")
