"""Runner overhead: a training epoch in the runner vs a bare PyTorch loop, in the same process.

Both sides train the same architecture from the same initial weights on the same tiny synthetic
data, with the same batch and patch size. The bare loop is what one writes by hand: sample patches,
forward, MSE, backward, Adam step. The runner side is exactly what ``ldct-bench run`` executes per
step (the supervised scheme's :meth:`benchmark.schemes.supervised.Supervised.step` on a
``CompositeLoss``, patch sampling by :class:`benchmark.train.TrainData`). Steps are **interleaved**
(bare, runner, runner, bare, ...) so machine load drifts cancel; the medians of the per-step times
are compared. The runner's per-epoch extras (validation on the validation split, atomic fsynced
checkpoint, history) are timed separately and expressed as a fraction of an epoch of ``--epoch-steps``.

    python benchmarks/bench_runner.py [--arch dncnn] [--steps 40] [--epoch-steps 500]

Target: step overhead <= 5 %.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch

from benchmark.checkpoint import FORMAT_VERSION, save_checkpoint
from benchmark.config import parse_matrix
from benchmark.core.precision import PRECISIONS, autocast, float32_matmul
from benchmark.data import PairedSlices, open_dataset
from benchmark.layout import RunLayout
from benchmark.sampling import sample_patches
from benchmark.step_settings import StepSettings
from benchmark.train import TrainData, TrainState, build_state, seed_everything, validate
from losses import build_loss
from models import build_model


def bare_step(model: torch.nn.Module, opt: torch.optim.Optimizer, data: TrainData, batch: int, patch: int,
              generator: torch.Generator, device: torch.device) -> None:  # fmt: skip
    """One step of the hand-written loop: sample patches, forward, MSE, backward, Adam step."""
    xb, yb, _ = sample_patches(data.x, data.y, batch, patch, generator)
    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(model(xb), yb).backward()
    opt.step()


def epoch_extras(state: TrainState, val: PairedSlices, device: torch.device, val_batch_size: int,
                 val_max_images: int | None) -> tuple[float, float]:  # fmt: skip
    """Seconds of the runner's per-epoch extras: validation, then an atomic checkpoint + history write
    (into a temporary folder). ``device``'s queue is drained before each clock read."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with tempfile.TemporaryDirectory() as tmp:
        sync()
        t0 = time.perf_counter()
        validate(state, val, device, val_batch_size, val_max_images)
        sync()
        t_val = time.perf_counter() - t0
        t0 = time.perf_counter()
        layout = RunLayout(tmp, must_exist=False)
        save_checkpoint(layout.checkpoint_path("cell", 1), {"format_version": FORMAT_VERSION, "epoch": 1, "cell": {"cell_id": "cell"},
                                                            "model": state.model.state_dict(),
                                                            "train_state": state.state_dict()})  # fmt: skip
        layout.write_history("cell", [{"epoch": 1, "train_loss": 0.0, "val_loss": 0.0, "lr": 1e-4}])
        t_ckpt = time.perf_counter() - t0
    return t_val, t_ckpt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="dncnn")
    ap.add_argument("--steps", type=int, default=40, help="measured steps per side")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--epoch-steps", type=int, default=500, help="steps per epoch for the per-epoch extras")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32",
                    help="training.precision of the runner side (the bare loop stays fp32)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    matrix = parse_matrix({
        "dataset": {"kind": "synth", "options": {"size": "tiny"}},
        "losses": ["mse"], "architectures": [args.arch], "doses": ["25_360"],
        "training": {"epochs": 1, "batch_size": args.batch, "patch_size": args.patch,
                     "patches_per_epoch": (args.steps + 1) * args.batch, "precision": args.precision},
        "device": "cpu",
    })
    ds = open_dataset("synth", {"size": "tiny"})
    train, val = ds.load("train", "25_360"), ds.load("val", "25_360")
    device = torch.device("cpu")

    # runner side: exactly the runner's objects
    gen = seed_everything(0)
    model = build_model(args.arch)
    state = build_state(model, build_loss([("mse", 1.0, {})]), matrix.training, gen)
    data = TrainData(train, matrix.training)
    # bare side: a copy of the same initial weights, its own Adam and generator
    bare_model = copy.deepcopy(model)
    bare_opt = torch.optim.Adam(bare_model.parameters(), lr=matrix.training.optimizer.lr)
    bare_gen = torch.Generator().manual_seed(0)
    model.train()
    bare_model.train()

    settings = StepSettings(precision=args.precision)  # checked at every update, unclipped

    def runner_step(i: int) -> None:
        x, y = data.batch(i, state.generator)
        with float32_matmul(args.precision), autocast(args.precision, device.type):  # as train_epoch does
            state.scheme.step(x, y, settings)

    def bare() -> None:
        bare_step(bare_model, bare_opt, data, args.batch, args.patch, bare_gen, device)

    bare()
    runner_step(0)  # warm-up
    bare_t, runner_t = [], []
    for i in range(args.steps):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for side in order:
            t0 = time.perf_counter()
            if side == 0:
                bare()
            else:
                runner_step(i + 1)
            (bare_t if side == 0 else runner_t).append(time.perf_counter() - t0)

    t_val, t_ckpt = epoch_extras(state, val, device, matrix.training.val_batch_size, None)

    b, r = statistics.median(bare_t), statistics.median(runner_t)
    epoch = args.epoch_steps * r
    print(f"architecture {args.arch}, batch {args.batch}, {args.patch}x{args.patch} patches, precision {args.precision}, "
          f"{torch.get_num_threads()} threads, {args.steps} interleaved steps per side")
    print(f"bare PyTorch step        median {1000 * b:9.1f} ms")
    print(f"runner step              median {1000 * r:9.1f} ms   ratio {r / b:6.3f}  (overhead {100 * (r / b - 1):+.1f} %)")
    print(f"per-epoch extras: validation {t_val:.2f} s ({len(val)} slices), checkpoint + history {t_ckpt:.2f} s")
    print(f"epoch of {args.epoch_steps} steps: runner {epoch + t_val + t_ckpt:.1f} s vs bare {args.epoch_steps * b:.1f} s "
          f"-> ratio {(epoch + t_val + t_ckpt) / (args.epoch_steps * b):.3f}")


if __name__ == "__main__":
    main()
