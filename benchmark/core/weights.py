"""Pretrained weight files the suite may need, where they live, and how to get them there.

Nothing in the suite downloads at run time. Every file has one home: ``torch.hub.get_dir()/checkpoints/
<filename>`` (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), the
place torchvision's own ``load_state_dict_from_url`` reads and writes, so a file fetched by
``ldct-bench weights fetch`` is the file torchvision / lpips / DISTS would have downloaded, and a file a
user already has from earlier torchvision use is found without any action.

* ``ldct-bench weights status``: every file, its path, size, sha256 and whether the hash matches.
* ``ldct-bench weights fetch KEY``: download (where there is internet) via ``torch.hub.download_url_to_file``
  with the published hash prefix checked.
* ``ldct-bench weights import FILE [--key KEY]``: copy a file obtained elsewhere into place, checking
  its hash prefix.

torchvision publishes the first 8 (AlexNet, VGG) hex digits of each file's sha256 in its file name
(``alexnet-owt-7be5be79.pth``); the full digest is not published, so :attr:`WeightFile.sha256` is
``None`` and :attr:`WeightFile.sha256_prefix` is what is verified.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmark.core.compat import ensure_torchvision
from benchmark.core.errors import MissingResource, UserError
from benchmark.core.io import atomic_write
from benchmark.core.registry import lookup


@dataclass(frozen=True)
class WeightFile:
    """One pretrained weight file.

    ``sha256`` is the full published digest (None where only a prefix is published);
    ``sha256_prefix`` the published prefix (torchvision's file-name convention); ``size_bytes`` the
    published size where known; ``used_by`` the metrics and losses that need it.
    """

    key: str
    filename: str
    url: str
    sha256: str | None
    sha256_prefix: str
    size_bytes: int | None
    used_by: tuple[str, ...]
    arch: str = ""  # torchvision builder name used by write_random_weights
    summary: str = ""


# The registry: every weight file the suite knows, filled in this one place.
WEIGHTS: dict[str, WeightFile] = {
    "alexnet": WeightFile(
        key="alexnet",
        filename="alexnet-owt-7be5be79.pth",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        sha256=None,
        sha256_prefix="7be5be79",
        size_bytes=None,  # torchvision lists 233.087 MB
        used_by=("metric:lpips",),
        arch="alexnet",
        summary="torchvision AlexNet ImageNet-1k (IMAGENET1K_V1): LPIPS-alex backbone",
    ),
    "vgg16": WeightFile(
        key="vgg16",
        filename="vgg16-397923af.pth",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        sha256=None,
        sha256_prefix="397923af",
        size_bytes=None,  # torchvision lists 527.796 MB
        used_by=("metric:lpips_vgg", "metric:dists", "loss:vgg"),
        arch="vgg16",
        summary="torchvision VGG16 ImageNet-1k (IMAGENET1K_V1): LPIPS-vgg, DISTS and VGG perceptual loss backbone",
    ),
    "vgg19": WeightFile(
        key="vgg19",
        filename="vgg19-dcbb9e9d.pth",
        url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        sha256=None,
        sha256_prefix="dcbb9e9d",
        size_bytes=None,  # torchvision lists 548.051 MB
        used_by=("loss:vgg19",),
        arch="vgg19",
        summary="torchvision VGG19 ImageNet-1k (IMAGENET1K_V1): VGG19 perceptual loss backbone",
    ),
}


def get(key: str) -> WeightFile:
    """The :class:`WeightFile` for ``key``; unknown keys fail with the valid keys and a close match."""
    return lookup(WEIGHTS, key, "weight file", field="weights")


def weight_path(key: str) -> Path:
    """``torch.hub.get_dir()/checkpoints/<filename>``: torchvision's standard cache location.

    Reads ``$TORCH_HOME`` at every call, so tests that point it at a temporary folder are honoured.
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / get(key).filename


def fix_command(key: str) -> str:
    """The one-line instruction printed wherever a weight file is missing."""
    return (
        f"run `ldct-bench weights fetch {key}` where there is internet, "
        f"or `ldct-bench weights import FILE --key {key}`"
    )


def is_present(key: str) -> bool:
    """True if the file for ``key`` exists in its standard place (its hash is not checked here)."""
    return weight_path(key).is_file()


def require(key: str) -> Path:
    """The path of weight file ``key``; :class:`UserError` naming the missing path and the fix if absent."""
    path = weight_path(key)
    if not path.is_file():
        raise MissingResource(f"weight file missing: {path}; {fix_command(key)}", field=f"weights.{key}")
    return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_ok(wf: WeightFile, digest: str) -> bool:
    """Whether ``digest`` matches the published full digest, or else the published prefix."""
    if wf.sha256 is not None:
        return digest == wf.sha256
    return digest.startswith(wf.sha256_prefix)


def status(keys: list[str] | None = None) -> list[dict]:
    """One row per weight file: ``key, filename, path, present, size_bytes, sha256, expected, hash_ok,
    used_by``. ``sha256`` is computed for present files (a few seconds for VGG); ``hash_ok`` is None
    for missing files."""
    rows = []
    for key in keys or list(WEIGHTS):
        wf = get(key)
        path = weight_path(key)
        present = path.is_file()
        digest = sha256_file(path) if present else None
        rows.append(
            {
                "key": key,
                "filename": wf.filename,
                "path": str(path),
                "present": present,
                "size_bytes": path.stat().st_size if present else None,
                "sha256": digest,
                "expected": wf.sha256 or f"{wf.sha256_prefix}…",
                "hash_ok": hash_ok(wf, digest) if digest else None,
                "used_by": ",".join(wf.used_by),
            }
        )
    return rows


def fetch(key: str, *, force: bool = False, progress: bool = True) -> Path:
    """Download weight file ``key`` to :func:`weight_path` (needs internet), checking the hash prefix.

    Uses ``torch.hub.download_url_to_file(url, dst, hash_prefix=...)``, which writes to a temporary
    file and moves it into place only after the hash check passes.
    """
    wf = get(key)
    dst = weight_path(key)
    if dst.is_file() and not force:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(
            wf.url, str(dst), hash_prefix=wf.sha256 or wf.sha256_prefix, progress=progress
        )
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a hash mismatch a RuntimeError
        raise UserError(
            f"could not download {wf.url} to {dst}: {exc}. Without internet, obtain {wf.filename} elsewhere and "
            f"run `ldct-bench weights import FILE --key {key}`",
            field=f"weights.{key}",
        ) from exc
    return dst


def key_for_file(path: Path) -> str:
    """The weight key whose file name or hash prefix matches ``path`` (for ``import`` without ``--key``)."""
    for key, wf in WEIGHTS.items():
        if path.name == wf.filename:
            return key
    digest = sha256_file(path)
    for key, wf in WEIGHTS.items():
        if hash_ok(wf, digest):
            return key
    raise UserError(
        f"{path}: neither its name nor its sha256 ({digest[:8]}…) matches a known weight file; pass --key "
        f"(one of {', '.join(WEIGHTS)})",
        field="import",
    )


def import_file(path: str | Path, key: str | None = None, *, check_hash: bool = True) -> Path:
    """Copy a weight file obtained elsewhere to its standard place, verifying its sha256 (prefix).

    ``check_hash=False`` accepts a file that does not match (e.g. a re-saved copy); callers should say so.
    """
    src = Path(path).expanduser()
    if not src.is_file():
        raise UserError(f"{src}: no such file", field="import")
    key = key or key_for_file(src)
    wf = get(key)
    if check_hash:
        digest = sha256_file(src)
        if not hash_ok(wf, digest):
            raise UserError(
                f"{src}: sha256 {digest} does not match the published {wf.sha256 or wf.sha256_prefix + '…'} "
                f"of {wf.filename}",
                field="import",
            )
    return atomic_write(weight_path(key), lambda tmp: shutil.copyfile(src, tmp))


def _builder(arch: str) -> Callable[..., torch.nn.Module]:
    tv = ensure_torchvision()
    return getattr(tv.models, arch)


def write_random_weights(key: str, seed: int = 0) -> Path:
    """**FOR TESTS AND SMOKE RUNS ONLY — NOT PRETRAINED, METRIC VALUES ARE MEANINGLESS.**

    Writes a seeded, randomly initialised torchvision ``arch`` state dict (same keys and shapes as the
    ImageNet file) to :func:`weight_path` so that code paths needing the backbone can run offline.
    Refuses to overwrite an existing file (it may be the real one). Use only under a temporary
    ``TORCH_HOME`` (the test fixture ``tmp_cache``).
    """
    wf = get(key)
    dst = weight_path(key)
    if dst.exists():
        raise UserError(f"{dst} exists; refusing to overwrite it with random weights", field=f"weights.{key}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _builder(wf.arch)(weights=None)
    return atomic_write(dst, lambda tmp: torch.save(model.state_dict(), tmp))


def load_state_dict(key: str) -> dict[str, torch.Tensor]:
    """The state dict of weight file ``key`` (``require`` first: a missing file is a UserError)."""
    return torch.load(require(key), map_location="cpu", weights_only=True)
