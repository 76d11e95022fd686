"""Differentiable (soft) gray-level co-occurrence matrices and Haralick features.

Used by the MSTLF texture loss (:mod:`losses.mstlf`, Di Feola et al., "Multi-scale texture loss for CT
denoising with GANs", arXiv 2403.16640) and by the analysis to report texture deviations.

**Soft assignment.** A pixel value x is spread over ``L`` gray-level bins with centres
``b_k = lo + k·(hi − lo)/(L − 1)``, ``k = 0 … L−1`` (``value_range = (lo, hi)``)::

    a_k(x) = exp(−(x − b_k)² / (2σ²))            (normalize=False, as in the paper's code)
    a_k(x) = a_k(x) / Σ_l a_l(x)                 (normalize=True, the default: a softmax)

With ``normalize=True`` every pixel carries weight 1, so the GLCM is a proper soft histogram, values
outside the range go to the edge bins instead of vanishing (no underflow to 0/0 either: it is a
softmax of the logits), and as σ → 0 it becomes hard nearest-bin quantisation. The default
σ is one bin spacing ``(hi − lo)/(L − 1)``: neighbouring bins overlap (useful gradients) while the
GLCM stays close to the hard one. The paper's code uses σ = 0.5 on [−1, 1] with L = 256, i.e. 64 bin
spacings, which smooths the GLCM over a quarter of the gray-level range; its commented alternative
σ = 0.005 is 0.64 spacings. Both are reachable through ``sigma``.

**Offsets** follow scikit-image's ``graycomatrix``: for distance d and angle θ (degrees here) the pair
is ``(image[r, c], image[r + dr, c + dc])`` with ``(dr, dc) = (round(d·sin θ), round(d·cos θ))``;
note that the row index *increases* (scikit-image's 45° pairs a pixel with its lower-right
neighbour; checked against ``graycomatrix`` in the tests). Only pairs with both pixels inside the
image count (no wrap-around, no zero padding).

**GLCM** for one offset: ``G = Σ_p a(x_p) a(x_{p+δ})ᵀ``, symmetrised and normalised,
``P = (G + Gᵀ) / Σ(G + Gᵀ)``, exactly ``graycomatrix(symmetric=True, normed=True)`` in the limit.

**Haralick features** (scikit-image ``graycoprops`` definitions, bin indices i, j as gray levels)::

    contrast    = Σ_ij P_ij (i − j)²
    homogeneity = Σ_ij P_ij / (1 + (i − j)²)
    asm         = Σ_ij P_ij²                                (angular second moment)
    correlation = Σ_ij P_ij (i − μ_i)(j − μ_j) / (σ_i σ_j)  (1 where σ_i σ_j = 0, as scikit-image)

**Reference scale** (``reference_levels = R``, default ``None`` = bin units as above). In bin units a
gray-level difference i − j depends on L: the same two pixel values are ``(L − 1)·|x − y|/(hi − lo)``
bins apart, so contrast grows like (L − 1)² (a weight tuned at 256 levels is 16× weaker at 64). With
``reference_levels = R`` every gray-level difference is expressed in normalised gray levels (divided by
L − 1) and rescaled to R levels (multiplied by R − 1), i.e. ``i − j`` becomes ``s·(i − j)`` with
``s = (R − 1)/(L − 1)``::

    contrast    = s² Σ_ij P_ij (i − j)²                     (bin² units of an R-level GLCM)
    homogeneity = Σ_ij P_ij / (1 + s²(i − j)²)

so an L-level GLCM estimates the same statistic as an R-level one (exactly the same value when L = R).
Correlation is invariant to the scale of the gray levels and needs none; ASM (Σ P²) has no such
rescaling (for a GLCM spread over many bins it falls like 1/L², for a peaked one it does not depend on L)
and is left as it is.

**Speed** (:func:`glcm_features`, hand-written because no library computes differentiable GLCM
features): no H×W×L×L tensor is ever built, and only ASM needs any L×L matrix. With per-pixel
moments ``S_k(x) = Σ_i i^k a_i(x)`` (k = 0, 1, 2; computed with indices shifted by a per-image
constant, which changes nothing algebraically but avoids cancellation in float32)::

    Σ_ij (i−j)² G_ij = Σ_p S2(x_p) S0(y_p) − 2 S1(x_p) S1(y_p) + S0(x_p) S2(y_p)     (y_p = x_{p+δ})
    Σ_ij G_ij       = Σ_p S0(x_p) S0(y_p)

and correlation uses the same moments. Homogeneity is ``Σ_p a(x_p)ᵀ K a(y_p)`` with the Toeplitz
kernel ``K_ij = 1/(1 + (i − j)²)``: the convolution ``A K`` along the bin axis is done once per image,
then each offset costs one dot product per pixel. ASM needs the L×L GLCM, built per offset as a
batched matrix product ``A_srcᵀ A_dst`` of the (N, pairs, L) soft-assignment maps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

FEATURES: tuple[str, ...] = ("contrast", "homogeneity", "correlation", "asm")
CORRELATION_EPS = 1e-10  # bin-index² units; makes correlation 1 (not 0/0) for a degenerate GLCM

Offset = tuple[int, int]


def glcm_offsets(distances: Iterable[float], angles: Iterable[float]) -> list[Offset]:
    """``(dr, dc)`` pixel offsets, distances outer and angles (degrees) inner, scikit-image convention:
    ``(round(d·sin θ), round(d·cos θ))``."""
    out: list[Offset] = []
    for d in distances:
        for a in angles:
            t = math.radians(float(a))
            out.append((round(float(d) * math.sin(t)), round(float(d) * math.cos(t))))
    return out


def _check_image(x: torch.Tensor, offsets: Sequence[Offset]) -> None:
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"expected an image batch of shape (N, 1, H, W), got {tuple(x.shape)}")
    h, w = x.shape[-2:]
    for dr, dc in offsets:
        if abs(dr) >= h or abs(dc) >= w:
            raise ValueError(f"offset {(dr, dc)} leaves no pixel pair inside a {h}x{w} image")


def bin_centres(levels: int, value_range: tuple[float, float], *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> torch.Tensor:
    """The ``L`` evenly spaced bin centres over ``value_range`` (both ends included)."""
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range must be (lo, hi) with hi > lo, got {value_range}")
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    return torch.linspace(lo, hi, levels, dtype=dtype, device=device)


def default_sigma(levels: int, value_range: tuple[float, float]) -> float:
    """One bin spacing, ``(hi − lo)/(L − 1)``: the default soft-assignment width."""
    return (float(value_range[1]) - float(value_range[0])) / (levels - 1)


def soft_assign(x: torch.Tensor, levels: int, sigma: float | None, value_range: tuple[float, float],
                normalize: bool = True) -> torch.Tensor:
    """Soft bin weights ``a_k(x)`` of every pixel: ``(N, 1, H, W)`` → ``(N, H, W, L)``."""
    centres = bin_centres(levels, value_range, dtype=x.dtype, device=x.device)  # validates the range
    sigma = default_sigma(levels, value_range) if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    logits = -((x[:, 0, :, :, None] - centres) ** 2) / (2.0 * sigma * sigma)
    return torch.softmax(logits, dim=-1) if normalize else torch.exp(logits)


def _pair_slices(h: int, w: int, offset: Offset) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Row/column slices of the first and second pixel of every in-image pair at ``offset``."""
    dr, dc = offset
    r0, r1 = max(0, -dr), h - max(0, dr)
    c0, c1 = max(0, -dc), w - max(0, dc)
    return (slice(r0, r1), slice(c0, c1)), (slice(r0 + dr, r1 + dr), slice(c0 + dc, c1 + dc))


