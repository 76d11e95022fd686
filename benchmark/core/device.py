"""Device resolution: the one reading of ``"auto"``, ``"cpu"``, ``"cuda"`` and ``"cuda:N"``."""

from __future__ import annotations

import torch

from benchmark.core.errors import UserError


def resolve_device(spec: str | torch.device, *, field: str = "device") -> torch.device:
    """``"auto"`` → CUDA when torch sees a GPU, else the CPU; anything else → ``torch.device(spec)``.

    An unparsable spec, or CUDA asked for where torch sees none, is a :class:`UserError` naming
    ``field``.
    """
    if isinstance(spec, torch.device):
        dev = spec
    elif spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(spec)
        except (RuntimeError, TypeError):
            raise UserError(f"{spec!r}: use auto, cpu, cuda or cuda:N", field=field) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but torch sees no CUDA device; use 'auto' or 'cpu'", field=field)
    return dev
