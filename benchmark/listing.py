"""``ldct-bench list``: registered names with their metadata, read from the registries."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from benchmark.errors import UserError

KINDS = ("losses", "architectures", "discriminators", "metrics", "datasets", "presets", "windows")


def _fmt(v: Any) -> str:
    if isinstance(v, type):
        return v.__name__
    if isinstance(v, tuple):
        return "(" + ", ".join(("inf" if x > 0 else "-inf") if isinstance(x, float) and math.isinf(x) else f"{x:g}" if isinstance(x, float) else str(x) for x in v) + ")"
    return str(v)


def _rows(registry: dict[str, Any], fields: list[str]) -> str:
    lines = []
    for name, info in registry.items():
        meta = dataclasses.asdict(info) if dataclasses.is_dataclass(info) and not isinstance(info, type) else {}
        parts = [f"{f}={_fmt(getattr(info, f, meta.get(f)))}" for f in fields if hasattr(info, f)]
        summary = getattr(info, "summary", "") or ""
        lines.append(f"{name:<16} {summary}" + (f"  [{'; '.join(parts)}]" if parts else ""))
    return "\n".join(lines)


def listing(what: str) -> str:
    if what == "losses":
        from losses import LOSSES

        return _rows(LOSSES, ["differentiable", "value_domain", "needs_weights", "has_parameters", "adversarial", "dims", "paper"])
    if what == "architectures":
        from models import ARCHITECTURES

        return _rows(ARCHITECTURES, ["dims", "paper"])
    if what == "discriminators":
        from models import DISCRIMINATORS

        return _rows(DISCRIMINATORS, ["dims", "paper"])
    if what == "metrics":
        from analysis.metrics import METRICS

        return _rows(METRICS, ["kind", "higher_is_better", "differentiable", "value_domain", "library", "weights"])
    if what == "datasets":
        from benchmark.data import DATASETS

        return "\n".join(f"{k:<16} {cls.summary}  conditions: {_conditions(cls)}" for k, cls in DATASETS.items())
    if what == "presets":
        from benchmark.config import load_matrix, preset_names

        out = []
        for name in preset_names():
            m = load_matrix(name)
            out.append(f"{name:<24} {m.description}")
        return "\n".join(out)
    if what == "windows":
        from benchmark.conventions import WINDOWS

        return "\n".join(f"{k:<12} [{w.lo:g}, {w.hi:g}] HU (level {w.level:g}, width {w.width:g})" for k, w in WINDOWS.items())
    import difflib

    close = difflib.get_close_matches(what, KINDS, n=1)
    raise UserError(f"cannot list {what!r}.{' Did you mean ' + repr(close[0]) + '?' if close else ''} "
                    f"Valid: {', '.join(KINDS)}", field="list")


def _conditions(cls: Any) -> str:
    try:
        return ", ".join(cls.from_options({}).conditions())
    except Exception:
        return "(depends on options)"
