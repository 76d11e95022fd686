"""Architecture speed and memory benchmark (issue #9).

For every registered architecture (``models.ARCHITECTURES``, default settings, fixed seed) one training
step — forward, L1 loss, backward, Adam step — on a batch of ``--batch`` patches of ``--patch``² pixels
(3-D models: ``--depth`` × ``--patch``² voxels), measured after warm-up as the median of ``--repeats``
steps. Each architecture runs in its own subprocess, so its peak memory is its own: on CPU the peak
resident memory (``ru_maxrss``) minus the resident memory just before the first step; on CUDA
``torch.cuda.max_memory_allocated``.

Printed in one run, so every ratio compares numbers measured together:

* per architecture: parameters, step ms, peak MiB, and the step relative to DnCNN's;
* DenoMamba / Restormer step (target ≤ 3 on CPU: the selective scan must not dominate);
* with ``--scan`` on a CUDA box with the ``gpu`` extra (mamba-ssm) installed: the mamba-ssm kernel
  vs the suite's PyTorch selective scan on one DenoMamba-sized scan;
* with ``--schemes`` (issue #10): one training step of each GAN framework (``benchmark.schemes``:
  pix2pix, CycleGAN, UNIT, each as built by the runner, papers' defaults) relative to a supervised L1
  step of the same generator, and CycleGAN with the MSTLF texture term (average, on both cycle
  reconstructions) relative to the CycleGAN baseline (target ≤ 1.10). Steps are interleaved round by
  round, so machine load drifts cancel in the ratios.

    python benchmarks/bench_models.py                       # CPU: 64², batch 4
    python benchmarks/bench_models.py --device cuda --batch 16 --scan   # GPU box: batch 16, 64², fp32
    python benchmarks/bench_models.py --schemes --repeats 5             # the GAN frameworks only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import measure, time_steps

from benchmark.config import TrainingConfig
from benchmark.schemes import build_scheme
from benchmark.step_settings import StepSettings
from losses import build_loss
from models import ARCHITECTURES, build_model, selective_scan


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_worker(name: str, args: dict[str, Any], queue: Any) -> None:
    """One architecture: warm-up, then ``repeats`` timed training steps; puts the result on ``queue``."""
    try:
        torch.set_num_threads(args["threads"])
        device = torch.device(args["device"])
        torch.manual_seed(0)
        model = build_model(name).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        dims = ARCHITECTURES[name].dims[0]
        shape = (args["batch"], 1, *([args["depth"]] if dims == 3 else []), args["patch"], args["patch"])
        gen = torch.Generator().manual_seed(1)
        x = (0.25 + 0.01 * torch.randn(shape, generator=gen)).to(device)
        y = (0.25 + 0.002 * torch.randn(shape, generator=gen)).to(device)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            (model(x) - y).abs().mean().backward()
            opt.step()

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times, peak_mib = time_steps(step, warmup=args["warmup"], repeats=args["repeats"], sync=lambda: _sync(device))
        if device.type == "cuda":
            peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        queue.put({"name": name, "ms": 1000 * statistics.median(times), "peak_mib": peak_mib, "params": params,
                   "shape": shape})
    except Exception as exc:  # report and go on with the next architecture
        queue.put({"name": name, "error": f"{type(exc).__name__}: {exc}"})


def scan_comparison(repeats: int) -> None:
    """The mamba-ssm CUDA kernel vs the suite's PyTorch scan on one DenoMamba-sized scan (CUDA only)."""
    if not torch.cuda.is_available():
        print("scan comparison: skipped (needs CUDA)")
        return
    if not selective_scan.cuda_kernel_available():
        print("scan comparison: skipped (mamba-ssm is not installed: pip install -e '.[gpu]')")
        return

    dev = torch.device("cuda")
    b, d, n, length = 16, 96, 16, 64 * 64  # batch 16, expand 2 x dim 48, d_state 16, a 64x64 token grid
    gen = torch.Generator(device="cpu").manual_seed(0)
    u, delta = torch.randn(b, d, length, generator=gen).to(dev), torch.rand(b, d, length, generator=gen).to(dev)
    a = -torch.rand(d, n, generator=gen).to(dev) - 0.5
    bm, cm = torch.randn(b, n, length, generator=gen).to(dev), torch.randn(b, n, length, generator=gen).to(dev)
    dskip = torch.randn(d, generator=gen).to(dev)
    def run(backend: str) -> torch.Tensor:
        return selective_scan.selective_scan(u, delta, a, bm, cm, dskip, backend=backend)

    ref, got = run("torch"), run("cuda")
    err = (ref - got).abs().max().item() / ref.abs().max().item()
    timings = {}
    for label, fn in (("mamba-ssm kernel", lambda: run("cuda")), ("PyTorch scan", lambda: run("torch"))):
        fn()
        _sync(dev)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            ts.append(time.perf_counter() - t0)
        timings[label] = 1000 * statistics.median(ts)
    print(f"selective scan (B {b}, D {d}, N {n}, L {length}): max relative difference {err:.2e}")
    for label, ms in timings.items():
        print(f"  {label:<18} {ms:9.2f} ms")
    print(f"  PyTorch / kernel   {timings['PyTorch scan'] / timings['mamba-ssm kernel']:9.2f}x")


