"""Per-epoch checkpoints: atomic writes, validated reads, and loading a model for inference.

A checkpoint (``<cell>/checkpoints/epoch_<NNN>.pt``) holds everything needed to continue exactly: the
model, the optimizer(s), the scheduler, the loss's trainable state (e.g. MSTLF attention, a
discriminator), the RNG states (torch CPU/CUDA, numpy, python, the cell's data generator), the epoch,
the history so far and the cell's config. Files are written atomically (:mod:`benchmark.core.io`),
so a crash never leaves a half-written file under a valid name; a file that is truncated or fails its
checks anyway is reported by :func:`read_checkpoint` as ``None`` and the runner continues from the
previous good epoch.

The matrix's ``checkpoints`` section (:class:`benchmark.config.CheckpointsConfig`) may thin older
epochs: deleted, or rewritten as *weights-only* checkpoints (:func:`weights_only_state`: the model and
the cell, flagged ``weights_only``, no ``train_state``) that can be scored but not resumed from.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.core.errors import UserError
from benchmark.core.io import atomic_write_bytes
from benchmark.layout import checkpoint_epoch
from models import build_model

FORMAT_VERSION = 1
_REQUIRED = ("format_version", "epoch", "cell", "model")
WEIGHTS_ONLY = "weights_only"  # the flag of a checkpoint thinned to the model (checkpoints.weights_only)


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
    epoch = checkpoint_epoch(path)
    if epoch is not None and epoch != state["epoch"]:
        return None
    return state


def is_full(state: dict[str, Any]) -> bool:
    """Whether a read checkpoint can resume training (it has a ``train_state``); a weights-only one
    (:func:`weights_only_state`) can only be scored."""
    return "train_state" in state and not state.get(WEIGHTS_ONLY, False)


def weights_only_state(state: dict[str, Any]) -> dict[str, Any]:
    """What scoring needs of a checkpoint (``format_version``, ``epoch``, ``cell``, ``model``, the version
    stamps) and the flag ``weights_only: True``; no ``train_state``, so it cannot resume. A function of
    ``state`` alone, so the bytes :func:`save_checkpoint` writes are too."""
    out = {k: state[k] for k in (*_REQUIRED, "ldct_bench_version", "torch_version") if k in state}
    out[WEIGHTS_ONLY] = True
    return out


def model_from_state(state: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the cell's architecture from the checkpoint's cell config and load its weights (eval mode)."""
    arch = state["cell"]["architecture"]
    model = build_model(arch["name"], arch.get("kwargs", {}))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def load_model(path: Path | str, device: str | torch.device = "cpu") -> nn.Module:
    """The denoiser stored in a checkpoint, ready for inference (eval mode, on ``device``)."""
    state = read_checkpoint(Path(path))
    if state is None:
        raise UserError("not a readable ldct-bench checkpoint (truncated, corrupt or foreign)", field=str(path))
    return model_from_state(state, device)
