"""Low-dose CT physics: HU ↔ attenuation, the photon-count noise model and reconstruction.

Noise model (Zeng et al., "A simple low-dose x-ray CT simulation from high-dose scan",
Med. Phys. 42(5), 2015; the same model generates LoDoPaB-CT): for a ray with line integral ``p``,

    N = Poisson(a · I0 · b(γ) · exp(−p)) + Normal(0, σe²),   N ← max(N, 1),
    p̂ = −ln(N / (a · I0 · b(γ)))

with ``a`` the dose fraction, ``I0`` the unattenuated photons per ray **per view** at full dose,
``b(γ)`` the bowtie-filter transmission at fan angle γ and ``σe²`` the electronic-noise variance
(counts²). Dose is per view: with the photons per view fixed, 360 views carry half the total dose of
720 views, so the FBP noise variance scales like ``1 / (a · views)``.

Images are simulated on a 2× finer grid than the output (forward projection of the fine phantom;
reconstruction on the output grid), which avoids the "inverse crime" of reconstructing with the
same discretisation that generated the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from benchmark.data.projector import Geometry, fbp, forward_project

MU_WATER_PER_MM = 0.0192  # linear attenuation of water at ~70 keV effective energy, 1/mm
HU_AIR = -1000.0
# Stored images are HU on a grid of 1/16 HU, as a scanner's DICOM stores integer HU (finer, so that the
# grid's own noise, std 1/16/sqrt(12) = 0.018 HU, is ~150x below the smallest noise std of any condition
# and 1/100 of a 2 HU low-contrast step). The simulator computes in float64 (forward projection, FBP);
# different CPUs then differ by ~1e-10 HU, and rounding to the grid makes the stored float32 values the same
# bytes on every host unless a value falls within that distance of a grid midpoint (~1e-8 per pixel).
# float32 holds every multiple of 1/16 below 2^20 HU exactly.
HU_QUANTUM = 1.0 / 16.0


ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def quantize_hu(hu: ArrayT) -> ArrayT:
    """Round HU to the storage grid ``HU_QUANTUM`` (half to even), same type and dtype as ``hu``."""
    if isinstance(hu, torch.Tensor):
        return torch.round(hu / HU_QUANTUM) * HU_QUANTUM
    return np.round(hu / HU_QUANTUM) * HU_QUANTUM


def hu_to_mu(hu: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """HU → linear attenuation in 1/mm, ``μ = μ_water (1 + HU/1000)``, clipped at 0 (air)."""
    mu = MU_WATER_PER_MM * (1 + hu / 1000.0)
    return mu.clamp(min=0) if isinstance(mu, torch.Tensor) else np.maximum(mu, 0)


def mu_to_hu(mu: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Linear attenuation in 1/mm → HU, ``HU = 1000 (μ / μ_water − 1)``."""
    return 1000.0 * (mu / MU_WATER_PER_MM - 1)


@dataclass(frozen=True)
class NoiseModel:
    """Photon statistics of one scanner: ``i0`` photons per ray per view at 100 % dose, electronic
    noise variance ``electronic_var`` (counts²), and a bowtie ``b(γ) = exp(−bowtie_strength·(γ/γ_max)²)``
    (transmission 1 at the centre, ``exp(−bowtie_strength)`` at the edge of the fan)."""

    i0: float
    electronic_var: float = 10.0
    bowtie_strength: float = 2.5

    def bowtie(self, geom: Geometry) -> np.ndarray:
        """Transmission ``(C,)`` of the bowtie filter over the channels."""
        pos = geom.channel_positions().numpy()
        rel = pos / np.abs(pos).max()
        return np.exp(-self.bowtie_strength * rel**2)

    def blank_counts(self, geom: Geometry, dose: float) -> np.ndarray:
        """Expected counts without object ``a · I0 · b(γ)``, shape ``(C,)``."""
        return dose * self.i0 * self.bowtie(geom)


def add_noise(sino: np.ndarray, geom: Geometry, model: NoiseModel, dose: float, rng: np.random.Generator) -> np.ndarray:
    """Noisy line integrals ``p̂`` for clean ``sino`` ``(..., V, C)`` at dose fraction ``dose`` (0, 1].

    Deterministic given ``rng``'s state. Returns float32.
    """
    if not 0 < dose <= 1.0 + 1e-9:
        raise ValueError(f"dose fraction must be in (0, 1], got {dose}")
    blank = model.blank_counts(geom, dose)
    expected = blank * np.exp(-sino.astype(np.float64))
    counts = rng.poisson(expected).astype(np.float64)
    if model.electronic_var > 0:
        counts += rng.normal(0.0, math.sqrt(model.electronic_var), size=counts.shape)
    counts = np.maximum(counts, 1.0)
    return (-np.log(counts / blank)).astype(np.float32)


def reconstruct_hu(sino: np.ndarray | torch.Tensor, geom: Geometry, *, filter_name: str = "hann",
                   batch: int = 64, device: str | torch.device = "cpu") -> np.ndarray:
    """FBP of line integrals ``(B, V, C)`` on ``geom``'s grid → HU ``(B, H, W)`` float32 on the
    ``HU_QUANTUM`` grid. Computed in float64 (see ``HU_QUANTUM``).

    Pixels outside the field-of-view circle are set to air (−1000 HU).
    """
    s = sino.double() if isinstance(sino, torch.Tensor) else torch.from_numpy(np.array(sino, dtype=np.float64))
    out = np.empty((s.shape[0], geom.image_size, geom.image_size), dtype=np.float32)
    idx = (torch.arange(geom.image_size, dtype=torch.float32) - (geom.image_size - 1) / 2)
    outside = (idx[:, None] ** 2 + idx[None, :] ** 2) > (geom.image_size / 2) ** 2
    for b0 in range(0, s.shape[0], batch):
        mu = fbp(s[b0 : b0 + batch].to(device), geom, filter_name)  # type: ignore[arg-type]
        hu = quantize_hu((1000.0 * (mu / MU_WATER_PER_MM - 1)).cpu())
        hu[:, outside] = HU_AIR
        out[b0 : b0 + batch] = hu.numpy()  # exact: a multiple of 1/16 HU fits float32
    return out


def project_hu(images_hu: np.ndarray, geom: Geometry, *, batch: int = 256,
               device: str | torch.device = "cpu") -> np.ndarray:
    """Line integrals ``(B, V, C)`` of HU images ``(B, H, W)`` on ``geom``'s grid, computed in float64 and
    stored as float32."""
    out = np.empty((images_hu.shape[0], geom.views, geom.channels), dtype=np.float32)
    for b0 in range(0, images_hu.shape[0], batch):
        mu = hu_to_mu(torch.from_numpy(np.array(images_hu[b0 : b0 + batch], dtype=np.float64)).to(device))
        out[b0 : b0 + batch] = forward_project(mu, geom).cpu().numpy()  # type: ignore[arg-type]
    return out
