"""Where the suite keeps its caches. Documented in the README."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$LDCT_BENCH_CACHE`` if set, else ``$XDG_CACHE_HOME/ldct-bench`` or ``~/.cache/ldct-bench``."""
    env = os.environ.get("LDCT_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ldct-bench"
