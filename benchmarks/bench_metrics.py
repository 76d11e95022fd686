"""Benchmark: our batched ``compute_metrics`` (with the reference cache) vs naive per-image pyiqa.

The workload is the analysis's: one cell's evaluation images scored at several epoch checkpoints
against the same references. Two ways, same run, same values:

* ours: ``compute_metrics(names, pred_c, ref, ref_cache=cache)`` once per checkpoint ``c``;
* naive: ``pyiqa.create_metric(name)`` once per metric, then one call per image per checkpoint, on
  the windowed image repeated to RGB (pyiqa's API takes RGB in [0, 1]).

The synthetic HU images lie on the 8-bit grid of the window, so pyiqa's internal ``round(255·x)`` is a
no-op and both ways must agree to float precision (VIF to 1e-3: our GSM parameters are float64 with
the reference code's eigenvalue correction; where pyiqa's float32 VIF is NaN, that image is left out
of the comparison and reported); the script checks that and exits 1 otherwise.
LPIPS runs on a *seeded random* AlexNet written to a temporary TORCH_HOME (no ImageNet weights here):
its timing is real, its values are not quality scores. Nothing is downloaded; the user's caches are
not touched.

    python benchmarks/bench_metrics.py [--checkpoints 5] [--images 16] [--size 256] [--metrics ...]

Prints per-metric times, the total ratio naive / ours (target ≥ 3×) and the largest value difference.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pyiqa name and extra options for each of our metrics, and the agreement tolerance (absolute).
PYIQA = {
    "psnr": ("psnr", {}, 1e-3),
    "ssim": ("ssim", {}, 1e-4),
    # ours: float64 GSM parameters (with the reference code's eigenvalue correction); pyiqa's float32
    # estimate differs by up to ~1e-3, pyiqa run in float64 agrees with ours to 3e-7.
    "vif": ("vif", {}, 2e-3),
    "niqe": ("niqe", {"pretrained_model_path": "NIQE_MAT"}, 1e-3),
    "pique": ("piqe", {}, 1e-3),
    "lpips": ("lpips", {"pretrained_model_path": "LPIPS_LINEAR"}, 1e-4),
}


def synthetic(n: int, size: int, checkpoints: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Reference ``(n, size, size)`` HU and one prediction per checkpoint (noise falling with the epoch),
    all on the 8-bit grid of the abdomen window."""
    from scipy.ndimage import gaussian_filter

    from benchmark.core.conventions import WINDOWS

    w = WINDOWS["abdomen"]
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.normal(size=(n, size, size)), (0, 4, 4))
    ref_hu = field / field.std() * 120.0 + 40.0

    def grid(hu: np.ndarray) -> np.ndarray:
        k = np.clip(np.round((hu - w.lo) / w.width * 255.0), 0, 255)
        return (w.lo + k / 255.0 * w.width).astype(np.float32)

    preds = [grid(ref_hu + rng.normal(0.0, 60.0 / (c + 1), ref_hu.shape)) for c in range(checkpoints)]
    return grid(ref_hu), preds


