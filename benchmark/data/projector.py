"""A batched 2-D CT projector in PyTorch: parallel and equiangular fan-beam forward projection and
filtered back-projection (FBP), on CPU and GPU with the same code.

Why hand-written: scikit-image's ``radon``/``iradon`` are parallel-beam only, single-image and
CPU-only; ASTRA, TIGRE, ODL and torch-radon are not installable under this project's dependency set
(CPU wheel of torch, PyPI only, no CUDA toolkit). Nothing else offers a batched fan-beam forward
projector with FBP that runs on CPU and GPU, so this module implements the textbook algorithms:

* **Forward projection** is ray-driven: each ray is sampled at equal steps ``Δs`` (one image pixel
  by default) with bilinear interpolation (``torch.nn.functional.grid_sample``), and the line
  integral is ``Σ f(s_k) Δs``. Batched slices travel as *channels* of one ``grid_sample`` call, so
  the interpolation indices are computed once for the whole batch.
* **FBP** follows Kak & Slaney, *Principles of Computerized Tomographic Imaging* (IEEE Press 1988),
  §3.3 (parallel, eq. 61 band-limited ramp computed in the spatial domain, which removes the DC
  bias of a sampled |ω| ramp) and §3.4.2 (equiangular fan beam: cosine pre-weighting
  ``D cos γ``, kernel ``g(γ) = ½ (γ / sin γ)² h(γ)``, back-projection weight ``1/L²``), with an
  optional Hann apodisation ``½ (1 + cos 2πf)`` (f in cycles/sample, 0 at the Nyquist frequency).

Coordinates: image arrays are ``(..., H, W)`` indexed ``[row, col]``; the physical frame has its
origin at the geometric centre of the image, ``x = (col − (W−1)/2)·pixel_mm`` and
``y = ((H−1)/2 − row)·pixel_mm`` (y up). A parallel view at angle θ measures
``p(θ, t) = ∫ f(t cos θ − s sin θ, t sin θ + s cos θ) ds`` (the convention of
``skimage.transform.radon``, so for odd image sizes the two agree sample for sample). A fan view at
source angle β has its source at ``D (cos β, sin β)``; channel ``c`` sees the ray at fan angle
``γ_c = (c − (C−1)/2) Δγ`` from the central ray (positive = counter-clockwise).

Sinograms are ``(B, V, C)``: batch, views, channels. Line integrals are in the units of the image
times mm (μ in 1/mm gives dimensionless p); FBP returns the image units again.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F

from benchmark.errors import UserError

GeometryKind = Literal["fan", "parallel"]

# Clinical-like third-generation geometry (a Siemens SOMATOM Definition class scanner).
CLINICAL_SID_MM = 595.0
CLINICAL_SDD_MM = 1085.6
CLINICAL_CHANNELS = 736
CLINICAL_IMAGE_SIZE = 512

# Grid points per grid_sample call when a geometry's grid is too large to cache.
_MAX_SAMPLES_PER_CHUNK = 8_000_000
# Ray and pixel grids of a geometry are cached up to this size (bytes), per cache entry.
PLAN_CACHE_BYTES = 768 * 2**20


@dataclass(frozen=True)
class Geometry:
    """Acquisition geometry of one 2-D scan.

    ``image_size`` × ``image_size`` pixels of ``pixel_mm`` span the field of view; the scanned object
    must lie in the inscribed circle of radius ``image_size · pixel_mm / 2`` (as ``circle=True`` in
    scikit-image). ``views`` are equally spaced over 360° (fan) or 180° (parallel), starting at
    ``angle_offset_rad``. Parallel channels are spaced ``channel_mm`` apart at the isocentre; fan
    channels are equiangular, spaced ``fan_spacing_rad``, with source–isocentre distance ``sid_mm``
    and source–detector distance ``sdd_mm`` (the latter only sets the physical channel width).
    """

    kind: GeometryKind
    views: int
    channels: int
    image_size: int
    pixel_mm: float
    channel_mm: float = 1.0
    sid_mm: float = CLINICAL_SID_MM
    sdd_mm: float = CLINICAL_SDD_MM
    fan_spacing_rad: float = 0.0
    angle_offset_rad: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("fan", "parallel"):
            raise UserError(f"{self.kind!r} is not a geometry; use 'fan' or 'parallel'", field="geometry")
        if self.views < 1 or self.channels < 2 or self.image_size < 2:
            raise UserError(
                f"views={self.views}, channels={self.channels}, image_size={self.image_size}: need ≥1, ≥2, ≥2",
                field="geometry",
            )
        if self.kind == "fan":
            if self.fan_spacing_rad <= 0:
                raise UserError("a fan-beam geometry needs fan_spacing_rad > 0", field="geometry.fan_spacing_rad")
            if self.fov_radius_mm >= self.sid_mm:
                raise UserError(
                    f"field of view radius {self.fov_radius_mm:.1f} mm must be inside the source circle "
                    f"(sid_mm = {self.sid_mm})",
                    field="geometry.sid_mm",
                )

    @property
    def fov_radius_mm(self) -> float:
        return self.image_size * self.pixel_mm / 2

    @property
    def arc(self) -> float:
        """Angular range covered by the views: 2π (fan, full scan) or π (parallel)."""
        return 2 * math.pi if self.kind == "fan" else math.pi

    def angles(self, device: torch.device | str | None = None) -> torch.Tensor:
        """View angles in radians, ``(V,)`` float64."""
        return self.angle_offset_rad + torch.arange(self.views, dtype=torch.float64, device=device) * (
            self.arc / self.views
        )

    def channel_positions(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Channel coordinates ``(C,)`` float64: ``t`` in mm (parallel) or ``γ`` in radians (fan)."""
        c = torch.arange(self.channels, dtype=torch.float64, device=device) - (self.channels - 1) / 2
        return c * (self.channel_mm if self.kind == "parallel" else self.fan_spacing_rad)

    def with_views(self, views: int) -> Geometry:
        return replace(self, views=views)

    def with_image(self, image_size: int, pixel_mm: float) -> Geometry:
        """The same scanner seeing a different image grid (e.g. the 2× finer forward grid)."""
        return replace(self, image_size=image_size, pixel_mm=pixel_mm)

    def subsample_views(self, factor: int) -> Geometry:
        """Every ``factor``-th view of this geometry (exactly a subset of its angles)."""
        if factor < 1 or self.views % factor:
            raise ValueError(f"{self.views} views cannot be subsampled by {factor}")
        return replace(self, views=self.views // factor)


def clinical_geometry(
    kind: GeometryKind, image_size: int, fov_mm: float, views: int, *, channels: int | None = None
) -> Geometry:
    """A clinical-like geometry scaled to an ``image_size`` grid over a ``fov_mm`` field of view.

    Fan beam: source–isocentre 595 mm, source–detector 1085.6 mm, and ``736 · image_size / 512``
    equiangular channels covering the fan ``2 asin(r_fov / 595)`` (so 736 channels at 512², about
    0.7 mm at the isocentre for a 500 mm field of view, as on the clinical scanner; coarser grids get
    proportionally fewer, wider channels so small sizes stay fast). Parallel beam: the same number of
    channels spread over the field-of-view diameter.
    """
    n_ch = channels or max(16, 2 * round(CLINICAL_CHANNELS * image_size / CLINICAL_IMAGE_SIZE / 2))
    pixel = fov_mm / image_size
    r = fov_mm / 2
    if kind == "fan":
        fan = 2 * math.asin(r / CLINICAL_SID_MM) * 1.02  # 2 % margin so the whole circle is seen
        return Geometry("fan", views, n_ch, image_size, pixel, fan_spacing_rad=fan / n_ch)
    return Geometry("parallel", views, n_ch, image_size, pixel, channel_mm=2 * r * 1.02 / n_ch)


# ----------------------------------------------------------------------------------------------
# Forward projection
# ----------------------------------------------------------------------------------------------


def _ray_frames(geom: Geometry, angles: torch.Tensor, channels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per ray (V, C): a point on the ray ``(px, py)``, its unit direction ``(dx, dy)`` and the ray
    parameter ``s0`` of the point closest to the isocentre (float64, mm)."""
    a = angles[:, None]
    if geom.kind == "parallel":
        t = channels[None, :]
        px, py = t * torch.cos(a), t * torch.sin(a)
        dx, dy = -torch.sin(a).expand_as(px), torch.cos(a).expand_as(px)
        return px, py, dx, dy, torch.zeros_like(px)
    sx, sy = geom.sid_mm * torch.cos(a), geom.sid_mm * torch.sin(a)
    phi = a + math.pi + channels[None, :]  # central ray points from the source to the origin
    dx, dy = torch.cos(phi), torch.sin(phi)
    s0 = -(sx * dx + sy * dy)  # closest approach to the origin along the ray
    return sx.expand_as(dx), sy.expand_as(dx), dx, dy, s0


def _to_grid(x: torch.Tensor, y: torch.Tensor, geom: Geometry) -> torch.Tensor:
    """Physical (x, y) in mm → grid_sample coordinates (align_corners=True, y up → row down)."""
    half = (geom.image_size - 1) / 2 * geom.pixel_mm
    return torch.stack((x / half, -y / half), dim=-1)


def _plan_fits(n_floats: int) -> bool:
    return n_floats * 4 <= PLAN_CACHE_BYTES


@functools.lru_cache(maxsize=6)
def _forward_plan(geom: Geometry, device: torch.device, step_mm: float) -> torch.Tensor:
    """Sample positions of every ray, ``(V, C, S, 2)`` float32 grid_sample coordinates."""
    r = geom.fov_radius_mm
    n_s = math.ceil(2 * r / step_mm)
    s_rel = (torch.arange(n_s, dtype=torch.float64, device=device) - (n_s - 1) / 2) * step_mm
    px, py, dx, dy, s0 = _ray_frames(geom, geom.angles(device), geom.channel_positions(device))
    half = (geom.image_size - 1) / 2 * geom.pixel_mm
    # (x0 + s·dx) / half with s = s0 + s_rel, computed in float32 once per geometry
    bx = ((px + s0 * dx) / half).float()[..., None]
    by = (-(py + s0 * dy) / half).float()[..., None]
    sr = (s_rel / half).float()
    grid = torch.empty((*bx.shape[:2], n_s, 2), dtype=torch.float32, device=device)
    torch.addcmul(bx, dx.float()[..., None], sr, out=grid[..., 0])
    torch.addcmul(by, -dy.float()[..., None], sr, out=grid[..., 1])
    return grid


def _sample_rays(imgs: torch.Tensor, grid: torch.Tensor, step: float) -> torch.Tensor:
    """Σ_s f(ray points) · step for ``imgs`` (B, H, W) and a ray grid (v, C, S, 2) → (B, v, C).

    One single-channel ``grid_sample`` per image: on CPU its kernel vectorises over grid points,
    and one channel keeps the image in cache (several channels at once are slower per sample).
    """
    v, c, n_s, _ = grid.shape
    g = grid.reshape(1, v * c, n_s, 2).to(imgs.dtype)
    out = torch.empty((imgs.shape[0], v, c), dtype=imgs.dtype, device=imgs.device)
    for i in range(imgs.shape[0]):
        smp = F.grid_sample(imgs[i][None, None], g, mode="bilinear", padding_mode="zeros", align_corners=True)
        out[i] = smp.sum(-1).reshape(v, c) * step
    return out


def forward_project(images: torch.Tensor, geom: Geometry, *, step_mm: float | None = None) -> torch.Tensor:
    """Line integrals of ``images`` ``(B, H, W)`` (or ``(H, W)``) → sinogram ``(B, V, C)``.

    Each ray is sampled every ``step_mm`` (default: one pixel) over the chord of the field-of-view
    circle it crosses, with bilinear interpolation and zero outside the image; the integral is the
    sample sum times the step. Runs on ``images.device`` in ``images.dtype``. The ray grid of a
    geometry is computed once and cached (up to ``PLAN_CACHE_BYTES``), so later calls with the same
    geometry only interpolate and sum.
    """
    squeeze = images.ndim == 2
    imgs = images[None] if squeeze else images
    if imgs.ndim != 3 or imgs.shape[-1] != geom.image_size or imgs.shape[-2] != geom.image_size:
        raise ValueError(f"images {tuple(images.shape)} do not match the geometry's {geom.image_size}² grid")
    step = float(step_mm or geom.pixel_mm)
    n_s = math.ceil(2 * geom.fov_radius_mm / step)
    if _plan_fits(geom.views * geom.channels * n_s * 2):
        sino = _sample_rays(imgs, _forward_plan(geom, imgs.device, step), step)
    else:  # too large to keep: build the grid view-chunk by view-chunk
        chunk = max(1, _MAX_SAMPLES_PER_CHUNK // (geom.channels * n_s))
        parts = []
        for v0 in range(0, geom.views, chunk):
            sub = replace(geom, views=min(chunk, geom.views - v0),
                          angle_offset_rad=geom.angle_offset_rad + v0 * geom.arc / geom.views)
            parts.append(_sample_rays(imgs, _forward_plan.__wrapped__(sub, imgs.device, step), step))
        sino = torch.cat(parts, dim=1)
    return sino[0] if squeeze else sino


# ----------------------------------------------------------------------------------------------
# Filtered back-projection
# ----------------------------------------------------------------------------------------------

FilterName = Literal["ramp", "hann"]


def _padded_size(n: int) -> int:
    return max(64, 1 << math.ceil(math.log2(2 * n)))


def ramp_kernel(geom: Geometry, padded: int, filter_name: FilterName, device: torch.device, dtype: torch.dtype):
    """Frequency response ``(padded,)`` of the discrete ramp (Kak & Slaney eq. 61 / fan kernel g),
    already multiplied by the sample spacing and the apodisation window."""
    n = torch.arange(padded, device=device, dtype=torch.float64)
    n = torch.where(n < padded // 2, n, n - padded)  # circular lag order
    odd = (n.remainder(2) == 1).to(torch.float64)
    h = torch.zeros(padded, device=device, dtype=torch.float64)
    if geom.kind == "parallel":
        tau = geom.channel_mm
        h[0] = 1 / (4 * tau**2)
        h = h + odd * (-1 / (math.pi**2 * tau**2 * torch.where(n == 0, 1.0, n) ** 2))
        spacing = tau
    else:
        alpha = geom.fan_spacing_rad
        h[0] = 1 / (8 * alpha**2)
        sin = torch.sin(n * alpha)
        h = h + odd * (-1 / (2 * math.pi**2 * torch.where(n == 0, 1.0, sin) ** 2))
        spacing = alpha
    resp = torch.fft.fft(h).real * spacing
    if filter_name == "hann":
        f = torch.fft.fftfreq(padded, device=device, dtype=torch.float64)
        resp = resp * 0.5 * (1 + torch.cos(2 * math.pi * f))
    elif filter_name != "ramp":
        raise UserError(f"unknown FBP filter {filter_name!r}; use 'ramp' or 'hann'", field="filter")
    return resp.to(dtype)


def filter_sinogram(sino: torch.Tensor, geom: Geometry, filter_name: FilterName = "hann") -> torch.Tensor:
    """Ramp-filter each view of ``(B, V, C)`` (fan: after the ``D cos γ`` pre-weighting)."""
    c = sino.shape[-1]
    if geom.kind == "fan":
        gam = geom.channel_positions(sino.device).to(sino.dtype)
        sino = sino * (geom.sid_mm * torch.cos(gam))
    padded = _padded_size(c)
    resp = ramp_kernel(geom, padded, filter_name, sino.device, sino.dtype)
    spec = torch.fft.rfft(sino, n=padded, dim=-1) * resp[: padded // 2 + 1]
    return torch.fft.irfft(spec, n=padded, dim=-1)[..., :c]


def _pixel_coords(geom: Geometry, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    idx = (torch.arange(geom.image_size, dtype=torch.float64, device=device) - (geom.image_size - 1) / 2) * geom.pixel_mm
    y, x = torch.meshgrid(-idx, idx, indexing="ij")
    return x.reshape(-1), y.reshape(-1)


def _bp_coords(geom: Geometry, angles: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               weighted: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """For views ``angles`` (v,) and pixels (P,): the channel index ``u`` (v, P) each pixel projects
    to and, for the fan beam, the distance weight ``1/L²`` (v, P); float64."""
    a = angles[:, None]
    ch0 = -(geom.channels - 1) / 2
    if geom.kind == "parallel":
        return (x * torch.cos(a) + y * torch.sin(a)) / geom.channel_mm - ch0, None
    sx, sy = geom.sid_mm * torch.cos(a), geom.sid_mm * torch.sin(a)
    vx, vy = x - sx, y - sy
    cx, cy = -torch.cos(a), -torch.sin(a)  # central ray: from the source towards the origin
    gam = torch.atan2(cx * vy - cy * vx, cx * vx + cy * vy)
    return gam / geom.fan_spacing_rad - ch0, (1.0 / (vx * vx + vy * vy) if weighted else None)


def _bp_grid(geom: Geometry, angles: torch.Tensor, first_view: int, weighted: bool,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """grid_sample coordinates ``(v, P, 2)`` into a sinogram image ``(V, C)`` (x: channel, y: view
    row, exactly on a row so the interpolation is linear along channels only) and weights."""
    x, y = _pixel_coords(geom, device)
    u, w = _bp_coords(geom, angles, x, y, weighted)
    rows = torch.arange(first_view, first_view + angles.numel(), dtype=torch.float64, device=device)
    gy = (rows / max(geom.views - 1, 1) * 2 - 1)[:, None].expand_as(u)
    grid = torch.stack(((u / (geom.channels - 1) * 2 - 1), gy), dim=-1).float()
    return grid, (w.float() if w is not None else None)


@functools.lru_cache(maxsize=6)
def _bp_plan(geom: Geometry, device: torch.device, weighted: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    return _bp_grid(geom, geom.angles(device), 0, weighted, device)


def _bp_apply(filtered: torch.Tensor, grid: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Σ over the grid's views of the interpolated filtered values (× weights): (B, V, C) → (B, P)."""
    g = grid[None].to(filtered.dtype)
    out = torch.empty((filtered.shape[0], grid.shape[1]), dtype=filtered.dtype, device=filtered.device)
    for i in range(filtered.shape[0]):
        vals = F.grid_sample(filtered[i][None, None], g, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0]
        out[i] = (vals * w.to(vals.dtype)).sum(0) if w is not None else vals.sum(0)
    return out


def backproject(filtered: torch.Tensor, geom: Geometry, *, weighted: bool = True) -> torch.Tensor:
    """Back-project filtered views ``(B, V, C)`` onto the geometry's image grid → ``(B, H, W)``.

    Pixel-driven: each pixel takes the linearly interpolated value of the channel it projects to in
    every view (zero off the detector). Fan beam applies the ``1/L²`` distance weight (``weighted``)
    and the view spacing ``Δβ = 2π/V``; parallel beam the factor ``π/V``. Pixels outside the
    field-of-view circle are zero. The pixel grid of a geometry is cached like the forward rays.
    """
    b, n_v, _n_c = filtered.shape
    dev = filtered.device
    n_pix = geom.image_size**2
    use_w = weighted and geom.kind == "fan"
    if _plan_fits(n_v * n_pix * (3 if use_w else 2)):
        acc = _bp_apply(filtered, *_bp_plan(geom, dev, use_w))
    else:
        chunk = max(1, _MAX_SAMPLES_PER_CHUNK // n_pix)
        ang = geom.angles(dev)
        acc = torch.zeros((b, n_pix), dtype=filtered.dtype, device=dev)
        for v0 in range(0, n_v, chunk):
            grid, w = _bp_grid(geom, ang[v0 : v0 + chunk], v0, use_w, dev)
            acc += _bp_apply(filtered, grid, w)
    scale = (2 * math.pi / n_v) if geom.kind == "fan" else (math.pi / n_v)
    img = (acc * scale).reshape(b, geom.image_size, geom.image_size)
    x, y = _pixel_coords(geom, dev)
    outside = ((x * x + y * y) > geom.fov_radius_mm**2).reshape(geom.image_size, geom.image_size)
    img[:, outside] = 0
    return img


def fbp(sino: torch.Tensor, geom: Geometry, filter_name: FilterName = "hann") -> torch.Tensor:
    """Filtered back-projection of ``(B, V, C)`` (or ``(V, C)``) → ``(B, H, W)`` on ``geom``'s grid."""
    squeeze = sino.ndim == 2
    s = sino[None] if squeeze else sino
    if s.shape[-2:] != (geom.views, geom.channels):
        raise ValueError(f"sinogram {tuple(sino.shape)} does not match {geom.views} views × {geom.channels} channels")
    img = backproject(filter_sinogram(s, geom, filter_name), geom)
    return img[0] if squeeze else img
