"""Numeric precision, memory format and data placement of a training cell (``training.precision``,
``training.channels_last``), and the environment facts a cell records.

* ``fp32``: PyTorch's defaults, untouched (the reference; bit-identical on CPU between runs).
* ``tf32``: TensorFloat-32 matmuls and cuDNN convolutions on CUDA, switched on for the training epochs
  only (:func:`float32_matmul`) and restored after, so validation and other cells are not affected.
* ``bf16``: the forward pass and the loss under ``torch.autocast(device_type, dtype=torch.bfloat16)``
  (:func:`autocast`); backward and optimizer steps outside it (:func:`no_autocast`), parameters fp32.

bf16 and tf32 results are not bit-comparable to fp32 ones.
"""

from __future__ import annotations

import contextlib
import json
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from benchmark.core.io import atomic_write_text
from benchmark.core.kernels import describe as kernel_facts

PRECISIONS = ("fp32", "tf32", "bf16")
ENVIRONMENT = "environment.json"  # in a cell's folder: the environment of each training run
Placement = Literal["device", "pinned", "host"]

# The training split goes onto the accelerator when it takes less than this share of its free memory.
DEVICE_FRACTION = 0.25


@contextlib.contextmanager
def float32_matmul(precision: str) -> Iterator[None]:
    """With ``precision == "tf32"``: TF32 matmuls (``torch.backends.cuda.matmul.allow_tf32``,
    ``torch.set_float32_matmul_precision("high")``) and cuDNN convolutions (``cudnn.allow_tf32``)
    for the block, the previous settings restored after; any other precision changes nothing."""
    if precision != "tf32":
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old[0], old[1]
        torch.set_float32_matmul_precision(old[2])


def autocast(precision: str, device_type: str) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast(device_type, dtype=torch.bfloat16)`` for ``bf16``, else a no-op."""
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def no_autocast(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast switched off (backward passes and optimizer steps) where it is on; else a no-op."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def memory_format(t: torch.Tensor) -> torch.memory_format:
    """The channels-last format of a 4-D (``channels_last``) or 5-D (``channels_last_3d``) tensor."""
    return torch.channels_last_3d if t.dim() == 5 else torch.channels_last


def to_channels_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` in channels-last layout if it is 4-D or 5-D, else ``t`` unchanged."""
    return t.contiguous(memory_format=memory_format(t)) if t.dim() in (4, 5) else t


def module_to_channels_last(module: nn.Module) -> nn.Module:
    """Every 4-D / 5-D parameter and buffer of ``module`` in channels-last layout (values unchanged;
    ``Module.to(memory_format=...)`` refuses 5-D weights with ``channels_last``)."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() in (4, 5):
                p.data = to_channels_last(p.data)
        for m in module.modules():
            for name, b in m._buffers.items():
                if b is not None and b.dim() in (4, 5):
                    m._buffers[name] = to_channels_last(b)
    return module


def split_placement(nbytes: int, device: torch.device, free_bytes: int | None = None,
                    fraction: float = DEVICE_FRACTION) -> Placement:  # fmt: skip
    """Where a training split of ``nbytes`` lives while ``device`` trains on it: ``"device"`` (on the
    GPU, patches gathered there) when it takes less than ``fraction`` of the GPU's free memory
    (``free_bytes``, default ``torch.cuda.mem_get_info``), else ``"pinned"`` (host memory, each batch
    pinned and copied without blocking); ``"host"`` (as it is) on the CPU or any other device."""
    if device.type != "cuda":
        return "host"
    if free_bytes is None:
        free_bytes = int(torch.cuda.mem_get_info(device)[0])
    return "device" if nbytes < fraction * free_bytes else "pinned"


def cpu_model(cpuinfo: str | None = None) -> str:
    """The processor as native kernels see it: ``/proc/cpuinfo``'s model name with its vendor, family and
    model numbers (e.g. ``AMD EPYC (AuthenticAMD family 26 model 2)``), which tell CPU generations apart
    where the name does not (a virtual machine's often reads just "AMD EPYC"). Two processors with the same
    ATen capability (``AVX512``) can still round differently (MKL and oneDNN pick their code path by vendor
    and generation; measured: the RED-CNN mini-study retrained on another AVX-512 host moved per-image RMSE
    by up to 9 %), so a cell records this. Without ``/proc/cpuinfo`` (not Linux): ``platform.processor()``,
    else the machine. ``cpuinfo`` is the file's text (tests)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    detail = " ".join(f"{label} {fields[k]}" for k, label in (("cpu family", "family"), ("model", "model")) if fields.get(k))
    vendor = fields.get("vendor_id", "")
    if vendor or detail:
        name += f" ({' '.join(p for p in (vendor, detail) if p)})"
    return name


def device_name(device: torch.device) -> str:
    """The GPU's name, or ``cpu`` with the processor (:func:`cpu_model`)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} {cpu_model()}".strip()


def environment(device: torch.device, precision: str, channels_last: bool) -> dict[str, Any]:
    """The facts that decide a cell's numerics beyond its config: device, precision, memory format,
    torch / CUDA / cuDNN versions, the CPU kernels (:func:`benchmark.core.kernels.describe`). No timestamps or process ids: the same machine gives the same dict."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "device": str(device),
        "device_name": device_name(device),
        "precision": precision,
        "channels_last": bool(channels_last),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        **kernel_facts(),
    }


def read_environment(path: Path) -> list[Any]:
    """The entries of a cell's ``environment.json`` (JSON data only); ``[]`` when the file is missing,
    unreadable or not a JSON list."""
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return loaded if isinstance(loaded, list) else []


def record_environment(path: Path, from_epoch: int, env: dict[str, Any]) -> None:
    """Append ``{"from_epoch": from_epoch, **env}`` to the JSON list in ``path`` (a cell's
    ``environment.json``) unless ``env`` equals its last entry's: a cell resumed on the same machine
    keeps one entry, one resumed elsewhere gets one per environment it trained in."""
    entries = read_environment(path)
    if entries and {k: v for k, v in entries[-1].items() if k != "from_epoch"} == env:
        return
    entries.append({"from_epoch": from_epoch, **env})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(entries, indent=1) + "\n")