class Timer:
    """Accumulated wall-clock and process CPU seconds per (way, metric)."""

    def __init__(self) -> None:
        self.wall: dict[tuple[str, str], float] = {}
        self.cpu: dict[tuple[str, str], float] = {}

    def run(self, way: str, metric: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        key = (way, metric)
        self.wall[key] = self.wall.get(key, 0.0) + time.perf_counter() - w0
        self.cpu[key] = self.cpu.get(key, 0.0) + time.process_time() - c0
        return out


def naive_metrics(names: list[str], paths: dict) -> dict:
    """One pyiqa metric object per metric, created once (creation is not timed)."""
    from benchmark.core.compat import ensure_torchvision

    ensure_torchvision()
    import pyiqa

    out = {}
    for name in names:
        pyiqa_name, opts, _ = PYIQA[name]
        out[name] = pyiqa.create_metric(
            pyiqa_name, device="cpu", **{k: paths.get(v, v) for k, v in opts.items()}
        )
    return out


def naive_one_checkpoint(metric, pred: np.ndarray, ref: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """pyiqa called once per image on the windowed image repeated to RGB."""
    import torch

    from benchmark.core.conventions import window_to_unit

    def rgb(hu: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(window_to_unit(hu))[None, None].expand(1, 3, -1, -1).contiguous()

    values = []
    with torch.no_grad():
        for i in range(ref.shape[0]):
            v = metric(rgb(pred[i]), rgb(ref[i])) if metric.metric_mode == "FR" else metric(rgb(pred[i]))
            values.append(float(v.reshape(-1)[0]))
    return np.asarray(values)


def compare(
    names: list[str], ref: np.ndarray, preds: list[np.ndarray], paths: dict
) -> tuple[Timer, dict, dict]:
    """Both ways, interleaved checkpoint by checkpoint so that both see the same machine load."""
    from analysis.metrics import compute_metrics

    naive = naive_metrics(names, paths)
    for name in names:  # warm-up on one image: imports, scorer construction, first-call costs
        compute_metrics([name], preds[0][:1], ref[:1])
        naive_one_checkpoint(naive[name], preds[0][:1], ref[:1])
    timer, cache = Timer(), {}
    ours: dict[str, list[np.ndarray]] = {n: [] for n in names}
    theirs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for pred in preds:
        for name in names:
            out = timer.run("ours", name, compute_metrics, [name], pred, ref, ref_cache=cache)
            ours[name].append(out[name])
            theirs[name].append(timer.run("naive", name, naive_one_checkpoint, naive[name], pred, ref))
    return (
        timer,
        {n: np.concatenate(v) for n, v in ours.items()},
        {n: np.concatenate(v) for n, v in theirs.items()},
    )


def prepare_offline_files(tmp: Path, names: list[str]) -> dict[str, str]:
    """NIQE parameters as the .mat pyiqa reads; a random AlexNet and the lpips linear layers."""
    import scipy.io

    from analysis.metrics.no_reference import niqe_params

    mu, cov = niqe_params()
    mat = tmp / "niqe_modelparameters.mat"
    scipy.io.savemat(mat, {"mu_prisparam": mu.numpy()[None], "cov_prisparam": cov.numpy()})
    paths = {"NIQE_MAT": str(mat)}
    if "lpips" in names:
        from benchmark.core.compat import ensure_torchvision

        ensure_torchvision()
        import lpips

        from benchmark.core import weights

        weights.write_random_weights("alexnet", seed=0)
        paths["LPIPS_LINEAR"] = str(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth")
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", type=int, default=5)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--metrics", default="psnr,ssim,vif,niqe,pique,lpips")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default). On a loaded shared machine use 1: small ops with "
        "2+ threads under contention run many times slower, for both ways",
    )
    args = ap.parse_args()
    names = [n.strip() for n in args.metrics.split(",") if n.strip()]
    unknown = [n for n in names if n not in PYIQA]
    if unknown:
        print(f"no pyiqa counterpart for {unknown}; choose from {list(PYIQA)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        os.environ["TORCH_HOME"] = str(tmp / "torch")  # a private cache: random backbones only live here
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        paths = prepare_offline_files(tmp, names)
        ref, preds = synthetic(args.images, args.size, args.checkpoints)
        print(
            f"{args.checkpoints} checkpoints x {args.images} images of {args.size}x{args.size}, "
            f"metrics {','.join(names)}, torch threads {torch.get_num_threads()}"
        )
        if "lpips" in names:
            print("lpips: seeded RANDOM AlexNet backbone (timing only; values are not LPIPS scores)")
        timer, v_ours, v_naive = compare(names, ref, preds, paths)
    ok = True
    print(
        f"{'metric':8s} {'ours s':>8s} {'pyiqa s':>8s} {'ratio':>6s} {'cpu ratio':>9s} {'max |diff|':>11s}  tol"
    )
    notes = []
    for n in names:
        finite = np.isfinite(v_naive[n])
        if not finite.all():
            notes.append(
                f"{n}: pyiqa returned {int((~finite).sum())} non-finite value(s); compared elsewhere"
            )
        ok &= bool(np.isfinite(v_ours[n]).all())
        diff = float(np.max(np.abs(v_ours[n][finite] - v_naive[n][finite]), initial=0.0))
        tol = PYIQA[n][2]
        ok &= diff <= tol
        wo, wn = timer.wall["ours", n], timer.wall["naive", n]
        co, cn = timer.cpu["ours", n], timer.cpu["naive", n]
        print(f"{n:8s} {wo:8.2f} {wn:8.2f} {wn / wo:6.1f} {cn / co:9.1f} {diff:11.2e}  {tol:g}")
    wo, wn = (sum(v for (way, _), v in timer.wall.items() if way == w) for w in ("ours", "naive"))
    co, cn = (sum(v for (way, _), v in timer.cpu.items() if way == w) for w in ("ours", "naive"))
    print(f"{'total':8s} {wo:8.2f} {wn:8.2f} {wn / wo:6.1f} {cn / co:9.1f}")
    for note in notes:
        print(note)
    print(f"speed-up naive/ours: {wn / wo:.2f}x wall, {cn / co:.2f}x CPU (target >= 3x); values agree: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
