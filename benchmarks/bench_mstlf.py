"""MSTLF speed and memory benchmark (issue #5).

Measures, in one run, on the same RED-CNN (``models.build_model("redcnn")``, fixed seed), the same
batch (16 patches of 64×64 in network normalisation) and the same Adam optimizer:

1. a training step with MSE;
2. a training step with MSE + 0.001·MSTLF (contrast, average, L = 256; the registered default);
3. the same with all four Haralick features (ASM needs the L×L GLCMs);
4. a training step with MSE + 0.001·(the same contrast MSTLF computed with the *einsum formulation
   of the paper's public code*: unnormalised Gaussian soft binning into a (N, 1, H, W, L) tensor,
   shifted copies with zero fill, ``einsum('bchwj,bchwk->bcjk')`` per offset, symmetrise, normalise,
   Σ(i−j)²P), written here as the reference;

and the texture term alone (forward + backward of the 16-offset contrast grid of pred and target):
ours vs the einsum reference. Each variant runs in its own subprocess so that its peak resident
memory (``ru_maxrss``, minus the RSS just before the first step) is its own.

Targets: step(MSE + MSTLF) / step(MSE) ≤ 1.5 and einsum / ours ≥ 3.

    python benchmarks/bench_mstlf.py [--threads 2] [--repeats 3] [--levels 256] [--skip-reference]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import measure, time_steps

from losses.mstlf import MSTLFLoss, mstlf_offsets
from models import build_model

ALL_FEATURES = ["contrast", "homogeneity", "correlation", "asm"]


# --- the reference: the public code's einsum formulation (written from its description) -------------
def _shift(t: torch.Tensor, dr: int, dc: int) -> torch.Tensor:
    """``out[..., r, c, :] = t[..., r + dr, c + dc, :]``, zero where that falls outside the image."""
    out = torch.roll(t, shifts=(-dr, -dc), dims=(2, 3))
    h, w = t.shape[2], t.shape[3]
    if dr > 0:
        out[:, :, h - dr :] = 0
    elif dr < 0:
        out[:, :, : -dr] = 0
    if dc > 0:
        out[:, :, :, w - dc :] = 0
    elif dc < 0:
        out[:, :, :, : -dc] = 0
    return out


def einsum_contrast_grid(x: torch.Tensor, levels: int, sigma: float) -> torch.Tensor:
    """Contrast at the 16 MSTLF offsets via the einsum GLCM: (N, 1, H, W) → (N, 16)."""
    centres = torch.linspace(0.0, 1.0, levels, dtype=x.dtype)
    bins = torch.exp(-((x.unsqueeze(-1) - centres) ** 2) / (2 * sigma**2))  # (N, 1, H, W, L)
    idx = torch.arange(levels, dtype=x.dtype)
    weights = (idx[:, None] - idx[None, :]) ** 2
    out = []
    for dr, dc in mstlf_offsets():
        occ = torch.einsum("bchwj,bchwk->bcjk", bins, _shift(bins, dr, dc))
        glcm = occ + occ.transpose(2, 3)
        glcm = glcm / glcm.sum(dim=(2, 3), keepdim=True).clamp_min(1e-30)
        out.append((glcm * weights).sum(dim=(2, 3))[:, 0])
    return torch.stack(out, dim=1)


class EinsumMSTLF(torch.nn.Module):
    """Contrast MSTLF with average aggregation on the einsum grid (the reference)."""

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = levels
        self.sigma = 1.0 / (levels - 1)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        grid = lambda t: einsum_contrast_grid(t, self.levels, self.sigma)  # noqa: E731
        return (grid(pred) - grid(target)).abs().mean()


# --- measurement ---------------------------------------------------------------------------------------
def _batch(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    phase = torch.rand(batch, 1, 1, 1, generator=g) * 6
    clean = 0.25 + 0.02 * torch.sin(9 * xx + phase) * torch.cos(7 * yy) + 0.05 * (((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < 0.08)
    noisy = clean + 0.01 * torch.randn(batch, 1, size, size, generator=g)  # ~40 HU noise
    return noisy, clean


def _texture_term(variant: str, levels: int) -> torch.nn.Module | None:
    if variant == "mse":
        return None
    if variant == "mstlf":
        return MSTLFLoss(levels=levels)
    if variant == "mstlf_all":
        return MSTLFLoss(levels=levels, features=ALL_FEATURES)
    if variant in ("einsum", "einsum_term"):
        return EinsumMSTLF(levels)
    if variant == "mstlf_term":
        return MSTLFLoss(levels=levels)
    raise ValueError(variant)


def _worker(variant: str, args: dict[str, Any], queue: Any) -> None:
    torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    noisy, clean = _batch(args["batch"], args["size"])
    term = _texture_term(variant, args["levels"])
    if variant.endswith("_term"):  # the texture term alone, forward + backward
        assert term is not None
        pred = clean + 0.01 * torch.randn_like(clean)

        def step() -> None:
            p = pred.clone().requires_grad_(True)
            term(p, clean).backward()
    else:
        model = build_model("redcnn")
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step() -> None:
            opt.zero_grad()
            out = model(noisy)
            loss = torch.nn.functional.mse_loss(out, clean)
            if term is not None:
                loss = loss + 0.001 * term(out, clean)
            loss.backward()
            opt.step()

    times, peak_mib = time_steps(step, warmup=1, repeats=args["repeats"])
    queue.put({"variant": variant, "times": times, "peak_mib": peak_mib})


def measure_variant(variant: str, args: dict[str, Any]) -> dict[str, Any]:
    result = measure(_worker, variant, args)
    result["median"] = statistics.median(result["times"])
    print(f"  {variant:12s} median {result['median']:7.3f} s  (runs {', '.join(f'{t:.3f}' for t in result['times'])})"
          f"  peak RSS +{result['peak_mib']:.0f} MiB", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--levels", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--skip-reference", action="store_true", help="skip the (slow) einsum reference")
    ns = parser.parse_args()
    args = vars(ns)
    print(f"RED-CNN, batch {ns.batch}, {ns.size}x{ns.size}, L = {ns.levels}, {ns.threads} threads, "
          f"{ns.repeats} timed repeats after 1 warm-up; torch {torch.__version__}", flush=True)
    variants = ["mse", "mstlf", "mstlf_all", "mstlf_term"]
    if not ns.skip_reference:
        variants += ["einsum", "einsum_term"]
    res = {v: measure_variant(v, args) for v in variants}
    mse = res["mse"]["median"]
    print("\nratios (median step times)")
    print(f"  step(MSE + MSTLF contrast) / step(MSE)      = {res['mstlf']['median'] / mse:6.2f}   (target <= 1.5)")
    print(f"  step(MSE + MSTLF all four) / step(MSE)      = {res['mstlf_all']['median'] / mse:6.2f}")
    if not ns.skip_reference:
        print(f"  step(MSE + einsum MSTLF)   / step(MSE)      = {res['einsum']['median'] / mse:6.2f}")
        print(f"  step(einsum) / step(ours), training step    = {res['einsum']['median'] / res['mstlf']['median']:6.2f}"
              "   (target >= 3)")
        print(f"  texture term alone: einsum / ours           = "
              f"{res['einsum_term']['median'] / res['mstlf_term']['median']:6.1f}")
    print("peak RSS increase over the pre-step RSS (MiB): "
          + ", ".join(f"{v} {r['peak_mib']:.0f}" for v, r in res.items()))


if __name__ == "__main__":
    main()
