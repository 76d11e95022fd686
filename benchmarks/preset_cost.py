"""What a preset costs to train (issue #21 §4): cells, optimizer steps and estimated device-hours.

For each preset (``--preset NAME`` or a path, repeatable; ``--preset all``: every shipped preset) the matrix
is read with the suite's own loader (:func:`benchmark.config.load_matrix`) and expanded into cells
(:func:`benchmark.cells.expand_cells`, exclusions and warm starts as a run sees them). Printed per preset:

* **cells** and **steps**: a cell trains ``training.epochs`` epochs of ``steps_per_epoch`` optimizer steps,
  the runner's own count (:func:`benchmark.train.steps_per_epoch`: ``ceil(patches_per_epoch / batch_size)``,
  one patch per training slice when ``patches_per_epoch`` is unset, 2-D and 3-D alike). A step is one
  call of the scheme's ``step``: the generator's update plus whatever the scheme does around it (WGAN-GP's
  ``critic_steps`` critic updates, pix2pix's / CycleGAN's / UNIT's discriminator updates), so those extra
  updates are inside the timed step; the updates a step makes are counted and printed (``upd/step``).
  With early stopping enabled the steps are an upper bound.
* **step time** of each distinct combination of (architecture and its kwargs, scheme and its options, loss
  terms) at the preset's batch and patch size on ``--device``: the cell's scheme is built by the runner
  itself (:meth:`benchmark.runner.Runner.build`: generator, loss terms, the scheme's own networks and
  discriminators, optimizers and schedule), batches are drawn by the runner's sampler
  (:class:`benchmark.train.TrainData`, paired or unpaired as the scheme trains) from random slices, and
  one step is what :func:`benchmark.train.train_epoch` does per batch (precision, channels-last,
  per-step schedule), timed with ``benchmarks/_timing.py`` like ``bench_models.py`` (warm-up, median of
  ``--repeats``, each combination in its own spawned process, GPU-synchronised, the matrix's
  ``deterministic`` setting applied as the runner does). A loss needing an ImageNet backbone that is not
  on this machine is timed with the same network randomly initialised (``backbone: random``: same cost).
* **device-hours** = Σ over combinations of cells × steps per cell × step time, and separately the
  **inference** the runner and the analysis do: the per-epoch validation (forward and validation loss on
  the whole validation slices, every epoch) and the analysis's denoising of the evaluation split at each
  scored epoch (``evaluation.every``, the last always, of the checkpoints kept), both timed on one batch
  of whole slices (3-D: one slab) and scaled by the number of slices. **Excluded**: the metrics' own
  cost (see ``bench_gpu.py``'s ``eval`` section / ``bench_metrics.py``), checkpoint writes, building the
  dataset, process start-up.

``--max-batch N`` times at most N patches per step and scales linearly to the preset's batch (a CPU
extrapolation, labelled so in the output); ``--patch P`` replaces the patch side (a dry run: the numbers
are then not the preset's). ``--assume-step-ms`` computes the hours from given step times without timing
anything. ``--json`` prints one JSON document instead of the table, ``--json-out FILE`` writes it too.

    python benchmarks/preset_cost.py --preset mstlf --device cuda                  # on the GPU box
    python benchmarks/preset_cost.py --preset all --device cuda --json > cost.json
    OMP_NUM_THREADS=2 python benchmarks/preset_cost.py --preset upl --max-batch 4  # CPU, scaled batch
    python benchmarks/preset_cost.py --preset redcnn_wgan --assume-step-ms 12 --assume-step-ms 'redcnn/mse_wgan_gp=60'
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import measure, time_steps
from bench_models import _sync

from analysis.scoring_plan import epochs_to_score
from benchmark.cells import Cell, expand_cells
from benchmark.config import LossConfig, MatrixConfig, load_matrix, preset_names
from benchmark.core.errors import MissingResource, UserError
from benchmark.core.precision import autocast, cpu_model, float32_matmul, to_channels_last
from benchmark.data import PairedSlices, open_dataset
from benchmark.evaluate import SLAB_CONTEXT, slab_plan
from benchmark.runner import Runner, configure_determinism
from benchmark.schemes import pairing as scheme_pairing
from benchmark.train import TrainData, steps_per_epoch
from losses import LOSSES
from models import spatial_dims

# The paper-scale (GPU) presets whose headers carry these numbers.
PAPER_SCALE = ("mstlf", "loss_vs_iqa", "redcnn_wgan", "upl", "upl3d", "full")


# ------------------------------------------------------------------------------------------------ counting


@dataclass
class Combination:
    """One distinct (architecture + kwargs, scheme + options, loss terms) of a matrix and its cells."""

    label: str  # "<architecture label>/<loss label>" of its first cell
    index: int  # its place in combinations()
    key: list[Any]  # [architecture name, its kwargs, scheme, scheme options, loss terms]
    architecture: str
    scheme: str
    loss: str
    cells: int
    step_ms: float | None = None
    timing: dict[str, Any] = field(default_factory=dict)  # how the step was timed (batch, scale, updates, notes)
    step_cpu_ms: float | None = None  # CPU device: process CPU time of a step (all threads)
    val_ms_per_slice: list[float] | None = None  # forward + validation loss per validation slice read: [wall, CPU]
    fwd_ms_per_slice: list[float] | None = None  # forward only per evaluation slice read: [wall, CPU]
    train_hours: float | None = None
    eval_hours: float | None = None
    train_core_hours: float | None = None  # CPU device: from the process CPU time
    eval_core_hours: float | None = None


def _key(cell: Cell) -> str:
    a = cell.architecture
    return json.dumps([a.name, a.kwargs, a.scheme, a.scheme_kwargs, [t.model_dump(mode="json") for t in cell.loss.terms]],
                      sort_keys=True)  # fmt: skip


def combinations(cells: list[Cell]) -> dict[str, list[Cell]]:
    """The cells grouped by what sets their step time (doses and seeds do not; labels and warm starts do not)."""
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(_key(cell), []).append(cell)
    return groups


def split_sizes(matrix: MatrixConfig) -> dict[str, Any] | None:
    """Slices per split, the slices of a volume and the image side, from the dataset's own split, without
    building it: ``{"train": n, "val": n, "test": n, "volume": slices per patient, "image": side}`` for ``synth``;
    None for a dataset whose sizes are only known once it is on disk."""
    dataset = open_dataset(matrix.dataset.kind, matrix.dataset.options)
    if not hasattr(dataset, "split_patients"):
        return None
    sizes: dict[str, Any] = {k: len(v) * dataset.n_slices for k, v in dataset.split_patients().items()}
    return {**sizes, "volume": dataset.n_slices, "image": dataset.image_size}


@dataclass
class Count:
    name: str
    source: str
    cells: int
    epochs: int
    steps_per_epoch: int
    steps_per_cell: int
    total_steps: int
    batch_size: int
    patch_size: Any
    train_slices: int | None
    val_reads_per_epoch: int | None  # validation slices read per epoch (3-D: with the slabs' context)
    eval_reads_per_scoring: int | None  # evaluation slices read per scored epoch
    scored_epochs: int
    combinations: list[Combination]
    notes: list[str] = field(default_factory=list)
    train_hours: float | None = None
    eval_hours: float | None = None
    train_core_hours: float | None = None
    eval_core_hours: float | None = None


def _reads(n: int, volume: int, *, dims: int, chunk: int, limit: int | None) -> int:
    """Slices a pass over ``n`` stacked slices reads: the first ``limit`` (2-D), or every slab's slices with
    their context (3-D, :func:`benchmark.evaluate.slab_plan` over volumes of ``volume`` slices)."""
    if dims == 2:
        return n if limit is None else min(n, limit)
    volumes = [slice(i, min(i + volume, n)) for i in range(0, n, volume)]
    return sum(r.stop - r.start for r, _ in slab_plan(volumes, chunk=chunk, limit=limit))


def count(spec: str, *, train_slices: int | None = None) -> Count:
    """Cells and optimizer steps of the matrix ``spec`` (a preset name or a path), as the runner counts them."""
    matrix = load_matrix(spec)
    cells = expand_cells(matrix)
    tr = matrix.training
    sizes = split_sizes(matrix)
    n_train = train_slices if train_slices is not None else (sizes or {}).get("train")
    notes = []
    if tr.patches_per_epoch is None and n_train is None:
        raise UserError("training.patches_per_epoch is unset and the dataset's training slices are not known "
                        "without the data: give --train-slices N", field=spec)  # fmt: skip
    spe = steps_per_epoch(tr, n_train or 0)
    if tr.early_stopping.enabled:
        notes.append("early stopping is on: the steps are an upper bound")
    kept = [e for e in range(1, tr.epochs + 1) if matrix.checkpoints.keeps(e, tr.epochs)]
    scored = len(epochs_to_score(kept, matrix.evaluation.every))
    dims = 3 if tr.patch_dims == 3 else 2
    val_reads = eval_reads = None
    if sizes is not None:
        val_reads = _reads(sizes["val"], sizes["volume"], dims=dims, chunk=tr.val_batch_size, limit=tr.val_max_images)
        ev = matrix.evaluation
        eval_reads = _reads(sizes[ev.split], sizes["volume"], dims=dims, chunk=ev.batch_size, limit=ev.max_images)
        if ev.max_images is not None and dims == 2:
            notes.append(f"evaluation.max_images {ev.max_images} (evenly spaced)")
    combos = [Combination(label=f"{g[0].architecture.label}/{g[0].loss.label}", index=i, key=json.loads(k),
                          architecture=g[0].architecture.name, scheme=g[0].architecture.scheme, loss=g[0].loss.label,
                          cells=len(g))
              for i, (k, g) in enumerate(combinations(cells).items())]  # fmt: skip
    return Count(name=matrix.name, source=spec, cells=len(cells), epochs=tr.epochs, steps_per_epoch=spe,
                 steps_per_cell=tr.epochs * spe, total_steps=len(cells) * tr.epochs * spe, batch_size=tr.batch_size,
                 patch_size=tr.patch_size, train_slices=n_train, val_reads_per_epoch=val_reads,
                 eval_reads_per_scoring=eval_reads, scored_epochs=scored, combinations=combos, notes=notes)  # fmt: skip


def _total(values: list[float | None]) -> float | None:
    """The sum, or None when any is missing."""
    return None if not values or any(v is None for v in values) else sum(v for v in values if v is not None)


def estimate_hours(c: Count) -> None:
    """Fill in each combination's and the preset's training and inference hours from the step times
    (hours = cells x steps per cell x step time; inference = cells x (epochs x validation slices read x
    validation ms per slice + scored epochs x evaluation slices read x forward ms per slice)); on the CPU
    also from the process CPU time (core-hours)."""
    for combo in c.combinations:
        if combo.step_ms is not None:
            combo.train_hours = combo.cells * c.steps_per_cell * combo.step_ms / 3.6e6
        if combo.step_cpu_ms is not None:
            combo.train_core_hours = combo.cells * c.steps_per_cell * combo.step_cpu_ms / 3.6e6
        if combo.val_ms_per_slice is not None and combo.fwd_ms_per_slice is not None and c.val_reads_per_epoch is not None:
            assert c.eval_reads_per_scoring is not None
            wall, cpu = ((c.epochs * c.val_reads_per_epoch * v + c.scored_epochs * c.eval_reads_per_scoring * f) * combo.cells / 3.6e6
                         for v, f in zip(combo.val_ms_per_slice, combo.fwd_ms_per_slice, strict=True))  # fmt: skip
            combo.eval_hours = wall
            combo.eval_core_hours = cpu if combo.step_cpu_ms is not None else None
    c.train_hours = _total([x.train_hours for x in c.combinations])
    c.eval_hours = _total([x.eval_hours for x in c.combinations])
    c.train_core_hours = _total([x.train_core_hours for x in c.combinations])
    c.eval_core_hours = _total([x.eval_core_hours for x in c.combinations])


def parse_assumed(values: list[str], labels: list[str]) -> dict[str, float]:
    """``--assume-step-ms`` values (``MS`` for every combination, or ``PATTERN=MS`` with an fnmatch pattern
    on ``<architecture label>/<loss label>``; later ones win) → a step time per label."""
    out: dict[str, float] = {}
    for value in values:
        pattern, _, ms = value.rpartition("=")
        try:
            t = float(ms)
        except ValueError:
            raise UserError(f"{value!r}: give MS or PATTERN=MS, e.g. 'cyclegan/*=250'", field="--assume-step-ms") from None
        hits = [lb for lb in labels if not pattern or fnmatch.fnmatchcase(lb, pattern)]
        if not hits:
            raise UserError(f"{pattern!r} matches no combination ({', '.join(labels)})", field="--assume-step-ms")
        out.update(dict.fromkeys(hits, t))
    return out


# ------------------------------------------------------------------------------------------------- timing


def _random_slices(n_patients: int, per_patient: int, side: int, seed: int = 0) -> PairedSlices:
    """Random HU slices (noisy input, cleaner target) of ``n_patients`` contiguous volumes: what the sampler needs."""
    rng = np.random.default_rng(seed)
    target = (40 + 200 * rng.standard_normal((n_patients * per_patient, side, side))).astype(np.float32)
    inputs = (target + 60 * rng.standard_normal(target.shape)).astype(np.float32)
    patients = np.repeat([f"p{i}" for i in range(n_patients)], per_patient)
    ids = np.array([f"{p}/{i % per_patient}" for i, p in enumerate(patients)])
    return PairedSlices(inputs, target, patients, ids, condition="random", split="train",
                        positions_mm=np.tile(np.arange(per_patient) * 3.0, n_patients))  # fmt: skip


def _with_random_backbones(cell: Cell) -> Cell:
    """The cell with every term that needs an ImageNet weights file on a random backbone (same network, same cost)."""
    terms = [t.model_copy(update={"kwargs": {**t.kwargs, "backbone": "random"}}) if LOSSES[t.name].needs_weights else t
             for t in cell.loss.terms]  # fmt: skip
    loss = LossConfig.model_validate({"label": cell.loss.label, "terms": [t.model_dump() for t in terms]})
    return Cell(loss, cell.architecture, cell.dose, cell.seed)


def _count_updates(scheme: Any) -> list[int]:
    """A counter of optimizer updates over all of the scheme's optimizers (post-step hooks)."""
    counter = [0]
    for opt in scheme.optimizers.values():
        opt.register_step_post_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    return counter


