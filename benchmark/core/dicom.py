"""The one DICOM reader and HU conversion, used by the datasets (``mayo2016``, ``dicom_pairs``) and by
``ldct-bench score`` alike, so a slice has the same HU whichever path reads it.

``HU = stored value · RescaleSlope + RescaleIntercept`` (DICOM PS3.3 C.11.1.1.2; slope 1 and
intercept 0 where the tags are absent), in float32, **with values below −1024 HU raised to −1024**
(:data:`HU_FLOOR`). Scanners pad the corners outside the reconstruction circle with −2048 or −3024;
that is not tissue, lies outside every display window, and would dominate any quantity computed on raw
HU (``rmse_hu``, MSE in network space). −1024 HU is also the 0 of the network normalisation
(:mod:`benchmark.core.conventions`), so floored padding is exactly 0 for the networks. The floor is
decided here, once; ``floor_hu=None`` reads the raw values (tests, inspection).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.core.errors import UserError

HU_FLOOR = -1024.0
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".ima"})


def is_dicom(path: Path) -> bool:
    """A DICOM file by its suffix, or by the ``DICM`` magic at byte 128 (Part 10 files without one)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def dcmread(path: Path, *, header_only: bool = False) -> Any:
    """``pydicom.dcmread`` with a :class:`UserError` naming ``path`` for anything unreadable."""
    import pydicom  # on first use: `ldct-bench --help` does not load pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=header_only)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise UserError(f"not a readable DICOM file ({type(exc).__name__}: {exc})", field=str(path)) from None


def read_hu(path: Path, *, floor_hu: float | None = HU_FLOOR, frames: bool = False) -> np.ndarray:
    """A CT image in HU, float32 (see the module docstring): ``(H, W)`` for one slice, or with
    ``frames=True`` also ``(N, H, W)`` for a multi-frame file. A file that is not a readable DICOM image
    of that shape is a :class:`UserError` naming it."""
    ds = dcmread(path)
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # missing/corrupt pixel data or an unavailable decoder
        raise UserError(f"cannot decode the pixel data ({type(exc).__name__}: {exc})", field=str(path)) from None
    if pixels.ndim != 2 and not (frames and pixels.ndim == 3):
        want = "one 2-D slice or a stack of frames" if frames else "one 2-D slice"
        raise UserError(f"pixel data of shape {pixels.shape}: expected {want}", field=str(path))
    slope, intercept = np.float32(ds.get("RescaleSlope", 1.0)), np.float32(ds.get("RescaleIntercept", 0.0))
    hu = (pixels.astype(np.float32) * slope + intercept).astype(np.float32)
    return np.maximum(hu, np.float32(floor_hu)) if floor_hu is not None else hu
