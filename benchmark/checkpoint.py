"""Per-epoch checkpoints: atomic writes, safe validated reads, cell identity, and loading a model for inference.

A checkpoint (``<cell>/checkpoints/epoch_<NNN>.pt``) holds everything needed to continue exactly: the
model, the optimizer(s), the scheduler, the loss's trainable state (e.g. MSTLF attention, a
discriminator), the RNG states (torch CPU/CUDA, numpy, python, the cell's data generator), the epoch,
the history so far, the cell's config and the cell's **identity** (:func:`cell_identity`: the cell id
and a hash of its resolved config). Files are written atomically (:mod:`benchmark.core.io`), so a crash
never leaves a half-written file under a valid name.

**Loading never runs code.** Run folders are shared (a lab's disk, a colleague's tarball), and an
unpickled object can run anything, so every read uses ``torch.load(weights_only=True)``: only tensors,
plain Python containers and numbers, and torch's own allow-listed types. To make that possible a
checkpoint holds nothing else: RNG states are tensors and plain tuples (:func:`pack_numpy_rng`),
versions are strings, and :func:`save_checkpoint` refuses a state that ``weights_only`` loading would
refuse. Checkpoints of format 1 (ldct-bench before this format) held numpy arrays and ``TorchVersion``;
they are reported by name (:class:`CheckpointError`, reason ``legacy``) with the one-time conversion
command :data:`CONVERT_COMMAND` (``benchmark.cli_checkpoints``), which loads them with ``weights_only=True``
as well, allowing exactly the numpy array/dtype and ``TorchVersion`` globals they hold
(:func:`load_legacy_state`): no load in the suite unpickles anything else.

**A wrong checkpoint is never used.** :func:`load_checkpoint` with the expected cell (its id and
config) refuses a checkpoint of another cell, or of this cell trained with other settings (reason
``foreign``); the runner keeps such a file aside (``*.foreign``) and resumes from the last good epoch,
the analysis skips it with a warning naming it. Unreadable or truncated files (``*.corrupt``), files
holding objects no checkpoint holds (``*.unsafe``, never unpickled) and files that vanish while being
read (a running ``run`` thinning its checkpoints) are reported the same way.

The matrix's ``checkpoints`` section (:class:`benchmark.config.CheckpointsConfig`) may thin older
epochs: deleted, or rewritten as *weights-only* checkpoints (:func:`weights_only_state`: the model, the
cell and its identity, flagged ``weights_only``, no ``train_state``) that can be scored but not resumed
from.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.serialization import get_unsafe_globals_in_checkpoint

from benchmark.core.errors import UserError
from benchmark.core.io import atomic_write_bytes
from benchmark.layout import (
    CORRUPT_SUFFIX,
    FOREIGN_SUFFIX,
    UNSAFE_SUFFIX,
    checkpoint_epoch,
    config_differences,
)
from models import build_model

FORMAT_VERSION = 2  # 2: loads with weights_only=True and carries the cell's identity; 1: pickled numpy RNG state
_REQUIRED = ("format_version", "epoch", "cell", "model")
WEIGHTS_ONLY = "weights_only"  # the flag of a checkpoint thinned to the model (checkpoints.weights_only)
IDENTITY = "identity"  # {"cell_id": ..., "config_sha256": ...}, set by save_checkpoint from ``cell``
CONVERT_COMMAND = "ldct-bench checkpoints convert --out {out} --trust"

# What a format-1 checkpoint holds beyond weights_only's allow-list, as (object, name in the pickle):
# numpy's RNG state (ndarray, dtype, _reconstruct; numpy 1.x and 2.x spell the module differently) and
# torch.__version__ (TorchVersion). Each only rebuilds an array, a dtype or a version string; allowing
# exactly these lets a format-1 file load with weights_only=True (:func:`load_legacy_state`).
_LEGACY_ALLOWED: tuple[tuple[Any, str], ...] = (
    (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    (np._core.multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
    (np.ndarray, "numpy.ndarray"),
    (np.dtype, "numpy.dtype"),
    (np.dtypes.UInt32DType, "numpy.dtypes.UInt32DType"),
    (torch.torch_version.TorchVersion, "torch.torch_version.TorchVersion"),
)
_LEGACY_GLOBALS = frozenset(name for _, name in _LEGACY_ALLOWED)

Reason = Literal["unreadable", "missing", "unsafe", "legacy", "foreign", "newer"]


class CheckpointError(UserError):
    """A checkpoint that must not be used, with the file named and why.

    ``reason``: ``unreadable`` (truncated, corrupt, not a checkpoint), ``missing`` (gone while being
    read), ``unsafe`` (holds objects a checkpoint never holds; not unpickled), ``legacy`` (format 1:
    convert it, :data:`CONVERT_COMMAND`), ``newer`` (written by a newer ldct-bench) or ``foreign``
    (another cell's, or this cell's with other settings). A :class:`UserError`, so where nothing
    handles it the command exits 2 with this message."""

    def __init__(self, path: Path | str, reason: Reason, detail: str) -> None:
        super().__init__(detail, field=str(path))
        self.path = Path(path)
        self.reason = reason
        self.detail = detail

    @property
    def suffix(self) -> str:
        """The suffix the runner keeps such a file under (its name + suffix says why it was set aside)."""
        return {"unsafe": UNSAFE_SUFFIX, "foreign": FOREIGN_SUFFIX}.get(self.reason, CORRUPT_SUFFIX)


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


# --- what a checkpoint stores instead of objects weights_only would refuse


def pack_numpy_rng(state: Any) -> dict[str, Any]:
    """numpy's legacy global RNG state (``np.random.get_state()``: a tuple of name, uint32 key array,
    position, has_gauss, cached gaussian) as a tensor and plain numbers, which ``weights_only`` loading
    accepts."""
    if not isinstance(state, tuple) or len(state) != 5:
        raise ValueError("expected np.random.get_state()'s legacy tuple (name, key, pos, has_gauss, cached_gaussian)")
    name, key, pos, has_gauss, cached = state
    return {
        "bit_generator": str(name),
        "key": torch.from_numpy(np.asarray(key, dtype=np.int64).copy()),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def unpack_numpy_rng(packed: Mapping[str, Any]) -> tuple[Any, ...]:
    """The inverse of :func:`pack_numpy_rng`: a tuple ``np.random.set_state`` takes."""
    key = np.asarray(packed["key"].numpy(), dtype=np.uint32)
    return (packed["bit_generator"], key, int(packed["pos"]), int(packed["has_gauss"]), float(packed["cached_gaussian"]))


# --- identity


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 of a cell config in canonical JSON (sorted keys): equal configs, equal hashes."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cell_identity(config: Mapping[str, Any]) -> dict[str, str]:
    """A checkpoint's identity: ``cell_id`` and ``config_sha256`` of the cell's resolved config
    (:func:`benchmark.cells.cell_config`, the checkpoint's ``cell``)."""
    if not isinstance(config, Mapping) or not isinstance(config.get("cell_id"), str):
        raise ValueError("a checkpoint's cell config must be a dict with its cell_id")
    return {"cell_id": config["cell_id"], "config_sha256": config_hash(config)}


def check_identity(state: Mapping[str, Any], path: Path | str, *, cell_id: str, config: Mapping[str, Any]) -> None:
    """Raise :class:`CheckpointError` (``foreign``) unless the checkpoint ``state`` read from ``path``
    belongs to cell ``cell_id`` (the folder it lies in) trained with ``config`` (the cell's resolved
    config). Same settings written before the schema gained a default (``config.yaml``'s rule,
    :func:`benchmark.layout.config_differences`) still match."""
    ident = state.get(IDENTITY)
    if not isinstance(ident, Mapping) or not isinstance(ident.get("cell_id"), str):
        raise CheckpointError(path, "foreign", "carries no cell identity; not an ldct-bench checkpoint of this cell")
    if ident["cell_id"] != cell_id:
        raise CheckpointError(path, "foreign", f"is a checkpoint of cell {ident['cell_id']}, not of {cell_id} "
                                               "(copied into the wrong folder?); not used")
    if ident.get("config_sha256") == config_hash(config):
        return
    cell = state.get("cell")
    diff = config_differences(cell, dict(config))
    if not diff and isinstance(cell, Mapping) and ident.get("config_sha256") == config_hash(cell):
        return
    what = ", ".join(diff) if diff else "its config hash does not match its config"
    raise CheckpointError(path, "foreign", f"was trained with other settings than cell {cell_id} ({what}); not used")


# --- writing and reading


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` (must contain ``format_version``, ``epoch``, ``cell``, ``model``; ``cell`` the
    cell's config with its ``cell_id``) atomically, with the cell's identity (:func:`cell_identity`)
    added as the last key.

    The bytes are a function of the content alone, so two runs of a cell, or an interrupted and
    resumed run, give byte-identical files. A state holding anything ``torch.load(weights_only=True)``
    would refuse (a numpy array, an arbitrary object) is a ``ValueError`` naming it: such a file could
    not be read back."""
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    state = {**{k: v for k, v in state.items() if k != IDENTITY}, IDENTITY: cell_identity(state["cell"])}
    buf = io.BytesIO()
    torch.save(state, buf, pickle_module=_canonical_pickle)  # type: ignore[arg-type]
    unsafe = get_unsafe_globals_in_checkpoint(io.BytesIO(buf.getvalue()))
    if unsafe:
        raise ValueError(f"checkpoint state holds {sorted(unsafe)}, which weights_only loading refuses; "
                         "store tensors, strings and plain numbers instead")
    atomic_write_bytes(path, buf.getvalue())


def _refused(path: Path, exc: Exception) -> CheckpointError:
    """Why ``torch.load(weights_only=True)`` failed on ``path``: the pickle's globals are listed
    statically (nothing is unpickled) to tell a format-1 checkpoint from a planted object."""
    if isinstance(exc, FileNotFoundError) or not path.exists():
        return CheckpointError(path, "missing", "disappeared while being read (thinned or moved by a running `run`?)")
    try:
        unsafe = sorted(get_unsafe_globals_in_checkpoint(path))
    except Exception:
        unsafe = []
    if unsafe and set(unsafe) <= _LEGACY_GLOBALS:
        return _legacy(path)
    if unsafe:
        return CheckpointError(path, "unsafe", f"holds objects no ldct-bench checkpoint holds ({', '.join(unsafe)}); "
                                               "not loaded (loading would run them)")
    return CheckpointError(path, "unreadable", f"unreadable ({type(exc).__name__}): truncated, corrupt or not a checkpoint")


def _legacy(path: Path) -> CheckpointError:
    out = path.parent.parent.parent.parent if path.parent.name == "checkpoints" else Path("RUN")
    return CheckpointError(path, "legacy", f"a format-1 checkpoint (ldct-bench before format {FORMAT_VERSION}), which "
                                           "cannot be loaded safely; if you trust this run folder, convert it once "
                                           f"with `{CONVERT_COMMAND.format(out=out)}`")


def load_checkpoint(path: Path | str, *, cell_id: str | None = None, config: Mapping[str, Any] | None = None,
                    map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:  # fmt: skip
    """Load a checkpoint with ``torch.load(weights_only=True)`` (no code in the file can run) and check
    it: a dict with the required keys, the epoch of its file name, this format, and, given ``cell_id``
    and ``config``, that cell's identity (:func:`check_identity`). ``mmap``: map the tensors instead of
    reading them (a cheap check). Raises :class:`CheckpointError` naming the file and the reason."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:
        raise _refused(path, exc) from None
    if not isinstance(state, dict) or any(k not in state for k in _REQUIRED):
        raise CheckpointError(path, "unreadable", f"not an ldct-bench checkpoint (needs the keys {list(_REQUIRED)})")
    version = state["format_version"]
    if version != FORMAT_VERSION:
        if isinstance(version, int) and version < FORMAT_VERSION:
            raise _legacy(path)
        raise CheckpointError(path, "newer", f"checkpoint format {version!r}; this ldct-bench reads format "
                                             f"{FORMAT_VERSION} (written by a newer version? upgrade ldct-bench)")
    epoch = checkpoint_epoch(path)
    if epoch is not None and epoch != state["epoch"]:
        raise CheckpointError(path, "foreign", f"holds epoch {state['epoch']!r}, not the epoch {epoch} of its name")
    if cell_id is not None:
        if config is None:
            raise ValueError("checking a checkpoint's identity needs the cell's config")
        check_identity(state, path, cell_id=cell_id, config=config)
    return state


def read_checkpoint(path: Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """Load a checkpoint safely (:func:`load_checkpoint`, no identity check); ``None`` if it is
    unreadable, truncated, unsafe, of another format or not one of ours."""
    try:
        return load_checkpoint(path, map_location=map_location)
    except CheckpointError:
        return None


def is_full(state: dict[str, Any]) -> bool:
    """Whether a read checkpoint can resume training (it has a ``train_state``); a weights-only one
    (:func:`weights_only_state`) can only be scored."""
    return "train_state" in state and not state.get(WEIGHTS_ONLY, False)


def weights_only_state(state: dict[str, Any]) -> dict[str, Any]:
    """What scoring needs of a checkpoint (``format_version``, ``epoch``, ``cell``, ``model``, the version
    stamps) and the flag ``weights_only: True``; no ``train_state``, so it cannot resume (the identity is
    added again by :func:`save_checkpoint`). A function of ``state`` alone, so the bytes
    :func:`save_checkpoint` writes are too."""
    out = {k: state[k] for k in (*_REQUIRED, "ldct_bench_version", "torch_version") if k in state}
    out[WEIGHTS_ONLY] = True
    return out


def load_legacy_state(path: Path) -> dict[str, Any]:
    """A format-1 checkpoint's content, loaded with ``weights_only=True`` and exactly the globals such a
    file holds besides tensors (``_LEGACY_ALLOWED``): nothing else is unpickled, so no code in the file
    runs (anything else is refused by torch's restricted unpickler)."""
    with torch.serialization.safe_globals(list(_LEGACY_ALLOWED)):
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError("not a format-1 ldct-bench checkpoint")
    return state


def upgrade_legacy_state(state: dict[str, Any]) -> dict[str, Any]:
    """A format-1 checkpoint's content (:func:`load_legacy_state`) as this format: numpy
    RNG state packed (:func:`pack_numpy_rng`), version stamps as strings, ``format_version`` set; the
    identity is added by :func:`save_checkpoint`. Key order is kept, so a converted file is byte for
    byte what this version writes for the same content. ``ValueError`` if it is not a format-1 state."""
    if not isinstance(state, dict) or any(k not in state for k in _REQUIRED) or state["format_version"] != 1:
        raise ValueError("not a format-1 ldct-bench checkpoint")
    out = dict(state)
    out["format_version"] = FORMAT_VERSION
    for key in ("ldct_bench_version", "torch_version"):
        if key in out:
            out[key] = str(out[key])
    train = out.get("train_state")
    if isinstance(train, dict) and isinstance(train.get("rng"), dict):
        rng = dict(train["rng"])
        if isinstance(rng.get("numpy"), tuple):
            rng["numpy"] = pack_numpy_rng(rng["numpy"])
        out["train_state"] = {**train, "rng": rng}
    return out


# --- inference


def model_from_state(state: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the cell's architecture from the checkpoint's cell config and load its weights (eval mode)."""
    arch = state["cell"]["architecture"]
    model = build_model(arch["name"], arch.get("kwargs", {}))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def load_model(path: Path | str, device: str | torch.device = "cpu", *, cell_id: str | None = None,
               config: Mapping[str, Any] | None = None) -> nn.Module:  # fmt: skip
    """The denoiser stored in a checkpoint, ready for inference (eval mode, on ``device``); given
    ``cell_id`` and ``config``, only if the checkpoint is that cell's. A checkpoint that cannot be used
    is a :class:`CheckpointError` (a :class:`UserError` naming the file and why)."""
    return model_from_state(load_checkpoint(Path(path), cell_id=cell_id, config=config), device)


# --- warm starts (``init_from``)


def read_start_weights(path: Path | str, sha256: str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The generator weights a warm start copies from ``path``, read safely, and the architecture
    recorded with them (``{"name", "kwargs", ...}`` of an ldct-bench checkpoint; None for a plain state
    dict). The file is read once: its bytes are hashed and, only when they match ``sha256``, loaded from
    those same bytes with ``torch.load(weights_only=True)`` (nothing in the file can run). An
    ldct-bench checkpoint gives its ``model``; a mapping of names to tensors is taken as it is. Anything
    else, or another hash, is a :class:`CheckpointError` naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(path, "missing", f"cannot read the warm start ({exc.strerror or exc})") from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise CheckpointError(path, "foreign", f"has sha256 {got}, not the {sha256} the warm start records; not used "
                                               "(replaced or retrained since?)")  # fmt: skip
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _refused(path, exc) from None
    if isinstance(state, dict) and all(k in state for k in _REQUIRED):
        if state["format_version"] != FORMAT_VERSION:
            raise _legacy(path) if isinstance(state["format_version"], int) and state["format_version"] < FORMAT_VERSION \
                else CheckpointError(path, "newer", f"checkpoint format {state['format_version']!r}; this ldct-bench "
                                                    f"reads format {FORMAT_VERSION}")  # fmt: skip
        cell = state.get("cell")
        arch = cell.get("architecture") if isinstance(cell, Mapping) else None
        return dict(state["model"]), dict(arch) if isinstance(arch, Mapping) else None
    if isinstance(state, dict) and state and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        return state, None
    raise CheckpointError(path, "unreadable", "neither an ldct-bench checkpoint nor a state dict of tensors; "
                                              "cannot start a cell from it")  # fmt: skip


def load_start_weights(model: nn.Module, weights: Mapping[str, torch.Tensor], *, architecture: Mapping[str, Any] | None,
                       name: str, kwargs: Mapping[str, Any], source: str) -> None:  # fmt: skip
    """Copy a warm start's ``weights`` into ``model`` (architecture ``name`` with ``kwargs``), exactly
    (``load_state_dict(strict=True)``: every parameter and buffer, nothing missing or extra). A start
    recorded with another architecture, or weights that do not fit, are a :class:`UserError` naming
    ``source``."""
    if architecture is not None and (architecture.get("name"), architecture.get("kwargs", {})) != (name, dict(kwargs)):
        raise UserError(f"holds {architecture.get('name')} {architecture.get('kwargs', {})}, not {name} {dict(kwargs)}; "
                        "a warm start needs the same architecture with the same kwargs", field=source)  # fmt: skip
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise UserError(f"its weights do not fit {name} {dict(kwargs)}: {' '.join(first[:3])}", field=source) from None
