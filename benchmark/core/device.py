"""Device resolution: the one reading of ``"auto"``, ``"cpu"``, ``"cuda"`` and ``"cuda:N"``; the one
reading of a ``--devices`` list for worker processes (``run --jobs``, ``analyze --jobs``), how workers
are dealt to those devices and how many CPU threads each gets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

import torch

from benchmark.core.errors import MissingResource, UserError


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
        raise MissingResource("CUDA was asked for but torch sees no CUDA device; use 'auto' or 'cpu'", field=field)
    return dev


def parse_device_list(spec: str | Sequence[str], *, field: str) -> list[torch.device]:
    """A ``--devices`` list: comma-separated (or a sequence of) CUDA indices ``N``, ``cuda:N`` or ``cpu``
    → torch devices in order (repeats allowed: several workers per device). An empty item, another
    name, or an index torch does not see is a :class:`UserError` naming ``field``."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    if not items or not all(items):
        raise UserError(f"{spec!r}: give comma-separated CUDA indices (0,1,...) or cpu", field=field)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    out = []
    for item in items:
        if item.lower() == "cpu":
            out.append(torch.device("cpu"))
            continue
        index = item.split(":", 1)[1] if item.lower().startswith("cuda:") else item
        if not index.isdigit():
            raise UserError(f"{item!r}: give CUDA indices (0,1,...) or cpu, comma-separated", field=field)
        if int(index) >= count:
            seen = f"indices 0-{count - 1}" if count else "no CUDA device"
            raise UserError(f"{item!r}: no such GPU (torch sees {seen}); give existing indices or cpu", field=field)
        out.append(torch.device("cuda", int(index)))
    return out


_Device = TypeVar("_Device", torch.device, str)


def assign_devices(devices: Sequence[_Device], jobs: int) -> list[_Device]:
    """Worker ``i``'s device: ``devices[i % len(devices)]`` (round-robin)."""
    return [devices[i % len(devices)] for i in range(jobs)]


def worker_threads(jobs: int) -> int:
    """CPU threads per worker of ``jobs`` worker processes: the machine's cores divided among them."""
    return max(1, (os.cpu_count() or 1) // jobs)