def time_combination(args: dict[str, Any]) -> dict[str, Any]:
    """Time one combination (``args["combo"]``, its index in :func:`combinations`) of ``args["matrix"]``: one
    training step and, unless ``args["eval"]`` is false, one validation / inference batch of whole slices."""
    if args.get("threads"):
        torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    matrix = load_matrix(args["matrix"])
    tr = matrix.training
    cell = list(combinations(expand_cells(matrix)).values())[args["combo"]][0]
    notes = []
    timed_batch = min(tr.batch_size, args.get("max_batch") or tr.batch_size)
    patch: Any = tr.patch_size
    if args.get("patch"):
        patch = [tr.patch_size[0], args["patch"], args["patch"]] if isinstance(tr.patch_size, list) else args["patch"]
        notes.append(f"patch override {args['patch']}: not the preset's step")
    # two full batches an epoch: the timed batch is a full one; the schedule's length does not change a step's cost
    training = tr.model_copy(update={"batch_size": timed_batch, "patch_size": patch, "patches_per_epoch": 2 * timed_batch})
    matrix = matrix.model_copy(update={"training": training})
    configure_determinism(device, matrix.deterministic)  # as the runner's process set-up does
    if matrix.reproducibility.kernels == "portable":
        notes.append("timed with native kernels (the matrix asks for portable ones)")
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(matrix, Path(tmp), quiet=True, device=device)
        sizes = split_sizes(matrix) or {}
        try:
            state = runner.build(cell, 2 * timed_batch)
        except MissingResource:
            cell = _with_random_backbones(cell)
            state = runner.build(cell, 2 * timed_batch)
            notes.append("ImageNet backbone missing here: timed on the same network with random weights")
    scheme = state.scheme
    settings = runner.settings  # what train_epoch hands the scheme: precision, channels-last, clipping, deferral
    model = state.model
    dims = spatial_dims(model)
    side = patch[1] if isinstance(patch, list) else (patch or sizes.get("image", 512))
    slices = _random_slices(4, max(patch[0] if isinstance(patch, list) else 1, 4), side)
    data = TrainData(slices, training, dims, scheme_pairing(cell.architecture.scheme, training.pairing), device=device)
    gen = torch.Generator().manual_seed(0)
    updates = _count_updates(scheme)

    def step() -> None:
        x, y = data.batch(0, gen)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if settings.channels_last:
            x, y = to_channels_last(x), to_channels_last(y)
        with autocast(settings.precision, device.type):
            scheme.step(x, y, settings)
        if scheme.per_step_schedule:
            scheme.step_schedules()

    scheme.train()
    with float32_matmul(settings.precision):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args["warmup"]):
            step()
        _sync(device)
        cpu0 = time.process_time()  # CPU time of every thread of this process: what a shared host's load leaves alone
        times, peak_mib = time_steps(step, warmup=0, repeats=args["repeats"], sync=lambda: _sync(device))
        cpu_ms = 1000 * (time.process_time() - cpu0) / args["repeats"]
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    measured = 1000 * statistics.median(times)
    scale = tr.batch_size / timed_batch
    out: dict[str, Any] = {
        "step_ms": measured * scale, "measured_ms": measured, "timed_batch": timed_batch, "scale": scale,
        "step_cpu_ms": cpu_ms * scale if device.type == "cpu" else None, "threads": torch.get_num_threads(),
        "updates_per_step": updates[0] / (args["warmup"] + args["repeats"]), "peak_mib": peak_mib,
        "patch": patch, "notes": notes, "cell": cell.cell_id,
    }  # fmt: skip
    if scale != 1:
        notes.append(f"timed at batch {timed_batch}, scaled x{scale:g} to batch {tr.batch_size} (linear extrapolation)")
    if args.get("eval", "all") != "none" and sizes:
        out.update(_time_inference(state, tr, dims, sizes, device, args.get("eval_batch") or args.get("max_batch"),
                                   forward=args.get("eval", "all") == "all"))  # fmt: skip
    return out