def _pair_sum(a: torch.Tensor, b: torch.Tensor, offset: Offset) -> torch.Tensor:
    """``Σ_p a[..., p] · b[..., p + δ]`` over in-image pairs, for maps of shape (N, H, W, K) → (N, K)."""
    (rs, cs), (rd, cd) = _pair_slices(a.shape[1], a.shape[2], offset)
    return (a[:, rs, cs] * b[:, rd, cd]).sum(dim=(1, 2))


def _cooccurrence(a: torch.Tensor, offset: Offset) -> torch.Tensor:
    """Unsymmetrised, unnormalised ``G = Σ_p a(x_p) a(x_{p+δ})ᵀ`` as a batched matmul: (N, L, L)."""
    (rs, cs), (rd, cd) = _pair_slices(a.shape[1], a.shape[2], offset)
    n, levels = a.shape[0], a.shape[-1]
    src = a[:, rs, cs].reshape(n, -1, levels)
    dst = a[:, rd, cd].reshape(n, -1, levels)
    return torch.bmm(src.transpose(1, 2), dst)


def _symmetric_normalised(g: torch.Tensor) -> torch.Tensor:
    p = g + g.transpose(-1, -2)
    return p / p.sum(dim=(-1, -2), keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)


def soft_glcm(
    x: torch.Tensor,
    levels: int = 256,
    distances: Sequence[float] = (1,),
    angles: Sequence[float] = (0,),
    sigma: float | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    *,
    normalize: bool = True,
    offsets: Sequence[Offset] | None = None,
) -> torch.Tensor:
    """Symmetric, normalised soft GLCMs of ``x`` (N, 1, H, W) → ``(N, n_offsets, L, L)``.

    Offsets are ``glcm_offsets(distances, angles)`` (distances outer, angles inner, degrees,
    scikit-image convention), or the explicit ``(dr, dc)`` list ``offsets`` when given. Each matrix sums
    to 1. Memory is O(N·H·W·L + N·L²) per offset; see the module docstring for the definitions.
    """
    offs = list(offsets) if offsets is not None else glcm_offsets(distances, angles)
    _check_image(x, offs)
    a = soft_assign(x, levels, sigma, value_range, normalize)
    return torch.stack([_symmetric_normalised(_cooccurrence(a, o)) for o in offs], dim=1)