# (label, scheme, architecture, loss entry): each framework with the generator of the paper's setting.
SCHEME_CASES = [
    ("supervised unet", "supervised", "unet", [("l1", 1.0, {})]),
    ("pix2pix unet", "pix2pix", "unet", []),
    ("supervised resnet_gen", "supervised", "resnet_gen", [("l1", 1.0, {})]),
    ("cyclegan resnet_gen", "cyclegan", "resnet_gen", []),
    ("cyclegan + mstlf", "cyclegan", "resnet_gen", [("mstlf", 0.001, {})]),
    ("supervised unit", "supervised", "unit", [("l1", 1.0, {})]),
    ("unit", "unit", "unit", []),
]


def scheme_comparison(args: argparse.Namespace) -> None:
    """Step time of each framework vs a supervised step of the same generator (see the docstring)."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    training = TrainingConfig(epochs=1, batch_size=args.batch, patch_size=args.patch,
                              optimizer={"name": "adam", "lr": 2e-4, "kwargs": {"betas": [0.5, 0.999]}})  # fmt: skip
    plain = StepSettings()  # a plain fp32 step, unclipped, checked at every update
    gen = torch.Generator().manual_seed(1)
    shape = (args.batch, 1, args.patch, args.patch)
    x = (0.25 + 0.01 * torch.randn(shape, generator=gen)).to(device)
    y = (0.25 + 0.002 * torch.randn(shape, generator=gen)).to(device)
    schemes = {}
    for label, scheme, arch, terms in SCHEME_CASES:
        torch.manual_seed(0)
        model = build_model(arch).to(device)
        schemes[label] = build_scheme(scheme, {}, model=model, loss=build_loss(terms).to(device), training=training,
                                      rng=torch.Generator().manual_seed(0),
                                      build_network=lambda arch=arch: build_model(arch).to(device)).to(device, plain)  # fmt: skip
        schemes[label].train()
    times: dict[str, list[float]] = {k: [] for k in schemes}
    for r in range(args.warmup + args.repeats):
        order = list(schemes) if r % 2 == 0 else list(reversed(schemes))
        for label in order:
            _sync(device)
            t0 = time.perf_counter()
            schemes[label].step(x, y, plain)
            _sync(device)
            if r >= args.warmup:
                times[label].append(time.perf_counter() - t0)
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    print(f"\ntraining schemes: device {args.device}, batch {args.batch}, {args.patch}² patches, median of "
          f"{args.repeats} interleaved steps")  # fmt: skip
    base = {"pix2pix unet": "supervised unet", "cyclegan resnet_gen": "supervised resnet_gen",
            "cyclegan + mstlf": "supervised resnet_gen", "unit": "supervised unit"}  # fmt: skip
    for label, t in ms.items():
        rel = f"  {t / ms[base[label]]:5.2f}x {base[label]}" if label in base else ""
        print(f"  {label:<22} {t:10.1f} ms/step{rel}")
    print(f"  MSTLF in CycleGAN: {ms['cyclegan + mstlf'] / ms['cyclegan resnet_gen']:.3f}x the CycleGAN step (target <= 1.10)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--depth", type=int, default=16, help="slices of a 3-D patch")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated architectures (default: all)")
    ap.add_argument("--scan", action="store_true", help="also compare the mamba-ssm kernel with the PyTorch scan")
    ap.add_argument("--schemes", action="store_true", help="only the GAN frameworks vs supervised steps")
    args = ap.parse_args()
    if args.schemes:
        scheme_comparison(args)
        return
    names = [n for n in ARCHITECTURES if not args.only or n in args.only.split(",")]
    settings = {k: getattr(args, k) for k in ("device", "batch", "patch", "depth", "repeats", "warmup", "threads")}
    print(f"device {args.device}, batch {args.batch}, {args.patch}² patches (3-D: depth {args.depth}), "
          f"{args.threads} threads, median of {args.repeats} steps (forward + L1 + backward + Adam)")
    results = {}
    for name in names:
        r = measure(_step_worker, name, settings)
        results[name] = r
        if "error" in r:
            print(f"{name:<12} failed: {r['error']}", flush=True)
        else:
            print(f"{name:<12} {r['params'] / 1e6:8.2f} M params  {r['ms']:10.1f} ms/step  peak +{r['peak_mib']:8.0f} MiB",
                  flush=True)
    ok = {n: r for n, r in results.items() if "error" not in r}
    if "dncnn" in ok:
        print("step relative to DnCNN: " + ", ".join(f"{n} {r['ms'] / ok['dncnn']['ms']:.2f}x" for n, r in ok.items()))
    if "denomamba" in ok and "restormer" in ok:
        ratio = ok["denomamba"]["ms"] / ok["restormer"]["ms"]
        print(f"DenoMamba / Restormer step: {ratio:.2f}x (target <= 3)")
    if args.scan:
        scan_comparison(args.repeats)


if __name__ == "__main__":
    main()