def _timed(fn: Any, device: torch.device) -> tuple[float, float]:
    """Wall and process CPU milliseconds of one call of ``fn`` after one untimed call."""
    fn()
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return 1000 * (time.perf_counter() - t0), 1000 * (time.process_time() - c0)


@torch.no_grad()
def _time_inference(state: Any, tr: Any, dims: int, sizes: dict[str, Any], device: torch.device,
                    max_batch: int | None, *, forward: bool = True) -> dict[str, Any]:  # fmt: skip
    """Per slice read, on one validation batch of whole slices (2-D: ``val_batch_size`` slices, at most
    ``max_batch``; 3-D: one slab of ``val_batch_size`` + 2 x context slices of a volume, at most
    ``max_batch`` but at least 4): the scheme's validation terms (on the batch itself: their cost does not depend on the
    values) and, with ``forward``, the generator's forward pass (the same for every loss of an architecture)."""
    side = sizes["image"]
    if dims == 2:
        n = min(tr.val_batch_size, max_batch or tr.val_batch_size)
        shape: tuple[int, ...] = (n, 1, side, side)
    else:
        n = min(tr.val_batch_size + 2 * SLAB_CONTEXT, sizes["volume"], max(max_batch or 10**9, 4))
        shape = (1, 1, n, side, side)
    gen = torch.Generator().manual_seed(2)
    y = (0.25 + 0.05 * torch.randn(shape, generator=gen)).to(device)
    x = y + 0.02 * torch.randn(shape, generator=gen).to(device)
    state.scheme.eval()
    wall, cpu = _timed(lambda: state.scheme.validation_terms(x, y), device)
    out: dict[str, Any] = {"terms_ms_per_slice": [wall / n, cpu / n], "eval_shape": list(shape)}
    if forward:
        wall, cpu = _timed(lambda: state.model(x), device)
        out["fwd_ms_per_slice"] = [wall / n, cpu / n]
    return out