def level_scale(levels: int, reference_levels: int | None) -> float:
    """``s = (R − 1)/(L − 1)``: one bin of an L-level GLCM in bins of an R-level one (1 when R is None)."""
    if reference_levels is None:
        return 1.0
    if reference_levels < 2:
        raise ValueError(f"reference_levels must be >= 2, got {reference_levels}")
    return (reference_levels - 1) / (levels - 1)


def haralick_features(glcm: torch.Tensor, eps: float = CORRELATION_EPS, *,
                      reference_levels: int | None = None) -> dict[str, torch.Tensor]:
    """The four Haralick features of normalised GLCMs ``(N, n, L, L)`` → dict of ``(N, n)`` tensors.

    Keys ``contrast``, ``homogeneity``, ``correlation``, ``asm``, with scikit-image's ``graycoprops``
    definitions (module docstring). Correlation is ``(cov + ε)/√(σ_i²σ_j² + ε²)``: equal to
    scikit-image's value up to O(ε) and exactly 1 for a constant image, with finite gradients.
    ``reference_levels = R`` puts contrast and homogeneity on the R-level scale (module docstring:
    gray-level differences times ``(R − 1)/(L − 1)``); ``None`` keeps bin units.
    """
    levels = glcm.shape[-1]
    scale = level_scale(levels, reference_levels)
    idx = torch.arange(levels, dtype=glcm.dtype, device=glcm.device)
    i, j = idx[:, None], idx[None, :]
    d2 = (scale * (i - j)) ** 2
    mu_i = (glcm * i).sum(dim=(-1, -2), keepdim=True)
    mu_j = (glcm * j).sum(dim=(-1, -2), keepdim=True)
    di, dj = i - mu_i, j - mu_j
    var_i = (glcm * di * di).sum(dim=(-1, -2))
    var_j = (glcm * dj * dj).sum(dim=(-1, -2))
    cov = (glcm * di * dj).sum(dim=(-1, -2))
    return {
        "contrast": (glcm * d2).sum(dim=(-1, -2)),
        "homogeneity": (glcm / (1.0 + d2)).sum(dim=(-1, -2)),
        "correlation": (cov + eps) / torch.sqrt(var_i * var_j + eps * eps),
        "asm": (glcm * glcm).sum(dim=(-1, -2)),
    }


def _check_features(features: Iterable[str]) -> tuple[str, ...]:
    feats = tuple(features)
    bad = [f for f in feats if f not in FEATURES]
    if bad or not feats:
        raise ValueError(f"unknown Haralick feature(s) {bad or '(none given)'}; choose from {', '.join(FEATURES)}")
    return feats


