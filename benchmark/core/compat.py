"""Make ``import torchvision`` work next to a CPU-only torch.

The torchvision 0.28.0 wheel that pairs with torch 2.13.0 links CUDA libraries. With the CPU build
of torch its C extension does not load, and ``torchvision/_meta_registrations.py`` then fails with
``RuntimeError: operator torchvision::nms does not exist``. Declaring the two operator schemas it
registers fake kernels for (``torchvision::nms`` and ``torchvision::qnms``) lets the import and
``torchvision.models`` work; calling those detection ops then raises, and nothing here needs them.

piq, lpips, pyiqa and DISTS_pytorch import torchvision, so :func:`ensure_torchvision` must run
before any of them. Where torchvision imports normally it does nothing.
"""

from __future__ import annotations

import sys
from types import ModuleType

_LIB: object | None = None  # keeps the torch.library.Library (and so the schemas) alive
_STATE: str | None = None  # "native", "shimmed"

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def _purge_torchvision() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def ensure_torchvision() -> ModuleType:
    """Import torchvision, declaring the missing op schemas first if the native import fails.

    Returns the torchvision module. Idempotent and cheap after the first call.
    """
    global _LIB, _STATE
    if _STATE is not None:
        import torchvision

        return torchvision
    try:
        import torchvision

        _STATE = "native"
        return torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    _purge_torchvision()
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    for name, schema in _SCHEMAS.items():
        try:
            torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        except RuntimeError:
            lib.define(schema)
    _LIB = lib
    import torchvision

    _STATE = "shimmed"
    return torchvision


def torchvision_state() -> str | None:
    """``"native"``, ``"shimmed"``, or ``None`` if :func:`ensure_torchvision` has not run."""
    return _STATE
