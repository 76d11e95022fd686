"""Look-up in the plain-dict registries of frozen info records (``losses.LOSSES``,
``models.ARCHITECTURES``/``DISCRIMINATORS``, ``analysis.metrics.METRICS``, ``benchmark.data.DATASETS``,
``benchmark.optim.OPTIMIZERS``/``SCHEDULERS``, ``benchmark.core.weights.WEIGHTS``), all through
:func:`lookup`, with a helpful error for unknown names; and the one constructor of registered classes."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

from benchmark.core.errors import UnknownNameError, UserError

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str, kind: str, *, field: str | None = None) -> T:
    """Return ``registry[name]``; otherwise raise :class:`UnknownNameError` naming the valid
    names and the closest match (``difflib``)."""
    try:
        return registry[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(registry), n=1, cutoff=0.5)
        raise UnknownNameError(kind, str(name), registry.keys(), close, field=field) from None


def construct(cls: type[T], kwargs: Mapping[str, Any] | None, what: str, *, field: str) -> T:
    """``cls(**kwargs)`` for a registered class; unknown kwargs, and the ``ValueError``/``TypeError``/
    ``RuntimeError`` a constructor raises for a bad value (torch raises the last for e.g. a negative
    channel count), become a :class:`UserError` naming ``field`` (and, for unknown kwargs, listing the
    allowed ones)."""
    kwargs = dict(kwargs or {})
    signature = inspect.signature(cls)
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        allowed = [p for p in signature.parameters if p not in ("self", "args", "kwargs")]
        raise UserError(f"{what}: {exc}; allowed kwargs: {', '.join(allowed) or '(none)'}", field=field) from None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UserError(f"{what}: {exc}", field=field) from None
