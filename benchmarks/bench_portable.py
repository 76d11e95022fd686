"""Portable vs native CPU kernels: step time of DnCNN and RED-CNN (the small matrix's networks).

Each kernel mode needs its own process (the pins are read when torch loads, :mod:`benchmark.core.kernels`),
so the script starts one child per mode and round, alternating native / portable for ``--rounds`` rounds
so that a drift in machine load hits both; the medians of the per-step times are compared. Every child
trains the same network from the same seed on the same random 48² patches (batch 8, Adam, MSE) at the
same thread count, the small matrix's step.

    python benchmarks/bench_portable.py [--threads 2] [--steps 30] [--rounds 3]

Prints ``portable/native`` per architecture (> 1: portable is slower) and the kernels each child ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from benchmark.core.kernels import MARKER, UNPINNED, portable_env

ARCHS = {
    "dncnn": {"depth": 8, "channels": 32, "batch_norm": False, "init": "he", "zero_init_output": True},
    "redcnn": {"channels": 32, "init": "he", "zero_init_output": True},
}

_CHILD = """
import json, statistics, sys, time
import torch
from benchmark.core.kernels import apply_portable, describe, pinned_threads
from models import build_model
name, kwargs, steps, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if pinned_threads() is not None:
    apply_portable(threads)
else:
    torch.set_num_threads(threads)
torch.manual_seed(0)
model = build_model(name, kwargs)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(1)
x = torch.rand(8, 1, 48, 48, generator=g)
y = x + 0.05 * torch.randn(8, 1, 48, 48, generator=g)
times = []
for i in range(steps + 3):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(model(y), x).backward()
    opt.step()
    if i >= 3:  # warm-up steps are not timed
        times.append(time.perf_counter() - t0)
print(json.dumps({"median_s": statistics.median(times), "facts": describe()}))
"""


def child(name: str, portable: bool, steps: int, threads: int) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in (MARKER, *UNPINNED)}
    base.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env = portable_env(base, threads) if portable else base
    out = subprocess.run([sys.executable, "-c", _CHILD, name, json.dumps(ARCHS[name]), str(steps), str(threads)],
                         env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for name in ARCHS:
        runs: dict[bool, list[float]] = {False: [], True: []}
        facts: dict[bool, dict] = {}
        for _ in range(args.rounds):
            for portable in (False, True):
                res = child(name, portable, args.steps, args.threads)
                runs[portable].append(res["median_s"])
                facts[portable] = res["facts"]
        nat, por = statistics.median(runs[False]), statistics.median(runs[True])
        print(f"{name:7s} native {nat * 1e3:7.1f} ms/step ({facts[False]['cpu_capability']}, mkldnn "
              f"{facts[False]['mkldnn']})  portable {por * 1e3:7.1f} ms/step ({facts[True]['cpu_capability']}, "
              f"mkldnn {facts[True]['mkldnn']}, MKL_CBWR {facts[True]['mkl_cbwr']})  portable/native {por / nat:.2f}x "
              f"[{args.threads} threads, batch 8 x 48^2, median of {args.rounds} x {args.steps} steps]")  # fmt: skip


if __name__ == "__main__":
    main()