def glcm_features(
    x: torch.Tensor,
    offsets: Sequence[Offset],
    features: Iterable[str] = FEATURES,
    levels: int = 256,
    sigma: float | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    *,
    normalize: bool = True,
    eps: float = CORRELATION_EPS,
    reference_levels: int | None = None,
) -> dict[str, torch.Tensor]:
    """``haralick_features(soft_glcm(x, ...), reference_levels=...)`` for the requested features, without
    the L×L matrices where they are not needed (module docstring). ``x`` (N, 1, H, W) → dict of
    ``(N, len(offsets))``; ``reference_levels = R`` gives contrast and homogeneity on the R-level scale."""
    feats = _check_features(features)
    scale = level_scale(levels, reference_levels)
    offsets = list(offsets)
    _check_image(x, offsets)
    out: dict[str, list[torch.Tensor]] = {f: [] for f in feats}
    moments = None
    if any(f in feats for f in ("contrast", "correlation", "homogeneity")):
        moments = _shifted_moments(x, levels, sigma, value_range, normalize).permute(0, 3, 1, 2).contiguous()
    a = soft_assign(x, levels, sigma, value_range, normalize) if {"homogeneity", "asm"} & set(feats) else None
    smoothed = a @ _homogeneity_kernel(levels, a, scale) if a is not None and "homogeneity" in feats else None
    for off in offsets:
        if moments is not None:
            sums = _moment_pair_sums(moments, off)
            z = sums["00"]
            if "contrast" in feats:
                out["contrast"].append((scale * scale) * (sums["20"] - 2.0 * sums["11"] + sums["02"]) / z)
            if "correlation" in feats:
                mu = (sums["10"] + sums["01"]) / (2.0 * z)
                var = (sums["20"] + sums["02"]) / (2.0 * z) - mu * mu
                cov = sums["11"] / z - mu * mu
                out["correlation"].append((cov + eps) / torch.sqrt(var * var + eps * eps))
            if "homogeneity" in feats:
                assert a is not None and smoothed is not None
                out["homogeneity"].append(_pair_sum(a, smoothed, off).sum(-1) / z)
        if "asm" in feats:
            assert a is not None
            p = _symmetric_normalised(_cooccurrence(a, off))
            out["asm"].append((p * p).sum(dim=(-1, -2)))
    return {f: torch.stack(v, dim=1) for f, v in out.items()}


