"""A batched 2-D CT projector in PyTorch: parallel and equiangular fan-beam forward projection and
filtered back-projection (FBP), on CPU and GPU with the same code.

Why hand-written: scikit-image's ``radon``/``iradon`` are parallel-beam only, single-image and
CPU-only; ASTRA, TIGRE, ODL and torch-radon are not installable under this project's dependency set
(CPU wheel of torch, PyPI only, no CUDA toolkit). Nothing else offers a batched fan-beam forward
projector with FBP that runs on CPU and GPU, so this module implements the textbook algorithms:

* **Forward projection** is ray-driven (Joseph, "An improved algorithm for reprojecting rays through
  pixel images", IEEE TMI 1(3), 1982): each ray meets every pixel line along its dominant axis once,
  interpolates linearly between the two nearest pixel centres there and weighs the sample by the
  chord length. The weights form a sparse matrix that is built once per geometry and applied to a
  whole batch of slices as one sparse × dense product (batched slices are the dense columns).
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

import contextlib
import functools
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Literal

import torch

from benchmark.core.errors import UserError

GeometryKind = Literal["fan", "parallel"]

# Clinical-like third-generation geometry (a Siemens SOMATOM Definition class scanner).
CLINICAL_SID_MM = 595.0
CLINICAL_SDD_MM = 1085.6
CLINICAL_CHANNELS = 736
CLINICAL_IMAGE_SIZE = 512

# Matrix entries per block when a geometry's matrix is too large to cache.
_MAX_ENTRIES_PER_BLOCK = 16_000_000
# Sparse projection / back-projection matrices are cached up to this size (bytes) each on CPU (up to
# 4 forward and 6 back-projection matrices); larger geometries are rebuilt block by block on every
# call. ``LDCT_BENCH_PLAN_CACHE_MB`` overrides it; CUDA devices allow 4× more.
PLAN_CACHE_BYTES = int(os.environ.get("LDCT_BENCH_PLAN_CACHE_MB", "768")) * 2**20


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


def _plan_fits(nnz: int, device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    budget = PLAN_CACHE_BYTES * (4 if device.type == "cuda" else 1)
    return nnz * (4 + dtype.itemsize) <= budget  # value + int32 column index per entry


def _csr(col: torch.Tensor, val: torch.Tensor, n_cols: int) -> torch.Tensor:
    """A CSR matrix with a fixed number of entries per row from ``col``/``val`` ``(rows, k)``."""
    rows, k = col.shape
    crow = torch.arange(0, rows * k + 1, k, dtype=torch.int32, device=col.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the operations used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col.reshape(-1), val.reshape(-1), (rows, n_cols), check_invariants=False)


def _taps_into(frac: torch.Tensor, n: int, stride: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
               col: torch.Tensor, val: torch.Tensor) -> None:
    """Write the two linear-interpolation taps of fractional indices ``frac`` ``(r, k)`` into
    ``col``/``val`` ``(r, 2k)``: flat column ``index·stride + offset`` and weight × ``weight``.
    Taps outside ``[0, n)`` get weight 0 (their index is clamped into range)."""
    k = frac.shape[1]
    i0 = torch.floor(frac)
    w1 = frac - i0
    w0 = 1 - w1
    w0 = w0.masked_fill_((i0 < 0) | (i0 > n - 1), 0)
    w1 = w1.masked_fill_((i0 < -1) | (i0 > n - 2), 0)
    i0 = i0.to(torch.int32)
    col[:, :k] = i0.clamp(0, n - 1) * stride + offset
    col[:, k:] = (i0 + 1).clamp_(0, n - 1) * stride + offset
    val[:, :k] = w0 * weight
    val[:, k:] = w1 * weight


_ROWS_BLOCK = 1 << 20  # matrix entries computed per step while building (bounds the temporaries)


@contextlib.contextmanager
def _build_threads() -> Iterator[None]:
    """Build matrices single-threaded on CPU: the build is a loop of many medium-sized element-wise
    operations, for which intra-op thread synchronisation costs more than it saves (badly so on a
    loaded machine); the sparse products that use the matrices keep all threads."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _joseph_block(geom: Geometry, angles: torch.Tensor, device: torch.device,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """System matrix rows of the rays of ``angles`` (Joseph 1982, IEEE TMI 1(3)): a ray crosses each
    pixel column (or row, whichever is closer to perpendicular to it) once; the image is interpolated
    linearly between the two nearest pixel centres on that line, and each sample counts the chord
    ``pixel / |cos φ|``. Returns a CSR matrix ``(v·C, M²)`` of ``dtype``, rows ordered view-major.

    In pixel units the crossing with line ``j`` is at fractional index ``a + b·(j − centre)`` with, for
    x-dominant rays, ``a = centre − Y + X·dy/dx``, ``b = −dy/dx`` (a row index) and, for y-dominant
    rays, ``a = centre + X − Y·dx/dy``, ``b = −dx/dy`` (a column index).
    """
    with _build_threads():
        return _joseph_build(geom, angles, device, dtype)


def _joseph_build(geom: Geometry, angles: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    m, p = geom.image_size, geom.pixel_mm
    centre = (m - 1) / 2
    px, py, dx, dy, _ = (t.reshape(-1) for t in _ray_frames(geom, angles, geom.channel_positions(device)))
    x, y = px / p, py / p
    xdom = dx.abs() >= dy.abs()
    sdx = torch.where(xdom, dx, 1.0)
    sdy = torch.where(xdom, 1.0, dy)
    a = torch.where(xdom, centre - y + x * dy / sdx, centre + x - y * dx / sdy).to(dtype)
    b = torch.where(xdom, -dy / sdx, -dx / sdy).to(dtype)
    chord = (p / torch.where(xdom, dx.abs(), dy.abs())).to(dtype)
    stride = torch.where(xdom, m, 1).to(torch.int32)  # index along the fractional axis → flat offset
    step = torch.where(xdom, 1, m).to(torch.int32)  # line index → flat offset
    line = torch.arange(m, dtype=dtype, device=device)
    line_c = line - centre
    n_rays = px.numel()
    col = torch.empty((n_rays, 2 * m), dtype=torch.int32, device=device)
    val = torch.empty((n_rays, 2 * m), dtype=dtype, device=device)
    per = max(1, _ROWS_BLOCK // m)
    li = line.to(torch.int32)
    for r0 in range(0, n_rays, per):
        r = slice(r0, r0 + per)
        frac = torch.addcmul(a[r, None], b[r, None], line_c[None, :])
        _taps_into(frac, m, stride[r, None], li[None, :] * step[r, None], chord[r, None], col[r], val[r])
    return _csr(col, val, m * m)


@functools.lru_cache(maxsize=4)
def _joseph_matrix(geom: Geometry, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return _joseph_block(geom, geom.angles(device), device, dtype)


def _spmm_batched(mat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``mat @ x`` for a dense ``x`` ``(n, B)``, in column blocks of 16 (the fastest block on CPU)."""
    outs = [torch.sparse.mm(mat, x[:, b0 : b0 + 16].contiguous()) for b0 in range(0, x.shape[1], 16)]
    return torch.cat(outs, dim=1)


