"""Projector speed vs scikit-image: ``radon`` + ``iradon`` against our forward projection + FBP.

Same image (Shepp–Logan, odd size so both use the same rotation centre), same parallel-beam view
count, both measured in this run on this machine; prints seconds per slice and the ratio. Ours is
timed three ways: *cold* (first call, includes building the sparse matrices of the geometry), *warm*
single slice, and *batched* (``--batch`` slices in one call, time per slice), which is how the
dataset builder uses it. Target: ≥ 5× faster than scikit-image.

    python benchmarks/bench_projector.py [--size 255] [--views 360] [--batch 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.data.projector import Geometry, fbp, forward_project


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=255, help="image side (odd)")
    ap.add_argument("--views", type=int, default=360)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--filter", default="hann", choices=["ramp", "hann"])
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from skimage.data import shepp_logan_phantom
    from skimage.transform import iradon, radon, resize

    n = args.size | 1
    img = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True).astype(np.float64)
    theta = np.linspace(0.0, 180.0, args.views, endpoint=False)

    def skimage_pair() -> None:
        iradon(radon(img, theta, circle=True), theta, filter_name=args.filter, circle=True)

    t_sk = best_of(skimage_pair, args.repeats)

    geom = Geometry("parallel", args.views, n, n, 1.0, channel_mm=1.0)
    x1 = torch.from_numpy(img).float()
    xb = x1.expand(args.batch, n, n).contiguous()

    def ours(x: torch.Tensor) -> torch.Tensor:
        return fbp(forward_project(x, geom), geom, args.filter)

    t0 = time.perf_counter()
    rec = ours(x1)
    t_cold = time.perf_counter() - t0
    t_warm = best_of(lambda: ours(x1), args.repeats)
    t_batch = best_of(lambda: ours(xb), args.repeats) / args.batch

    ref = iradon(radon(img, theta, circle=True), theta, filter_name=args.filter, circle=True)
    inside = np.hypot(*(np.mgrid[:n, :n] - n // 2)) < n // 2 - 1
    err = np.linalg.norm(rec.numpy()[inside] - ref[inside]) / np.linalg.norm(ref[inside])

    print(f"image {n}x{n}, {args.views} views (parallel beam), filter {args.filter}, "
          f"torch threads {torch.get_num_threads()}, device cpu")
    print(f"scikit-image radon+iradon : {t_sk * 1e3:9.1f} ms/slice")
    print(f"ours cold (incl. matrices): {t_cold * 1e3:9.1f} ms/slice   ratio {t_sk / t_cold:6.2f}x")
    print(f"ours warm, single slice   : {t_warm * 1e3:9.1f} ms/slice   ratio {t_sk / t_warm:6.2f}x")
    print(f"ours warm, batch of {args.batch:<3d}   : {t_batch * 1e3:9.1f} ms/slice   ratio {t_sk / t_batch:6.2f}x")
    print(f"relative difference of the reconstructions: {err:.2e}")


if __name__ == "__main__":
    main()