def _homogeneity_kernel(levels: int, like: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    idx = torch.arange(levels, dtype=like.dtype, device=like.device)
    return 1.0 / (1.0 + (scale * (idx[:, None] - idx[None, :])) ** 2)


TRUNCATE = 9.0  # soft weights beyond 9σ from a pixel's value (relative size < e^-40) are skipped


def _window_weights(x: torch.Tensor, levels: int, sigma: float, lo: float, hi: float, normalize: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft weights of the bins within ``TRUNCATE·σ`` of each pixel's nearest bin: (N, 1, H, W) →
    (weights, bin indices), both (N, H, W, 2w+1) (or (N, H, W, L), all bins, when that window would
    cover them all, e.g. the paper's σ of a quarter of the range); bins outside [0, L) get weight 0.
    Equal to :func:`soft_assign` restricted to those bins (renormalised over them when ``normalize``)."""
    step = (hi - lo) / (levels - 1)
    half = math.ceil(TRUNCATE * sigma / step) + 1
    u = (x[:, 0] - lo) / step  # continuous bin coordinate, (N, H, W)
    if 2 * half + 1 >= levels:
        idx = torch.arange(levels, dtype=x.dtype, device=x.device).expand(*u.shape, levels)
        logits = (u[..., None] - idx) ** 2 * (-(step * step) / (2.0 * sigma * sigma))
    else:
        nearest = torch.round(u.detach()).clamp(0, levels - 1)
        idx = nearest[..., None] + torch.arange(-half, half + 1, dtype=x.dtype, device=x.device)
        logits = (u[..., None] - idx) ** 2 * (-(step * step) / (2.0 * sigma * sigma))
        logits = logits.masked_fill((idx < 0) | (idx > levels - 1), -math.inf)
    weights = torch.softmax(logits, dim=-1) if normalize else torch.exp(logits)
    return weights, idx


class _SoftMoments(torch.autograd.Function):
    """Per-pixel moments ``S_k(x) = Σ_i (i − c)^k a_i(x)``, k = 0, 1, 2, with a closed-form backward.

    S_k depends on the pixel value only, and with logits ``ℓ_i = −(x − b_i)²/(2σ²)``,
    ``∂ℓ_i/∂x = (b_i − x)/σ²`` is linear in i (``b_i = lo + iΔ``). Hence

    * unnormalised weights: ``dS_k/dx = ((lo + cΔ − x)·S_k + Δ·S_{k+1}) / σ²``
    * softmax weights (S0 ≡ 1): ``dS_k/dx = Δ·(S_{k+1} − S_k·S_1) / σ²``

    so the backward pass needs S_3 but no per-bin tensor. The forward sums only the bins within
    ``TRUNCATE·σ`` of each pixel (all L bins when σ is wide), so it costs O(N·H·W·min(L, 18σ/Δ)).
    """

    @staticmethod
    def forward(ctx, x, centre, levels, sigma, lo, hi, normalize):  # type: ignore[override]
        weights, idx = _window_weights(x, levels, sigma, lo, hi, normalize)
        i = idx - centre[:, None, None, None]
        wi = weights * i
        wii = wi * i
        s = torch.stack([weights.sum(-1), wi.sum(-1), wii.sum(-1), (wii * i).sum(-1)], dim=-1)  # (N, H, W, 4)
        ctx.save_for_backward(x, s, centre)
        ctx.consts = (levels, sigma, lo, hi, normalize)
        return s[..., :3]

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, s, centre = ctx.saved_tensors
        levels, sigma, lo, hi, normalize = ctx.consts
        step = (hi - lo) / (levels - 1)
        s_k, s_next = s[..., :3], s[..., 1:]
        if normalize:
            ds = step * (s_next - s_k * s[..., 1:2]) / (sigma * sigma)
        else:
            u = (lo + centre[:, None, None, None] * step) - x[:, 0, :, :, None]
            ds = (u * s_k + step * s_next) / (sigma * sigma)
        return (grad * ds).sum(-1)[:, None], None, None, None, None, None, None


def _shifted_moments(x: torch.Tensor, levels: int, sigma: float | None, value_range: tuple[float, float],
                     normalize: bool) -> torch.Tensor:
    """Per-pixel ``[S0, S1, S2]`` of the soft weights, with bin indices shifted by a per-image constant
    ``c`` (the bin of the image's mean value, detached): (N, 1, H, W) → (N, H, W, 3). The shift cancels
    exactly in every feature; it only keeps float32 sums of (i − c)^k well conditioned."""
    sigma = default_sigma(levels, value_range) if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    lo, hi = float(value_range[0]), float(value_range[1])
    with torch.no_grad():
        centre = ((x.mean(dim=(1, 2, 3)) - lo) / (hi - lo) * (levels - 1)).clamp(0, levels - 1).round()
    return _SoftMoments.apply(x, centre, levels, sigma, lo, hi, normalize)


def _moment_pair_sums(m: torch.Tensor, offset: Offset) -> dict[str, torch.Tensor]:
    """``"kl" → Σ_p S_k(x_p) S_l(x_{p+δ})`` for moment maps (N, 3, H, W), each (N,)."""
    (rs, cs), (rd, cd) = _pair_slices(m.shape[2], m.shape[3], offset)
    src, dst = m[:, :, rs, cs], m[:, :, rd, cd]  # (N, 3, h', w')
    pairs = {"00": (0, 0), "10": (1, 0), "01": (0, 1), "11": (1, 1), "20": (2, 0), "02": (0, 2)}
    return {k: (src[:, i] * dst[:, j]).sum(dim=(1, 2)) for k, (i, j) in pairs.items()}


__all__ = [
    "FEATURES",
    "bin_centres",
    "default_sigma",
    "glcm_features",
    "glcm_offsets",
    "haralick_features",
    "level_scale",
    "soft_assign",
    "soft_glcm",
]