def _view_chunks(geom: Geometry, nnz_per_view: int, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> list[tuple[int, int]]:
    if _plan_fits(geom.views * nnz_per_view, device, dtype):
        return [(0, geom.views)]
    step = max(1, _MAX_ENTRIES_PER_BLOCK // nnz_per_view)
    return [(v0, min(v0 + step, geom.views)) for v0 in range(0, geom.views, step)]


def forward_project(images: torch.Tensor, geom: Geometry) -> torch.Tensor:
    """Line integrals of ``images`` ``(B, H, W)`` (or ``(H, W)``) → sinogram ``(B, V, C)``.

    Ray-driven Joseph projector, applied as a sparse matrix to the whole batch at once (every image
    is a column of one sparse × dense product, so the interpolation weights are computed once for
    the batch). The matrix of a geometry is cached when it fits in ``PLAN_CACHE_BYTES``; larger
    geometries are projected view-block by view-block. Runs on ``images.device`` in float32, or in
    float64 for float64 images (the simulator's precision: :mod:`benchmark.data.simulate`).
    """
    squeeze = images.ndim == 2
    imgs = images[None] if squeeze else images
    if imgs.ndim != 3 or imgs.shape[-1] != geom.image_size or imgs.shape[-2] != geom.image_size:
        raise ValueError(f"images {tuple(images.shape)} do not match the geometry's {geom.image_size}² grid")
    b, dev, dt = imgs.shape[0], imgs.device, _work_dtype(imgs)
    cols = imgs.reshape(b, -1).T.to(dt).contiguous()  # (M², B)
    chunks = _view_chunks(geom, geom.channels * 2 * geom.image_size, dev, dt)
    if len(chunks) == 1:
        rays = _spmm_batched(_joseph_matrix(geom, dev, dt), cols)
    else:
        ang = geom.angles(dev)
        rays = torch.cat([_spmm_batched(_joseph_block(geom, ang[v0:v1], dev, dt), cols) for v0, v1 in chunks])
    sino = rays.T.reshape(b, geom.views, geom.channels).to(imgs.dtype)
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


def _bp_block(geom: Geometry, first: int, last: int, weighted: bool, device: torch.device,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Back-projection matrix of views ``first:last``: CSR ``(P, V·C)`` with two entries per view
    (linear interpolation along the channels), times the fan-beam weight ``1/L²``.

    With ``t = x cos β + y sin β`` and ``q = x sin β − y cos β``, a pixel is seen by the parallel
    channel ``t / Δt`` and, in the fan beam, at fan angle ``γ = atan2(q, D − t)`` from the source at
    distance ``L² = (D − t)² + q²``.
    """
    with _build_threads():
        return _bp_build(geom, first, last, weighted, device, dtype)


def _bp_build(geom: Geometry, first: int, last: int, weighted: bool, device: torch.device,
              dtype: torch.dtype) -> torch.Tensor:
    x, y = _pixel_coords(geom, device)
    ang = geom.angles(device)[first:last]
    cos_sin = torch.stack((torch.cos(ang), torch.sin(ang))).to(dtype)  # (2, v)
    sin_mcos = torch.stack((torch.sin(ang), -torch.cos(ang))).to(dtype)
    xy = torch.stack((x, y), dim=1).to(dtype)  # (P, 2)
    n_pix, nv = xy.shape[0], ang.numel()
    ch0 = -(geom.channels - 1) / 2
    offset = (torch.arange(first, last, device=device, dtype=torch.int32) * geom.channels)[None, :]
    col = torch.empty((n_pix, 2 * nv), dtype=torch.int32, device=device)
    val = torch.empty((n_pix, 2 * nv), dtype=dtype, device=device)
    one = torch.ones((), dtype=dtype, device=device)
    per = max(1, _ROWS_BLOCK // nv)
    for p0 in range(0, n_pix, per):
        r = slice(p0, p0 + per)
        t = xy[r] @ cos_sin  # (p, v)
        if geom.kind == "parallel":
            u, w = t / geom.channel_mm - ch0, one
        else:
            q = xy[r] @ sin_mcos
            d = geom.sid_mm - t
            u = torch.atan2(q, d) / geom.fan_spacing_rad - ch0
            w = 1.0 / (d * d + q * q) if weighted else one
        _taps_into(u, geom.channels, one.to(torch.int32), offset, w, col[r], val[r])
    return _csr(col, val, geom.views * geom.channels)


@functools.lru_cache(maxsize=6)
def _bp_matrix(geom: Geometry, device: torch.device, weighted: bool, dtype: torch.dtype) -> torch.Tensor:
    return _bp_block(geom, 0, geom.views, weighted, device, dtype)


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 for float64 input (the simulator's exact path), else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def backproject(filtered: torch.Tensor, geom: Geometry, *, weighted: bool = True) -> torch.Tensor:
    """Back-project filtered views ``(B, V, C)`` onto the geometry's image grid → ``(B, H, W)``.

    Pixel-driven: each pixel takes the linearly interpolated value of the channel it projects to in
    every view (zero off the detector). Fan beam applies the ``1/L²`` distance weight (``weighted``)
    and the view spacing ``Δβ = 2π/V``; parallel beam the factor ``π/V``. Pixels outside the
    field-of-view circle are zero. Applied as one sparse matrix to the whole batch (cached per
    geometry like the forward projector).
    """
    b, n_v, _ = filtered.shape
    dev, dt = filtered.device, _work_dtype(filtered)
    use_w = weighted and geom.kind == "fan"
    cols = filtered.reshape(b, -1).T.to(dt).contiguous()  # (V·C, B)
    chunks = _view_chunks(geom, 2 * geom.image_size**2, dev, dt)
    if len(chunks) == 1:
        acc = _spmm_batched(_bp_matrix(geom, dev, use_w, dt), cols)
    else:
        acc = torch.zeros((geom.image_size**2, b), dtype=dt, device=dev)
        for v0, v1 in chunks:
            acc += _spmm_batched(_bp_block(geom, v0, v1, use_w, dev, dt), cols)
    scale = (2 * math.pi / n_v) if geom.kind == "fan" else (math.pi / n_v)
    img = (acc.T * scale).reshape(b, geom.image_size, geom.image_size).to(filtered.dtype)
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
