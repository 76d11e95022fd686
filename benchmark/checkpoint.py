"""Per-epoch checkpoints: atomic writes, validated reads, and loading a model for inference.

A checkpoint (``<cell>/checkpoints/epoch_<NNN>.pt``) holds everything needed to continue exactly: the
model, the optimizer(s), the scheduler, the loss's trainable state (e.g. MSTLF attention, a
discriminator), the RNG states (torch CPU/CUDA, numpy, python, the cell's data generator), the epoch,
the history so far and the cell's config. Files are written to a temporary name, fsynced and renamed,
so a crash never leaves a half-written file under a valid name; a file that is truncated or fails its
checks anyway is reported by :func:`read_checkpoint` as ``None`` and the runner continues from the
previous good epoch.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT_VERSION = 1
_CKPT_RE = re.compile(r"^epoch_(\d{3,})\.pt$")
_REQUIRED = ("format_version", "epoch", "cell", "model")


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class _CanonicalPickler(pickle.Pickler):
    """A pickler without memo ("fast" mode): the bytes depend on the content only, not on which
    Python objects happen to be shared (a resumed run shares fewer strings than an uninterrupted one,
    which would otherwise change the file while every value is equal). Tensor storages are still
    deduplicated by torch's persistent ids."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast = True


class _canonical_pickle:
    Pickler = _CanonicalPickler
    Unpickler = pickle.Unpickler
    dump = staticmethod(pickle.dump)
    load = staticmethod(pickle.load)
    HIGHEST_PROTOCOL = pickle.HIGHEST_PROTOCOL


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` (must contain ``format_version``, ``epoch``, ``cell``, ``model``) atomically.

    The bytes are a function of the content alone, so two runs of a cell, or an interrupted and
    resumed run, give byte-identical files."""
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    buf = io.BytesIO()
    torch.save(state, buf, pickle_module=_canonical_pickle)  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """Load a checkpoint; ``None`` if it is unreadable, truncated or not one of ours."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception:
        return None
    if not isinstance(state, dict) or any(k not in state for k in _REQUIRED):
        return None
    m = _CKPT_RE.match(Path(path).name)
    if m and int(m.group(1)) != state["epoch"]:
        return None
    return state


def list_checkpoints(folder: Path) -> dict[int, Path]:
    """``epoch -> path`` for files named ``epoch_<NNN>.pt`` (not validated; see :func:`read_checkpoint`)."""
    out: dict[int, Path] = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = _CKPT_RE.match(p.name)
            if m:
                out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def model_from_state(state: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the cell's architecture from the checkpoint's cell config and load its weights (eval mode)."""
    from models import build_model

    arch = state["cell"]["architecture"]
    model = build_model(arch["name"], arch.get("kwargs", {}))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def load_model(path: Path | str, device: str | torch.device = "cpu") -> nn.Module:
    """The denoiser stored in a checkpoint, ready for inference (eval mode, on ``device``)."""
    from benchmark.errors import UserError

    state = read_checkpoint(Path(path))
    if state is None:
        raise UserError("not a readable ldct-bench checkpoint (truncated, corrupt or foreign)", field=str(path))
    return model_from_state(state, device)
