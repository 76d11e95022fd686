"""``ldct-bench list``: registered names with their metadata, read from the registries."""

from __future__ import annotations

import difflib
import math
from typing import Any

from analysis.metrics import METRICS
from benchmark.config import load_matrix, preset_names
from benchmark.core.conventions import WINDOWS
from benchmark.core.errors import UserError
from benchmark.data import DATASETS
from benchmark.optim import OPTIMIZERS, SCHEDULERS
from benchmark.schemes import SCHEMES, scheme_options
from losses import LOSSES
from models import ARCHITECTURES, DISCRIMINATORS

KINDS = ("losses", "architectures", "discriminators", "schemes", "metrics", "datasets", "optimizers", "schedulers",
         "presets", "windows")


def _fmt(v: Any) -> str:
    if isinstance(v, type):
        return v.__name__
    if isinstance(v, int) and not isinstance(v, bool) and v >= 10_000:
        return f"{v / 1e6:.2f}M"
    if isinstance(v, tuple):
        return "(" + ", ".join(("inf" if x > 0 else "-inf") if isinstance(x, float) and math.isinf(x) else f"{x:g}" if isinstance(x, float) else str(x) for x in v) + ")"
    return str(v)


def _rows(registry: dict[str, Any], fields: list[str]) -> str:
    lines = []
    for name, info in registry.items():
        parts = [f"{f}={_fmt(getattr(info, f))}" for f in fields if hasattr(info, f)]
        summary = getattr(info, "summary", "") or ""
        lines.append(f"{name:<16} {summary}" + (f"  [{'; '.join(parts)}]" if parts else ""))
    return "\n".join(lines)


def listing(what: str) -> str:
    if what == "losses":
        return _rows(LOSSES, ["differentiable", "value_domain", "needs_weights", "has_parameters", "adversarial", "dims", "paper"])
    if what == "architectures":
        return _rows(ARCHITECTURES, ["parameters", "dims", "min_size", "paper"])
    if what == "discriminators":
        return _rows(DISCRIMINATORS, ["parameters", "dims", "min_size", "paper"])
    if what == "schemes":
        return _rows(SCHEMES, ["pairing", "adversarial_terms", "needs", "dims", "paper"]) + "\n" + "\n".join(
            f"  {name} options: {', '.join(scheme_options(name))}" for name in SCHEMES if scheme_options(name))
    if what == "metrics":
        return _rows(METRICS, ["kind", "higher_is_better", "differentiable", "value_domain", "library", "weights"])
    if what == "datasets":
        return "\n".join(f"{k:<16} {info.summary}  conditions: {_conditions(info.cls)}" for k, info in DATASETS.items())
    if what == "optimizers":
        return _rows(OPTIMIZERS, ["paper"])
    if what == "schedulers":
        return _rows(SCHEDULERS, [])
    if what == "presets":
        return "\n".join(f"{name:<24} {load_matrix(name).description}" for name in preset_names())
    if what == "windows":
        return "\n".join(f"{k:<12} [{w.lo:g}, {w.hi:g}] HU (level {w.level:g}, width {w.width:g})" for k, w in WINDOWS.items())
    close = difflib.get_close_matches(what, KINDS, n=1)
    raise UserError(f"cannot list {what!r}.{' Did you mean ' + repr(close[0]) + '?' if close else ''} "
                    f"Valid: {', '.join(KINDS)}", field="list")


def _conditions(cls: Any) -> str:
    try:
        return ", ".join(cls.from_options({}).conditions())
    except Exception:
        return "(depends on options)"
