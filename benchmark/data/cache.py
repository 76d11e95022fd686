"""On-disk dataset caches: one folder per (dataset kind, options, generator version), built once under
a file lock, published atomically, read back as memory-mapped ``.npy`` arrays.

Layout: ``<cache_root>/<kind>/<label>-<hash>/`` with ``meta.json`` and one sub-folder per split
holding ``.npy`` arrays (see each dataset's docstring). ``<hash>`` is the SHA-256 (12 hex digits) of
the options that change the arrays plus the dataset's ``GENERATOR_VERSION``, so changed code or
options never read a stale cache. A build writes into ``<folder>.tmp-<pid>`` and renames it into
place, so an interrupted build leaves no half-written cache; ``filelock`` keeps two processes from
building the same folder at once (the second waits and then reads the first one's result).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from benchmark.core.paths import cache_root

META = "meta.json"


def options_hash(payload: dict[str, Any]) -> str:
    """12-hex-digit SHA-256 of a JSON-serialisable dict (keys sorted)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_dir(kind: str, label: str, payload: dict[str, Any]) -> Path:
    """The folder of a cache: ``<cache_root>/<kind>/<label>-<hash(payload)>``."""
    return cache_root() / kind / f"{label}-{options_hash(payload)}"


def is_built(folder: Path) -> bool:
    return (folder / META).is_file()


def ensure_built(folder: Path, build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Build ``folder`` with ``build(tmp_folder) -> meta`` unless it exists; return its meta.

    ``build`` writes its arrays into the temporary folder it is given and returns the metadata,
    which is written last as ``meta.json``; the folder is then renamed into place.
    """
    if is_built(folder):
        return read_meta(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if is_built(folder):  # another process built it while we waited
            return read_meta(folder)
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        try:
            meta = build(tmp)
            (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
            if folder.exists():  # a stale, meta-less folder from a crashed build
                shutil.rmtree(folder)
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return read_meta(folder)


def fingerprint(folder: Path) -> str:
    """``<folder name>@<meta.json mtime in ns>``: changes with the options and generator version (the
    name's hash) and with every rebuild of the folder (``meta.json`` is written last); ``@unbuilt``
    before the first build."""
    try:
        stamp = str((folder / META).stat().st_mtime_ns)
    except OSError:
        stamp = "unbuilt"
    return f"{folder.name}@{stamp}"


def read_meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / META).read_text())


def open_array(path: Path) -> np.ndarray:
    """A read-only memory map of an ``.npy`` file (string arrays are read into memory)."""
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    return arr


def new_array(path: Path, shape: tuple[int, ...], dtype: Any = np.float32) -> np.memmap:
    """A writable ``.npy`` memory map to fill in place (no full array in RAM)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