def _worker(name: str, args: dict[str, Any], queue: Any) -> None:
    """:func:`time_combination` in a spawned process (``_timing.measure``); errors are reported, not raised."""
    try:
        queue.put({"name": name, **time_combination(args)})
    except Exception as exc:  # report and go on with the next combination
        queue.put({"name": name, "error": f"{type(exc).__name__}: {exc}"})


def measure_preset(c: Count, settings: dict[str, Any], *, log: Any = None) -> None:
    """Time every combination of ``c`` (each in its own process) and fill in the step and inference times;
    the forward pass of whole slices is timed once per architecture (with its first combination)."""
    forward: dict[str, list[float]] = {}  # architecture key -> forward [wall, CPU] ms per slice
    for combo in c.combinations:
        arch = json.dumps(combo.key[:2])
        ev = "none" if not settings.get("eval", True) else "terms" if arch in forward else "all"
        r = measure(_worker, combo.label, {**settings, "matrix": c.source, "combo": combo.index, "eval": ev})
        if "error" in r:
            combo.timing = {"error": r["error"]}
        else:
            combo.step_ms = r.pop("step_ms")
            combo.step_cpu_ms = r.pop("step_cpu_ms", None)
            if "fwd_ms_per_slice" in r:
                forward[arch] = r.pop("fwd_ms_per_slice")
            terms = r.pop("terms_ms_per_slice", None)
            if terms is not None and arch in forward:
                combo.fwd_ms_per_slice = forward[arch]
                combo.val_ms_per_slice = [f + t for f, t in zip(forward[arch], terms, strict=True)]
            combo.timing = r
        if log is not None:
            log(combo)


