"""GPU-box benchmark (issue #12): one prepared script, every ratio measured in the same run.

    python benchmarks/bench_gpu.py --out bench_gpu.json                 # one GPU (H200: ~7 min, < 8)
    python benchmarks/bench_gpu.py --device cpu --quick --out b.json    # tiny sizes, CPU, ~1-2 min (tests)

Prints the device, torch / CUDA / cuDNN versions, then four sections; each has a time budget (a share of
``--budget`` seconds), is guarded (a failure is reported, the next section still runs) and lands in the
JSON (``--out``) with all its numbers:

1. ``steps``: steps/s of every 2-D architecture (``models.ARCHITECTURES``; kwargs of full.yaml's
   entries, else the registry defaults) at fp32, tf32 and bf16 (``training.precision``), batch 16 of
   64² patches, through the runner's own epoch loop (:func:`benchmark.train.train_epoch`: the runner's
   ``TrainData`` sampling, the supervised scheme's step on an MSE ``CompositeLoss``, the precision's
   TF32 switches and bf16 autocast). The three precisions run round by round on one model, so drifts
   cancel; printed: a table and the tf32/fp32 and bf16/fp32 speed ratios (steps/s over fp32's).
2. ``overhead``: the runner's epoch loop vs a bare PyTorch loop (sample patches, forward, MSE,
   backward, Adam) on the same device, same initial weights, fp32, in interleaved blocks of steps
   (the method of ``benchmarks/bench_runner.py``, made device-aware: that script is CPU-only and has
   no importable measurement); plus validation and checkpoint time per epoch. Target ratio <= 1.05.
3. ``cells``: a matrix of 8 small cells (narrow DnCNN, tiny synthetic data, 2 epochs) trained by
   ``ldct-bench run --jobs N --devices 0`` for N = 1, 2, 4, 8 (``--quick``: 1, 2), each into a fresh
   folder: cells/hour end to end (process start-up included) and over the training span, the speed-up
   over one worker (goal >= 4x from packing), and whether every checkpoint of the jobs-N runs is
   byte-identical to jobs-1 (``deterministic: true``, fp32). On the CPU the float reductions depend on
   the threads per process, so there the reference is a ``--jobs 1`` run with the pool workers'
   thread count (``OMP_NUM_THREADS``). On a GPU a cell's length is calibrated from a measured step so
   the section fits its budget.
4. ``eval``: checkpoints/s of full.yaml's metric list on 512² images (``bench_metrics.synthetic``:
   references and one prediction per checkpoint, on the device), scored like the analysis with one
   reference cache per cell; metrics whose weights are missing (lpips, dists) are skipped and listed.

Everything runs on the simulated ``synth`` data at size ``tiny`` (96² slices: patches are 64²), cached
under ``$LDCT_BENCH_CACHE`` as usual. Exit status 0 when every section ran, 1 when one failed (no
pass/fail thresholds: the ratios are printed with their targets). Sizes: ``--steps-batch``,
``--patch``, ``--eval-images``, ``--eval-size``, ``--eval-checkpoints``; ``--sections`` runs a subset.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_metrics import synthetic
from bench_runner import bare_step, epoch_extras

from benchmark.config import TrainingConfig, load_matrix
from benchmark.core.device import resolve_device
from benchmark.core.precision import PRECISIONS, environment
from benchmark.data import open_dataset
from benchmark.layout import DONE, TIMING, RunLayout
from benchmark.runner import configure_determinism, step_settings
from benchmark.step_settings import StepSettings
from benchmark.train import TrainData, build_state, seed_everything, train_epoch
from benchmark.workers import worker_threads
from losses import build_loss
from models import ARCHITECTURES, build_model

SECTIONS = ("steps", "overhead", "cells", "eval")
SHARES = {"steps": 0.40, "overhead": 0.08, "cells": 0.36, "eval": 0.16}  # of --budget
DATA = {"size": "tiny"}
DOSE = "25_360"
# --quick on a CPU: the two transformer hourglasses narrowed to a few blocks (seconds per step otherwise), and
# the three GAN generators (11-31 M parameters at their defaults) narrowed to 16 channels, as in the CPU presets
QUICK_KWARGS = {
    "restormer": {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1},
    "denomamba": {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1},
    "unet": {"depth": 3, "channels": 16},
    "resnet_gen": {"channels": 16, "blocks": 3},
    "unit": {"channels": 16, "n_res": 2},
}
CELL_ARCH = {"name": "dncnn", "label": "dncnn-d8c32", "kwargs": {"depth": 8, "channels": 32, "batch_norm": False}}
QUICK_CELL_ARCH = {"name": "dncnn", "label": "dncnn-d4c8", "kwargs": {"depth": 4, "channels": 8, "batch_norm": False}}
N_CELLS = 8  # losses x doses x seeds = 2 x 2 x 2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _determinism(device: torch.device, on: bool) -> None:
    """The runner's set-up for ``deterministic: on``; off: PyTorch's defaults (as the scoring runs)."""
    if on:
        configure_determinism(device, True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = False
        torch.use_deterministic_algorithms(False)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _geomean(values: list[float]) -> float | None:
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else None


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def training_config(base: TrainingConfig, **update: Any) -> TrainingConfig:
    """``base`` (full.yaml's training block) with ``update`` applied, validated."""
    return TrainingConfig.model_validate({**base.model_dump(), **update})


def timed_epoch(state: Any, data: TrainData, device: torch.device, settings: StepSettings) -> float:
    """Seconds of one :func:`train_epoch` (``data.steps`` runner steps under ``settings``), device work included."""
    _sync(device)
    t0 = time.perf_counter()
    train_epoch(state, data, device, settings)
    _sync(device)
    return time.perf_counter() - t0


# --- 1. steps/s per architecture and precision -----------------------------------------------------


def measure_architecture(name: str, kwargs: dict[str, Any], base: TrainingConfig, slices: Any, device: torch.device,
                         args: argparse.Namespace, deadline: float) -> dict[str, Any]:  # fmt: skip
    """Steps/s of ``name`` at each precision: warm-up steps, then rounds of ``chunk``-step epochs, the
    precisions interleaved (their order reversed every round) on one model, until ``deadline``."""
    out: dict[str, Any] = {"kwargs": kwargs, "errors": {}}
    seed_everything(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = build_model(name, kwargs).to(device)
    out["params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    loss = build_loss([("mse", 1.0, {})]).to(device)
    one = {p: training_config(base, precision=p, patches_per_epoch=base.batch_size) for p in PRECISIONS}
    settings = {p: step_settings(one[p]) for p in PRECISIONS}  # the runner's, per precision
    state = build_state(model, loss, one["fp32"], torch.Generator().manual_seed(0), 1)
    state.scheme.to(device, settings["fp32"])
    data1 = TrainData(slices, one["fp32"], 2, "paired", device=device)
    step_s: dict[str, float] = {}
    for p in PRECISIONS:  # warm-up; a precision that fails is reported and left out
        try:
            for _ in range(args.warmup):
                step_s[p] = timed_epoch(state, data1, device, settings[p])
        except Exception as exc:
            out["errors"][p] = f"{type(exc).__name__}: {exc}"
            step_s.pop(p, None)
    ok = [p for p in PRECISIONS if p in step_s]
    chunk = 1 if args.quick else max(1, min(args.max_chunk, round(args.chunk_s / max(step_s.values(), default=1.0))))
    cfg = {p: training_config(base, precision=p, patches_per_epoch=chunk * base.batch_size) for p in ok}
    data = TrainData(slices, cfg[ok[0]], 2, "paired", device=device) if ok else None
    times: dict[str, list[float]] = {p: [] for p in ok}
    rounds = 0
    while ok and data is not None and rounds < args.max_rounds and (rounds < 1 or time.perf_counter() < deadline):
        for p in ok if rounds % 2 == 0 else list(reversed(ok)):
            times[p].append(timed_epoch(state, data, device, settings[p]))
        rounds += 1
    out["steps_per_s"] = {p: chunk / statistics.median(times[p]) if times.get(p) else None for p in PRECISIONS}
    out["chunk_steps"], out["rounds"] = chunk, rounds
    out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    fp32 = out["steps_per_s"]["fp32"]
    out["ratios"] = {f"{p}/fp32": _ratio(out["steps_per_s"][p], fp32) for p in PRECISIONS if p != "fp32"}
    del state, model, loss, data, data1
    return out


def section_steps(ctx: dict[str, Any], deadline: float) -> dict[str, Any]:
    args, device, full = ctx["args"], ctx["device"], ctx["full"]
    base = training_config(full.training, batch_size=args.steps_batch, patch_size=args.patch)
    slices = ctx["dataset"].load("train", DOSE)
    entries = {a.name: dict(a.kwargs) for a in full.architectures}
    names = [n for n, info in ARCHITECTURES.items() if info.dims == (2,)]
    if args.archs:
        names = [n for n in names if n in args.archs.split(",")]
    _determinism(device, full.deterministic)
    print(f"batch {base.batch_size}, {base.patch_size}² patches, MSE, full.yaml training (augment "
          f"{str(base.augment).lower()}, deterministic {str(full.deterministic).lower()}); runner epochs of a few "
          f"steps, precisions interleaved")  # fmt: skip
    print(f"{'architecture':<12} {'params':>8} " + " ".join(f"{p + ' st/s':>10}" for p in PRECISIONS)
          + f" {'tf32/fp32':>9} {'bf16/fp32':>9} {'peak MiB':>9}")  # fmt: skip
    results: dict[str, Any] = {}
    for i, name in enumerate(names):
        kwargs = {**entries.get(name, {}), **(QUICK_KWARGS.get(name, {}) if args.quick else {})}
        arch_deadline = time.perf_counter() + max(0.0, deadline - time.perf_counter()) / (len(names) - i)
        try:
            r = measure_architecture(name, kwargs, base, slices, device, args, arch_deadline)
        except Exception as exc:
            r = {"kwargs": kwargs, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            _free(device)
        results[name] = r
        if "error" in r:
            print(f"{name:<12} failed: {r['error']}", flush=True)
            continue
        sps, rat = r["steps_per_s"], r["ratios"]
        print(f"{name:<12} {r['params'] / 1e6:7.2f}M " + " ".join(f"{_fmt(sps[p], '.2f'):>10}" for p in PRECISIONS)
              + f" {_fmt(rat['tf32/fp32']):>9} {_fmt(rat['bf16/fp32']):>9} {_fmt(r['peak_mib'], '.0f'):>9}",
              flush=True)  # fmt: skip
        for p, err in r["errors"].items():
            print(f"  {name} {p} failed: {err}")
    ratios = {}
    for key in ("tf32/fp32", "bf16/fp32"):
        vals = [r["ratios"][key] for r in results.values() if "ratios" in r and r["ratios"][key] is not None]
        ratios[key] = _geomean(vals)
    print(f"speed over fp32, geometric mean over architectures: tf32 {_fmt(ratios['tf32/fp32'])}x, "
          f"bf16 {_fmt(ratios['bf16/fp32'])}x")
    failed = [n for n, r in results.items() if "error" in r or r["errors"]]
    return {"status": "partial" if failed else "ok", "failed": failed, "batch": base.batch_size,
            "patch": base.patch_size, "architectures": results, "ratios": ratios}  # fmt: skip


# --- 2. runner overhead ----------------------------------------------------------------------------


def section_overhead(ctx: dict[str, Any], deadline: float) -> dict[str, Any]:
    args, device, full = ctx["args"], ctx["device"], ctx["full"]
    block = 2 if args.quick else 20
    tr = training_config(full.training, batch_size=args.steps_batch, patch_size=args.patch, augment=False,
                         patches_per_epoch=block * args.steps_batch, precision="fp32")  # fmt: skip
    train, val = ctx["dataset"].load("train", DOSE), ctx["dataset"].load("val", DOSE)
    _determinism(device, full.deterministic)
    gen = seed_everything(0)
    model = build_model(args.overhead_arch).to(device)
    bare_model = build_model(args.overhead_arch).to(device)
    bare_model.load_state_dict(model.state_dict())  # the same initial weights
    state = build_state(model, build_loss([("mse", 1.0, {})]).to(device), tr, gen, 1)
    settings = step_settings(tr)
    state.scheme.to(device, settings)
    data = TrainData(train, tr, 2, "paired", device=device)
    bare_opt = torch.optim.Adam(bare_model.parameters(), lr=tr.optimizer.lr)
    bare_gen = torch.Generator().manual_seed(0)
    bare_model.train()
    patch = tr.patch_size
    assert isinstance(patch, int)

    def bare_block() -> float:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(block):
            bare_step(bare_model, bare_opt, data, tr.batch_size, patch, bare_gen, device)
        _sync(device)
        return time.perf_counter() - t0

    bare_block()  # warm-up
    timed_epoch(state, data, device, settings)
    bare_t: list[float] = []
    runner_t: list[float] = []
    rounds = 0
    while rounds < args.max_overhead_rounds and (rounds < 3 or time.perf_counter() < deadline):
        for side in (0, 1) if rounds % 2 == 0 else (1, 0):
            if side == 0:
                bare_t.append(bare_block())
            else:
                runner_t.append(timed_epoch(state, data, device, settings))
        rounds += 1
    t_val, t_ckpt = epoch_extras(state, val, device, tr.val_batch_size, tr.val_max_images)
    b, r = statistics.median(bare_t) / block, statistics.median(runner_t) / block
    epoch_steps = math.ceil((full.training.patches_per_epoch or 1) / full.training.batch_size)
    epoch_ratio = (epoch_steps * r + t_val + t_ckpt) / (epoch_steps * b)
    print(f"{args.overhead_arch}, batch {tr.batch_size}, {patch}² patches, fp32, {rounds} interleaved rounds of "
          f"{block} steps per side")  # fmt: skip
    print(f"bare PyTorch step  median {1000 * b:9.2f} ms")
    print(f"runner step        median {1000 * r:9.2f} ms   runner/bare {r / b:6.3f}  (target <= 1.05)")
    print(f"per-epoch extras: validation {t_val:.2f} s ({len(val)} tiny slices), checkpoint {t_ckpt:.2f} s; "
          f"full.yaml epoch of {epoch_steps} steps: ratio {epoch_ratio:.3f}")  # fmt: skip
    return {"status": "ok", "architecture": args.overhead_arch, "batch": tr.batch_size, "patch": patch,
            "block_steps": block, "rounds": rounds, "bare_step_ms": 1000 * b, "runner_step_ms": 1000 * r,
            "validation_s": t_val, "checkpoint_s": t_ckpt, "epoch_steps": epoch_steps,
            "ratios": {"runner/bare": r / b, "epoch runner/bare": epoch_ratio}}  # fmt: skip


# --- 3. cells per hour with --jobs N ---------------------------------------------------------------


def cell_matrix(args: argparse.Namespace, device: torch.device, steps: int) -> dict[str, Any]:
    batch, patch = (4, 32) if args.quick else (args.steps_batch, args.patch)
    return {
        "name": "bench-gpu-cells",
        "dataset": {"kind": "synth", "options": dict(DATA)},
        "losses": ["mse", "l1"],
        "architectures": [QUICK_CELL_ARCH if args.quick else CELL_ARCH],
        "doses": [DOSE, "10_180"],
        "seeds": [0, 1],
        "training": {"epochs": 2, "batch_size": batch, "patch_size": patch, "patches_per_epoch": steps * batch,
                     "val_max_images": 4, "precision": "fp32"},
        "device": "cpu" if device.type == "cpu" else str(device),
        "deterministic": True,
    }


def _ldct_bench() -> list[str]:
    exe = shutil.which("ldct-bench")
    return [exe] if exe else [sys.executable, "-c", "from benchmark.cli import main; main()"]


def run_pool(matrix: Path, out: Path, jobs: int, device: torch.device, env: dict[str, str], timeout: float,
             log: Path) -> dict[str, Any]:  # fmt: skip
    """``ldct-bench run --jobs N --devices D`` in its own process group; wall seconds and the exit code."""
    devices = "cpu" if device.type == "cpu" else str(device.index or 0)
    cmd = [*_ldct_bench(), "run", "--matrix", str(matrix), "--out", str(out), "--quiet", "--jobs", str(jobs),
           "--devices", devices]  # fmt: skip
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the run and its pool workers (our own process group)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            code = None
    return {"wall_s": time.perf_counter() - t0, "exit_code": code}


def _checkpoints(out: Path) -> dict[str, bytes]:
    layout = RunLayout(out)
    return {f"{c.cell_id}/{e}": p.read_bytes() for c in layout.cells() for e, p in layout.checkpoints(c.cell_id).items()}


def train_span(out: Path) -> float | None:
    """Seconds from the first cell's first epoch to the last cell's end: DONE markers' mtimes minus the
    cells' epoch seconds (``timing.csv``); no process start-up, dataset or model set-up."""
    layout = RunLayout(out)
    starts, ends = [], []
    for c in layout.cells():
        done = layout.marker(c.cell_id, DONE)
        timing = layout.cell_dir(c.cell_id) / TIMING
        if not done.is_file() or not timing.is_file():
            return None
        lines = timing.read_text().splitlines()[1:]
        seconds = sum(float(line.split(",")[-1]) for line in lines if line.strip())
        end = done.stat().st_mtime
        starts.append(end - seconds)
        ends.append(end)
    return max(ends) - min(starts) if ends else None


def section_cells(ctx: dict[str, Any], deadline: float) -> dict[str, Any]:
    args, device, tmp = ctx["args"], ctx["device"], ctx["tmp"]
    jobs_list = [int(j) for j in args.jobs.split(",")] if args.jobs else ([1, 2] if args.quick else [1, 2, 4, 8])
    if jobs_list[0] != 1:
        jobs_list = [1, *[j for j in jobs_list if j != 1]]
    for split in ("train", "val"):  # the dataset cache is built before any timed run
        for dose in (DOSE, "10_180"):
            ctx["dataset"].load(split, dose)
    calib: dict[str, Any] = {}
    if args.quick:
        steps = 2
    else:  # one cell ~ cell_s seconds of training at --jobs 1, from a measured runner step of the cell's network
        m = cell_matrix(args, device, 1)
        _determinism(device, True)
        arch = CELL_ARCH
        base = training_config(ctx["full"].training, batch_size=m["training"]["batch_size"],
                               patch_size=m["training"]["patch_size"])  # fmt: skip
        r = measure_architecture(arch["name"], arch["kwargs"], base, ctx["dataset"].load("train", DOSE), device,
                                 argparse.Namespace(**{**vars(args), "max_rounds": 3}), time.perf_counter() + 5)  # fmt: skip
        _free(device)
        step_s = 1.0 / r["steps_per_s"]["fp32"]
        work = sum(math.ceil(N_CELLS / j) for j in jobs_list) * 1.3  # cells in series, with a margin for sharing
        budget = max(0.0, deadline - time.perf_counter())
        cell_s = max(1.0, (0.85 * budget - len(jobs_list) * args.startup_s) / work)
        steps = max(4, min(5000, round(cell_s / 2 / step_s)))
        calib = {"step_ms": 1000 * step_s, "target_cell_s": cell_s}
        print(f"calibration: {arch['label']} runner step {1000 * step_s:.2f} ms -> {steps} steps per epoch "
              f"(~{cell_s:.1f} s per cell at --jobs 1)")  # fmt: skip
    matrix = cell_matrix(args, device, steps)
    mpath = tmp / "cells.yaml"
    mpath.write_text(yaml.safe_dump(matrix, sort_keys=False))
    env = dict(os.environ)
    ref_threads: dict[int, Path] = {}  # CPU: threads per process -> the --jobs 1 run at that count
    runs: dict[str, Any] = {}
    for jobs in jobs_list:
        left = deadline - time.perf_counter()
        if jobs != 1 and left <= 0 and not args.quick:  # --quick: fixed tiny work, every path runs (CPU tests)
            runs[str(jobs)] = {"skipped": "section budget spent"}
            print(f"--jobs {jobs}: skipped (section budget spent)")
            continue
        out = tmp / f"cells-jobs{jobs}"
        r = run_pool(mpath, out, jobs, device, env, 1.5 * max(left, 30.0) + 30, tmp / f"cells-jobs{jobs}.log")
        done = sum(1 for c in RunLayout(out, must_exist=False).cells() if c.status == "done") if out.exists() else 0
        r["cells_done"] = done
        if r["exit_code"] != 0 or done != N_CELLS:
            tail = (tmp / f"cells-jobs{jobs}.log").read_text()[-1500:]
            r["error"] = f"exit code {r['exit_code']}, {done}/{N_CELLS} cells done; log tail:\n{tail}"
            print(f"--jobs {jobs}: FAILED ({r['error']})")
            runs[str(jobs)] = r
            continue
        r["cells_per_hour"] = 3600 * N_CELLS / r["wall_s"]
        span = train_span(out)
        r["train_span_s"] = span
        r["train_span_cells_per_hour"] = 3600 * N_CELLS / span if span else None
        if jobs == 1:
            ref_threads[worker_threads(1) if device.type == "cpu" else 0] = out
        runs[str(jobs)] = r
        r["out"] = out
    base = runs.get("1", {})
    identical: dict[str, bool] = {}
    for key, r in runs.items():
        if key == "1" or "cells_per_hour" not in r:
            continue
        r["speedup"] = _ratio(r["cells_per_hour"], base.get("cells_per_hour"))
        r["train_span_speedup"] = _ratio(r["train_span_cells_per_hour"], base.get("train_span_cells_per_hour"))
        threads = worker_threads(int(key)) if device.type == "cpu" else 0
        if threads not in ref_threads:  # CPU: a --jobs 1 reference at the workers' threads per process
            out = tmp / f"cells-ref-threads{threads}"
            ref = run_pool(mpath, out, 1, device, {**env, "OMP_NUM_THREADS": str(threads)},
                           1.5 * max(deadline - time.perf_counter(), 30.0) + 30, tmp / f"cells-ref{threads}.log")  # fmt: skip
            if ref["exit_code"] != 0:
                r["identical_error"] = f"reference run (--jobs 1, {threads} threads) failed: exit code {ref['exit_code']}"
                identical[key] = False
                continue
            ref_threads[threads] = out
        a, b = _checkpoints(ref_threads[threads]), _checkpoints(r["out"])
        identical[key] = bool(a) and sorted(a) == sorted(b) and all(a[k] == b[k] for k in a)
        r["identical"] = identical[key]
        r["checkpoints_compared"] = len(a)
    print(f"{N_CELLS} cells ({matrix['architectures'][0]['label']}, {steps} steps x 2 epochs, batch "
          f"{matrix['training']['batch_size']}, {matrix['training']['patch_size']}² patches, fp32, deterministic) "
          f"on {'cpu' if device.type == 'cpu' else 'GPU ' + str(device.index or 0)}")  # fmt: skip
    print(f"{'jobs':>4} {'wall s':>8} {'cells/h':>9} {'speed-up':>9} {'span cells/h':>13} {'speed-up':>9} identical")
    for key, r in runs.items():
        if "cells_per_hour" not in r:
            continue
        ident = "(ref)" if key == "1" else str(r.get("identical")).lower()
        print(f"{key:>4} {r['wall_s']:8.1f} {r['cells_per_hour']:9.0f} {_fmt(r.get('speedup', 1.0 if key == '1' else None), '.2f'):>9} "
              f"{_fmt(r['train_span_cells_per_hour'], '.0f'):>13} "
              f"{_fmt(r.get('train_span_speedup', 1.0 if key == '1' else None), '.2f'):>9} {ident}")  # fmt: skip
    best = max((r["speedup"] for r in runs.values() if r.get("speedup") is not None), default=None)
    all_identical = bool(identical) and all(identical.values())
    print(f"best speed-up over --jobs 1: {_fmt(best, '.2f')}x (goal >= 4x from packing); "
          f"checkpoints identical to --jobs 1: {str(all_identical).lower()}")
    for r in runs.values():
        r.pop("out", None)
    failed = [k for k, r in runs.items() if "error" in r]
    return {"status": "partial" if failed or "1" not in runs or "cells_per_hour" not in base else "ok",
            "cells": N_CELLS, "steps_per_epoch": steps, "epochs": 2, "matrix": matrix, "calibration": calib,
            "runs": runs, "identical": all_identical, "identical_by_jobs": identical,
            "ratios": {f"jobs{k}/jobs1": r.get("speedup") for k, r in runs.items() if k != "1"},
            "best_speedup": best}  # fmt: skip


# --- 4. evaluation: checkpoints/s ------------------------------------------------------------------


def section_eval(ctx: dict[str, Any], deadline: float) -> dict[str, Any]:
    from analysis.metrics import compute_metrics, unavailable_metrics

    args, device, full = ctx["args"], ctx["device"], ctx["full"]
    _determinism(device, False)
    names = list(full.evaluation.metrics)
    skipped = unavailable_metrics(names)
    todo = [n for n in names if n not in skipped]
    ref_np, preds_np = synthetic(args.eval_images, args.eval_size, args.eval_checkpoints + 1)
    ref = torch.from_numpy(ref_np).to(device)
    preds = [torch.from_numpy(p).to(device) for p in preds_np]
    failed: dict[str, str] = {}
    for name in todo:  # warm-up on one image: scorer construction, first-call costs (not timed)
        try:
            compute_metrics([name], preds[-1][:1], ref[:1], device=device)
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
    todo = [n for n in todo if n not in failed]
    per_metric = dict.fromkeys(todo, 0.0)
    cache: dict = {}
    done = 0
    for c in range(args.eval_checkpoints):  # one cell's checkpoints against one reference cache
        if done and time.perf_counter() > deadline:
            break
        for name in todo:
            _sync(device)
            t0 = time.perf_counter()
            compute_metrics([name], preds[c], ref, device=device, ref_cache=cache)
            _sync(device)
            per_metric[name] += time.perf_counter() - t0
        done += 1
    total = sum(per_metric.values())
    cps = done / total if total > 0 else None
    print(f"{done} checkpoint(s) x {args.eval_images} images of {args.eval_size}², {len(todo)} metrics, one "
          f"reference cache (inference not included)")  # fmt: skip
    for name, s in per_metric.items():
        print(f"  {name:<10} {s / max(done, 1):8.3f} s/checkpoint  ({100 * s / total if total else 0:4.1f} %)")
    print(f"checkpoints/s: {_fmt(cps, '.3f')}  ({_fmt(cps and cps * args.eval_images, '.1f')} images/s)")
    if skipped:
        print("skipped (unavailable): " + ", ".join(skipped))
    for name, err in failed.items():
        print(f"  {name} failed: {err}")
    return {"status": "partial" if failed else "ok", "metrics": todo, "skipped": skipped, "failed": failed,
            "images": args.eval_images, "size": args.eval_size, "checkpoints": done,
            "seconds_per_checkpoint": {n: s / max(done, 1) for n, s in per_metric.items()},
            "checkpoints_per_s": cps, "images_per_s": cps * args.eval_images if cps else None}  # fmt: skip


# --- main ------------------------------------------------------------------------------------------


def run_section(name: str, fn: Callable[[dict[str, Any], float], dict[str, Any]], ctx: dict[str, Any],
                budget: float) -> dict[str, Any]:  # fmt: skip
    print(f"\n== {name} (budget {budget:.0f} s) ==", flush=True)
    t0 = time.perf_counter()
    try:
        res = fn(ctx, t0 + budget)
    except Exception as exc:
        traceback.print_exc()
        res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        print(f"{name}: FAILED: {res['error']}")
    finally:
        _free(ctx["device"])
    res["seconds"] = time.perf_counter() - t0
    res["budget_s"] = budget
    print(f"[{name}: {res['seconds']:.1f} s of {budget:.0f} s]", flush=True)
    return res


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench_gpu.json"), help="the JSON with every number")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a few steps, --jobs 1,2 (CPU tests)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the four sections together (default 390; --quick 90)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--archs", default="", help="steps: comma-separated 2-D architectures (default: all)")
    ap.add_argument("--steps-batch", type=int, default=None, help="batch of the steps/overhead sections (16; quick 2)")
    ap.add_argument("--patch", type=int, default=None, help="patch side (64; quick 32)")
    ap.add_argument("--jobs", default="", help="cells: comma-separated worker counts (1,2,4,8; quick 1,2)")
    ap.add_argument("--eval-images", type=int, default=None, help="images per checkpoint (16; quick 2)")
    ap.add_argument("--eval-size", type=int, default=None, help="image side (512; quick 192, NIQE's minimum)")
    ap.add_argument("--eval-checkpoints", type=int, default=None, help="checkpoints scored (4; quick 2)")
    ap.add_argument("--overhead-arch", default="dncnn")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of this process (default torch's)")
    ap.add_argument("--startup-s", type=float, default=10.0, help="cells: assumed start-up of one run, for sizing")
    args = ap.parse_args(argv)
    q = args.quick
    args.budget = args.budget if args.budget is not None else (90.0 if q else 390.0)
    args.steps_batch = args.steps_batch or (2 if q else 16)
    args.patch = args.patch or (32 if q else 64)
    args.eval_images = args.eval_images or (2 if q else 16)
    args.eval_size = args.eval_size or (192 if q else 512)
    args.eval_checkpoints = args.eval_checkpoints or (2 if q else 4)
    args.warmup = 1 if q else 2
    args.max_rounds = 1 if q else 5
    args.max_overhead_rounds = 3 if q else 15
    args.chunk_s, args.max_chunk = 0.5, 20
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        ap.error(f"--sections: unknown {bad}; choose from {','.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device, field="--device")
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
        torch.cuda.set_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(device, "fp32", False)
    env.update({"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0})  # fmt: skip
    print(f"device {env['device']} ({env['device_name']}), torch {env['torch']}, CUDA {env['cuda']}, "
          f"cuDNN {env['cudnn']}, {env['cpu_count']} CPUs, {env['torch_threads']} torch threads"
          + (", QUICK (tiny sizes)" if args.quick else ""))  # fmt: skip
    report: dict[str, Any] = {"environment": env, "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                               for k, v in vars(args).items()}, "sections": {}}  # fmt: skip
    t_start = time.perf_counter()
    fns = {"steps": section_steps, "overhead": section_overhead, "cells": section_cells, "eval": section_eval}
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmpdir:
        ctx: dict[str, Any] = {"args": args, "device": device, "full": load_matrix("full.yaml"), "tmp": Path(tmpdir)}
        t0 = time.perf_counter()
        ctx["dataset"] = open_dataset("synth", DATA)
        ctx["dataset"].load("train", DOSE)
        report["data_s"] = time.perf_counter() - t0
        share = sum(SHARES[s] for s in args.sections)
        for name in SECTIONS:
            if name not in args.sections:
                report["sections"][name] = {"status": "skipped"}
                continue
            report["sections"][name] = run_section(name, fns[name], ctx, args.budget * SHARES[name] / share)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")  # after every section
    report["total_s"] = time.perf_counter() - t_start
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    s = report["sections"]

    def get(sec: str, *keys: str) -> Any:
        v: Any = s.get(sec, {})
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        return v

    print("\n== summary ==")
    print(f"device {env['device_name']}, torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}; "
          f"total {report['total_s']:.0f} s")
    print(f"steps:    tf32/fp32 {_fmt(get('steps', 'ratios', 'tf32/fp32'))}x, bf16/fp32 "
          f"{_fmt(get('steps', 'ratios', 'bf16/fp32'))}x (geometric means over architectures)")
    print(f"overhead: runner/bare step {_fmt(get('overhead', 'ratios', 'runner/bare'))} (target <= 1.05)")
    print(f"cells:    best speed-up {_fmt(get('cells', 'best_speedup'), '.2f')}x over --jobs 1 (goal >= 4x), "
          f"identical: {str(get('cells', 'identical')).lower()}")
    print(f"eval:     {_fmt(get('eval', 'checkpoints_per_s'))} checkpoints/s; skipped: "
          f"{', '.join(get('eval', 'skipped') or {}) or 'none'}")
    statuses = {k: v.get("status") for k, v in s.items()}
    print("sections: " + ", ".join(f"{k} {v}" for k, v in statuses.items()) + f"; JSON: {args.out}")
    return 1 if any(v == "failed" for v in statuses.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
