"""Runner overhead: a cell's training epoch in the runner vs a bare PyTorch loop, same process.

Both train the same architecture from the same seed on the same tiny synthetic data, with the same
number of optimizer steps, batch and patch size. The bare loop is what one would write by hand:
sample patches, forward, MSE, backward, Adam step. The runner epoch also runs validation, writes the
checkpoint (atomic, fsynced) and the history. Printed: median seconds per epoch of each, the ratio
for the training part alone (the runner's step functions vs the bare loop) and for the whole epoch.
Target: training-part overhead <= 5 %.

    python benchmarks/bench_runner.py [--arch dncnn] [--steps 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmark.config import parse_matrix
from benchmark.conventions import hu_to_net, sample_patches
from benchmark.data import open_dataset
from benchmark.runner import Runner
from benchmark.train import TrainData, seed_everything, train_epoch
from models import build_model


def bare_epoch(arch: str, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, patch: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = build_model(arch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        xb, yb, _ = sample_patches(x, y, batch, patch, gen)
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(xb), yb)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="dncnn")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    matrix = parse_matrix({
        "dataset": {"kind": "synth", "options": {"size": "tiny"}},
        "losses": ["mse"], "architectures": [args.arch], "doses": ["25_360"],
        "training": {"epochs": 1, "batch_size": args.batch, "patch_size": args.patch,
                     "patches_per_epoch": args.steps * args.batch},
        "device": "cpu",
    })
    ds = open_dataset("synth", {"size": "tiny"})
    train = ds.load("train", "25_360")
    x = hu_to_net(torch.from_numpy(train.inputs.astype("float32")))
    y = hu_to_net(torch.from_numpy(train.targets.astype("float32")))

    bare, step_fn, whole = [], [], []
    for r in range(args.repeats):
        bare.append(bare_epoch(args.arch, x, y, args.steps, args.batch, args.patch, seed=r))
        # the runner's step functions alone (no validation / checkpoint)
        runner = Runner(matrix, Path(tempfile.mkdtemp()), quiet=True, dataset=ds)
        from benchmark.cells import expand_cells

        cell = expand_cells(matrix)[0]
        state = runner.build(cell)
        state.generator = seed_everything(r)
        data = TrainData(train, matrix.training)
        t0 = time.perf_counter()
        train_epoch(state, data, torch.device("cpu"), None)
        step_fn.append(time.perf_counter() - t0)
        # the whole runner epoch: training + validation + checkpoint + history
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            Runner(matrix, Path(tmp), quiet=True, dataset=ds).run()
            whole.append(time.perf_counter() - t0)

    b, s, w = statistics.median(bare), statistics.median(step_fn), statistics.median(whole)
    print(f"architecture {args.arch}, {args.steps} steps of batch {args.batch}, {args.patch}x{args.patch} patches, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"bare PyTorch loop          {b:8.3f} s")
    print(f"runner step functions      {s:8.3f} s   ratio {s / b:6.3f}  (overhead {100 * (s / b - 1):+.1f} %)")
    print(f"runner epoch, all included {w:8.3f} s   ratio {w / b:6.3f}  (validation + checkpoint + history)")


if __name__ == "__main__":
    main()