# ------------------------------------------------------------------------------------------------- output


def device_name(device: str) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})"
    return f"{dev.type}: {cpu_model()}, {torch.get_num_threads()} threads"


def _h(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}" if v >= 10 else f"{v:.2f}"


def combo_line(combo: Combination) -> str:
    t = combo.timing
    if "error" in t:
        return f"  {combo.label:<34} {combo.cells:>5}  failed: {t['error']}"
    how = f" (b{t['timed_batch']} x{t['scale']:g})" if t.get("scale", 1) != 1 else ""
    upd = f"{t['updates_per_step']:g}" if "updates_per_step" in t else "-"
    step = "-" if combo.step_ms is None else f"{combo.step_ms:,.1f}"
    cpu = "" if combo.step_cpu_ms is None else f" {combo.step_cpu_ms:>12,.1f}"
    core = "" if combo.train_core_hours is None else f" {_h(combo.train_core_hours):>9}"
    return (f"  {combo.label:<34} {combo.cells:>5} {step:>12}{cpu} {upd:>4} {_h(combo.train_hours):>9}{core}"
            f" {_h(combo.eval_hours):>9}{how}")  # fmt: skip


def report_lines(c: Count, unit: str) -> list[str]:
    patch = "x".join(map(str, c.patch_size)) if isinstance(c.patch_size, list) else f"{c.patch_size}²"
    cpu = any(x.step_cpu_ms is not None for x in c.combinations)
    lines = [
        f"{c.name} ({c.source}): {c.cells} cells; {c.epochs} epochs x {c.steps_per_epoch} steps "
        f"(batch {c.batch_size}, patch {patch}) = {c.steps_per_cell:,} steps per cell; {c.total_steps:,} steps in all",
        f"  {'combination (architecture/loss)':<34} {'cells':>5} {'step ms':>12}" + (f" {'step CPU ms':>12}" if cpu else "")
        + f" {'upd':>4} {'train h':>9}" + (f" {'core-h':>9}" if cpu else "") + f" {'infer. h':>9}",
    ]  # fmt: skip
    lines += [combo_line(x) for x in c.combinations]
    lines.append(f"  training: {_h(c.train_hours)} {unit}-hours"
                 + (f" (wall clock at the measured speed); {_h(c.train_core_hours)} core-hours of CPU time" if cpu else ""))
    if c.eval_hours is not None:
        lines.append(f"  inference (validation every epoch on {c.val_reads_per_epoch} slices read, evaluation split at "
                     f"{c.scored_epochs} scored epochs on {c.eval_reads_per_scoring}): {_h(c.eval_hours)} {unit}-hours"
                     + (f", {_h(c.eval_core_hours)} core-hours" if cpu else "") + "; metrics excluded")  # fmt: skip
        lines.append(f"  total: {_h((c.train_hours or 0) + c.eval_hours)} {unit}-hours"
                     + (f", {_h((c.train_core_hours or 0) + (c.eval_core_hours or 0))} core-hours" if cpu else ""))
    else:
        lines.append("  inference and metrics: excluded")
    lines += [f"  note: {n}" for n in c.notes]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", action="append", required=True,
                    help="preset name or matrix path (repeatable); 'all': every shipped preset; 'paper': the GPU presets")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-batch", type=int, default=None, help="time at most N patches per step, scaled linearly")
    ap.add_argument("--eval-batch", type=int, default=None,
                    help="slices per timed inference batch (default: the matrix's val_batch_size, at most --max-batch)")
    ap.add_argument("--patch", type=int, default=None, help="patch side override (a dry run: not the preset's step)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per timing process (default: torch's)")
    ap.add_argument("--no-eval", action="store_true", help="skip the validation/inference timing")
    ap.add_argument("--only", default="", help="fnmatch pattern on <architecture>/<loss> labels: time only these")
    ap.add_argument("--skip", default="", help="fnmatch pattern on <architecture>/<loss> labels: do not time these")
    ap.add_argument("--train-slices", type=int, default=None, help="training slices when the dataset cannot tell")
    ap.add_argument("--assume-step-ms", action="append", default=[], metavar="[PATTERN=]MS",
                    help="step times instead of timing: MS for every combination, or PATTERN=MS (repeatable)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the JSON to this file")
    args = ap.parse_args(argv)
    specs: list[str] = []
    for p in args.preset:
        specs += ([n.removesuffix(".yaml") for n in preset_names()] if p == "all"
                  else list(PAPER_SCALE) if p == "paper" else [p])  # fmt: skip
    assumed = bool(args.assume_step_ms)
    unit = "device" if assumed else "GPU" if args.device.startswith("cuda") else args.device.upper()
    header: dict[str, Any] = {"device": "none (assumed step times)" if assumed else device_name(args.device),
                              "torch": torch.__version__, "cuda": torch.version.cuda}  # fmt: skip
    if not assumed:
        header["load_average"] = list(os.getloadavg())  # a shared CPU's load inflates its step times
    if not args.json:
        print(f"device {header['device']}; torch {header['torch']}"
              + (f"; load average {header['load_average'][0]:.1f} at the start" if "load_average" in header else ""))
        if not assumed:
            print(f"step: median of {args.repeats} after {args.warmup} warm-up, each combination in its own process")
    results = []
    settings = {"device": args.device, "threads": args.threads, "max_batch": args.max_batch, "patch": args.patch,
                "repeats": args.repeats, "warmup": args.warmup, "eval": not args.no_eval,
                "eval_batch": args.eval_batch}  # fmt: skip
    for spec in specs:
        try:
            c = count(spec, train_slices=args.train_slices)
        except UserError as exc:
            print(f"{spec}: {exc}", file=sys.stderr)
            return 2
        if assumed:
            times = parse_assumed(args.assume_step_ms, [x.label for x in c.combinations])
            missing = [x.label for x in c.combinations if x.label not in times]
            if missing:
                print(f"{spec}: no --assume-step-ms for {', '.join(missing)}", file=sys.stderr)
                return 2
            for x in c.combinations:
                x.step_ms, x.timing = times[x.label], {"assumed": True}
            c.notes.append("step times assumed (--assume-step-ms); inference not estimated")
        else:
            if args.only or args.skip:
                left = [x for x in c.combinations if (not args.only or fnmatch.fnmatchcase(x.label, args.only))
                        and not (args.skip and fnmatch.fnmatchcase(x.label, args.skip))]  # fmt: skip
                c.notes.append(f"timed {len(left)} of {len(c.combinations)} combinations ({sum(x.cells for x in left)} of "
                               f"{c.cells} cells; --only {args.only!r} --skip {args.skip!r}): the hours cover those cells only")
                c.combinations = left
            if not args.json:
                print(f"\n{c.name}: timing {len(c.combinations)} combination(s) ...", flush=True)
            measure_preset(c, settings, log=None if args.json else lambda x: print(combo_line(x), flush=True))
            c.notes.append(f"1-min load average {os.getloadavg()[0]:.1f} after timing, on {os.cpu_count()} CPU(s)")
        estimate_hours(c)
        results.append(c)
        if not args.json:
            print("\n".join(["", *report_lines(c, unit)]), flush=True)
    doc = json.dumps({**header, "settings": None if assumed else settings, "unit": unit,
                      "presets": [asdict(c) for c in results]}, indent=1, default=str)  # fmt: skip
    if args.json:
        print(doc)
    if args.json_out is not None:
        args.json_out.write_text(doc + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
