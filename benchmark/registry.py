"""Look-up in the plain-dict registries (``losses.LOSSES``, ``models.ARCHITECTURES``,
``analysis.metrics.METRICS``, ``benchmark.data.DATASETS``), with a helpful error for unknown names."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TypeVar

from benchmark.errors import UnknownNameError

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str, kind: str, *, field: str | None = None) -> T:
    """Return ``registry[name]``; otherwise raise :class:`UnknownNameError` naming the valid
    names and the closest match (``difflib``)."""
    try:
        return registry[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(registry), n=1, cutoff=0.5)
        raise UnknownNameError(kind, str(name), registry.keys(), close, field=field) from None
