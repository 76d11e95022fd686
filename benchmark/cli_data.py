"""``ldct-bench data …``: build, inspect, preview and calibrate datasets.

Mounted by :mod:`benchmark.cli` as ``app.add_typer(data_app, name="data")``. Commands raise
:class:`~benchmark.core.errors.UserError` for bad input (the top-level CLI prints it and exits 2).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from benchmark.core.errors import UserError

data_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                       help="Build, inspect, preview and calibrate datasets.")

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="dataset kind: synth, mayo2016, dicom_pairs")]
SizeOpt = Annotated[str | None, typer.Option("--size", help="synth: tiny, small or full")]
RootOpt = Annotated[Path | None, typer.Option("--root", help="DICOM datasets: the data folder")]
OptionOpt = Annotated[list[str] | None, typer.Option("--option", "-O", help="any dataset option as key=value (repeatable)")]


def dataset_options(size: str | None, root: Path | None, option: list[str] | None) -> dict[str, Any]:
    """Options dict from the common flags; ``key=value`` values are read as YAML scalars/lists."""
    import yaml  # lazy: CLI start-up

    opts: dict[str, Any] = {}
    if size is not None:
        opts["size"] = size
    if root is not None:
        opts["root"] = str(root)
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{item!r}: write dataset options as key=value", field="--option")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML 1.1 reads "2.5e5" as text
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        opts[key.strip()] = parsed
    return opts


def _open(kind: str, size: str | None, root: Path | None, option: list[str] | None, **extra: Any):
    from benchmark.data import open_dataset  # lazy: CLI start-up

    return open_dataset(kind, {**dataset_options(size, root, option), **extra})


def preview_rows(dataset) -> list[list[str]]:
    """Conditions shown by the preview: synth clean/100/25/10 % at 720 and 180 views; else all."""
    conds = dataset.conditions()
    if dataset.kind == "synth":
        return [[f"{d}_{v}" for d in (100, 25, 10)] for v in (720, 180)]
    return [conds]


@data_app.command()
def build(
    dataset: DatasetOpt = "synth",
    size: SizeOpt = None,
    root: RootOpt = None,
    option: OptionOpt = None,
    preview: Annotated[Path | None, typer.Option(help="PNG path of the preview (default: in the cache folder)")] = None,
    no_preview: Annotated[bool, typer.Option("--no-preview", help="skip the PNG preview")] = False,
) -> None:
    """Build the dataset cache (progress bar) and write a PNG preview of target / 100 % / 25 % / 10 %."""
    from benchmark.data.preview import write_preview  # lazy: CLI start-up

    ds = _open(dataset, size, root, option)
    ds.prepare(progress=True)
    folder = Path(ds.describe().get("cache", "."))
    typer.echo(f"cache: {folder}")
    if not no_preview:
        path = write_preview(ds, preview or folder / "preview.png", rows=preview_rows(ds))
        typer.echo(f"preview: {path}")


@data_app.command("preview")
def preview_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG path to write")],
    dataset: DatasetOpt = "synth",
    size: SizeOpt = None,
    root: RootOpt = None,
    option: OptionOpt = None,
    split: Annotated[str, typer.Option(help="train, val or test")] = "test",
    slice_id: Annotated[str | None, typer.Option("--slice", help="slice id <patient>/<slice> (default: a middle patient)")] = None,
    window: Annotated[str | None, typer.Option(help="HU window preset (abdomen, chest, head ...) or 'lo,hi'")] = None,
) -> None:
    """Write a PNG of one slice: the target and the inputs of several conditions."""
    from benchmark.data.preview import write_preview  # lazy: CLI start-up

    if split not in ("train", "val", "test"):
        raise UserError(f"unknown split {split!r}; valid: train, val, test", field="--split")
    ds = _open(dataset, size, root, option)
    typer.echo(write_preview(ds, out, rows=preview_rows(ds), split=split, slice_id=slice_id, window=window))  # type: ignore[arg-type]


def noise_rows(ds, split: str = "test") -> list[dict[str, Any]]:
    """One row per condition: slices, patients and the noise std in HU in uniform regions.

    synth: std of ``input − noiseless FBP at the same views`` (pure noise). DICOM data: std of
    ``input − target`` (``sqrt(σ_in² + σ_target²)``, the target being a real scan), in uniform
    soft-tissue regions of the (smoothed) target.
    """
    rows = []
    for cond in ds.conditions():
        pairs = ds.load(split, cond)
        ref, roi = (pairs.extra["clean_fbp"], pairs.extra["roi"]) if ds.kind == "synth" else (None, None)
        rows.append(_noise_row(cond, pairs.inputs, pairs.targets, pairs.pixel_spacing_mm, split,
                               set(pairs.patients.tolist()), ref, roi))  # fmt: skip
    return rows


@data_app.command()
def inspect(
    dataset: DatasetOpt = "synth",
    size: SizeOpt = None,
    root: RootOpt = None,
    option: OptionOpt = None,
    csv_out: Annotated[bool, typer.Option("--csv", help="CSV on stdout: condition,noise_hu,split,slices,patients,unpaired")] = False,
    split: Annotated[str, typer.Option(help="split whose noise is measured")] = "test",
) -> None:
    """Per condition: slices, patients and noise std (HU) in uniform regions. DICOM data also lists
    every patient with its pairs and the slices without a partner, and measures any tree: where the
    train/val/test split cannot be made (e.g. the default test patient is not there yet) that is a
    warning, and the noise is measured on every patient's pairs. Exits 0 for what it finds; the split
    error belongs to ``run``."""
    from benchmark.data.dicom import PairedDicomDataset  # lazy: CLI start-up

    if split not in ("train", "val", "test"):
        raise UserError(f"unknown split {split!r}; valid: train, val, test", field="--split")
    ds = _open(dataset, size, root, option)
    unpaired: list[str] = []
    per_cond: dict[str, int] = {}
    warnings: list[str] = []
    if isinstance(ds, PairedDicomDataset):
        index = ds.index()
        for pp in index:
            per_cond[pp.condition] = per_cond.get(pp.condition, 0) + len(pp.unpaired)
            unpaired += [f"{pp.patient}/{pp.condition}: {h.path} (z = {h.z:.2f} mm)" for h in pp.unpaired]
        _echo_patients(index, err=csv_out)
        if unpaired and not ds.options.skip_unpaired:  # measure on the paired slices anyway
            ds = _open(dataset, size, root, option, skip_unpaired=True)
        try:
            ds.split_patients()
        except UserError as exc:
            warnings.append(f"the train/val/test split cannot be made ({exc}); `run` will refuse this tree "
                            "until it is fixed. Noise measured on every patient's pairs.")
            rows = index_noise_rows(ds, index)
        else:
            rows = noise_rows(ds, split)
    else:
        rows = noise_rows(ds, split)
    for r in rows:
        r["unpaired"] = per_cond.get(r["condition"], 0)
    if csv_out:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        _print_table(ds, rows)
    if unpaired:
        stream_err = csv_out
        typer.echo(f"{len(unpaired)} unpaired slice(s):", err=stream_err)
        for line in unpaired:
            typer.echo(f"  {line}", err=stream_err)
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)


def _echo_patients(index: list[Any], *, err: bool) -> None:
    """One line per patient and condition: paired slices and slices without a partner."""
    typer.echo("patient  condition  pairs  unpaired", err=err)
    for pp in index:
        typer.echo(f"{pp.patient:<8} {pp.condition:<10} {len(pp.pairs):>5}  {len(pp.unpaired):>8}", err=err)


def index_noise_rows(ds: Any, index: list[Any]) -> list[dict[str, Any]]:
    """:func:`noise_rows` for a DICOM tree without a usable split: every patient's pairs of each real
    condition, read straight from the files (nothing is cached); simulated conditions need a built
    split and get no row."""
    from benchmark.core.dicom import read_hu  # lazy: CLI start-up

    rows = []
    for cond in ds.real_conditions():
        pairs = [(pp.patient, a, b) for pp in index if pp.condition == cond for a, b in pp.pairs]
        if not pairs:
            rows.append({"condition": cond, "noise_hu": float("nan"), "split": "all", "slices": 0, "patients": 0})
            continue
        inputs = np.stack([read_hu(a.path) for _, a, _ in pairs])
        targets = np.stack([read_hu(b.path) for _, _, b in pairs])
        rows.append(_noise_row(cond, inputs, targets, float(pairs[0][2].spacing[0]), "all",
                               {p for p, _, _ in pairs}))  # fmt: skip
    return rows


def _noise_row(cond: str, inputs: np.ndarray, targets: np.ndarray, spacing_mm: float, split: str,
               patients: set[str], ref: np.ndarray | None = None, roi: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """One condition's row: std of ``input − ref`` in uniform regions ``roi`` (default: ``ref`` is the
    target and the regions are found in it)."""
    from benchmark.data.measure import difference_noise_std, uniform_roi  # lazy: CLI start-up

    ref = targets if ref is None else ref
    if roi is None:
        roi = np.stack([uniform_roi(np.asarray(t), spacing_mm, max_std_hu=20, smooth_mm=1.5) for t in ref])
    noise = difference_noise_std(inputs, ref, roi) if len(inputs) and np.any(roi) else float("nan")
    return {"condition": cond, "noise_hu": round(noise, 3), "split": split, "slices": len(inputs), "patients": len(patients)}


def _print_table(ds, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console  # lazy: CLI start-up
    from rich.table import Table  # lazy: CLI start-up

    desc = ds.describe()
    table = Table(title=f"{ds.kind} · noise std (HU) in uniform regions of the {rows[0]['split']} split")
    for col in rows[0]:
        table.add_column(col, justify="left" if col in ("condition", "split") else "right")
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    console = Console(width=120)
    console.print(table)
    console.print(f"cache: {desc.get('cache')}")


@data_app.command()
def calibrate(
    dataset: DatasetOpt = "mayo2016",
    root: RootOpt = None,
    option: OptionOpt = None,
    condition: Annotated[str, typer.Option(help="the real low-dose condition to match")] = "quarter",
    dose: Annotated[float, typer.Option(help="its dose fraction of the reference")] = 0.25,
    split: Annotated[str, typer.Option(help="split whose slices are used")] = "train",
    max_slices: Annotated[int, typer.Option(help="at most this many slices (evenly spaced)")] = 24,
    electronic_var: Annotated[float, typer.Option(help="electronic noise variance σe² (counts²)")] = 10.0,
    device: Annotated[str, typer.Option(help="projector device: auto, cpu or cuda")] = "auto",
) -> None:
    """Fit the photon count I0 of projection-domain noise insertion (Yu et al. 2012) so that the
    simulated CONDITION matches the real one; prints I0 for ``dataset.options.i0``."""
    from benchmark.core.device import resolve_device  # lazy: CLI start-up
    from benchmark.data.noise_insertion import calibrate_i0  # lazy: CLI start-up

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"{device!r}: use auto, cpu or cuda", field="--device")
    device = resolve_device(device, field="--device").type
    if not 0 < dose < 1:
        raise UserError(f"{dose}: the dose fraction must be in (0, 1)", field="--dose")
    ds = _open(dataset, None, root, option)
    if condition not in ds.conditions():
        raise UserError(f"unknown condition {condition!r}; valid: {', '.join(ds.conditions())}", field="--condition")
    pairs = ds.load(split, condition)  # type: ignore[arg-type]
    if len(pairs) == 0:
        raise UserError(f"no slices in the {split} split", field="--split")
    pick = np.unique(np.linspace(0, len(pairs) - 1, min(max_slices, len(pairs))).round().astype(int))
    spacing = np.asarray(pairs.extra.get("pixel_spacing_mm", np.full(len(pairs), pairs.pixel_spacing_mm)))[pick]
    if np.ptp(spacing) > 1e-3:
        keep = np.isclose(spacing, np.median(spacing), atol=1e-3)
        pick, spacing = pick[keep], spacing[keep]
    cal = calibrate_i0(np.asarray(pairs.targets[pick]), np.asarray(pairs.inputs[pick]), float(spacing[0]),
                       dose=dose, electronic_var=electronic_var, device=device)
    typer.echo(f"slices used: {len(pick)} ({split}), uniform-region pixels: {cal.roi_pixels}")
    typer.echo(f"real noise std(low − full): {cal.real_std_hu:.2f} HU; inserted target {cal.target_std_hu:.2f} HU, "
               f"reached {cal.simulated_std_hu:.2f} HU")
    typer.echo(f"I0 = {cal.i0:.4g} photons per ray per view")
    typer.echo(f"set it with: dataset.options.i0: {cal.i0:.4g}")
