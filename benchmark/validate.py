"""Check a parsed matrix against the registries before anything trains.

Every problem is collected and reported in one :class:`UserError` whose lines name the field, the bad
value and what is allowed (with the closest valid name). Losses and architectures are instantiated
once each here, so bad kwargs and missing weight files fail now, not after hours of training.
"""

from __future__ import annotations

from typing import Any

from analysis.metrics import METRICS
from benchmark.cells import expand_cells
from benchmark.config import MatrixConfig
from benchmark.core.errors import UserError
from benchmark.core.registry import lookup
from benchmark.data import Dataset, open_dataset
from losses import LOSSES, build_term
from models import ARCHITECTURES, ModelInfo, build_model


def _collect(errors: list[str], fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except UserError as exc:
        errors.append(str(exc))
        return None


def _min_size(info: ModelInfo, kwargs: dict[str, Any]) -> int | None:
    """The architecture's smallest input side with these kwargs; None where they do not bind (the
    instantiation below reports that, with the allowed kwargs)."""
    try:
        return info.min_size_for(kwargs)
    except TypeError:
        return None


def check_matrix(matrix: MatrixConfig, *, instantiate: bool = True) -> Dataset | None:
    """Raise :class:`UserError` listing every problem; return the opened dataset when all is well."""
    errors: list[str] = []
    dataset = _collect(errors, open_dataset, matrix.dataset.kind, matrix.dataset.options)
    if dataset is not None:
        conditions = {c: c for c in dataset.conditions()}
        for i, dose in enumerate(matrix.doses):
            _collect(errors, lookup, conditions, dose, "condition", field=f"doses[{i}] (dataset {matrix.dataset.kind!r})")

    dims_needed: set[int] = set()
    for i, arch in enumerate(matrix.architectures):
        info = _collect(errors, lookup, ARCHITECTURES, arch.name, "architecture", field=f"architectures[{i}].name")
        if info is None:
            continue
        dims_needed.update(info.dims)
        p = matrix.training.patch_size
        need = _min_size(info, arch.kwargs)
        if p is not None and need is not None and p < need:
            errors.append(f"training.patch_size: {p} is smaller than {arch.name}'s minimum input size {need}")
        if instantiate:
            _collect(errors, build_model, arch.name, arch.kwargs, field=f"architectures[{i}].kwargs")

    for i, loss in enumerate(matrix.losses):
        for j, term in enumerate(loss.terms):
            field = f"losses[{i}] ({loss.label}).terms[{j}]"
            info = _collect(errors, lookup, LOSSES, term.name, "loss", field=f"{field}.name")
            if info is None:
                continue
            if dims_needed and not dims_needed & set(info.dims):
                errors.append(f"{field}: loss {term.name!r} supports {info.dims}-D inputs, the architectures {sorted(dims_needed)}-D")
            if instantiate:
                _collect(errors, build_term, term.name, term.kwargs, field=f"{field}.kwargs")

    for i, m in enumerate(matrix.evaluation.metrics):
        _collect(errors, lookup, METRICS, m, "metric", field=f"evaluation.metrics[{i}]")

    labels: dict[str, set[Any]] = {
        "loss": {x.label for x in matrix.losses},
        "architecture": {x.label for x in matrix.architectures},
        "dose": set(matrix.doses),
        "seed": set(matrix.seeds),
    }
    for i, rule in enumerate(matrix.exclude):
        for key, valid_set in labels.items():
            value = getattr(rule, key)
            if value is not None and value not in valid_set:
                errors.append(f"exclude[{i}].{key}: {value!r} is not in the matrix ({', '.join(map(str, sorted(valid_set, key=str)))})")
    if not errors and not expand_cells(matrix):
        errors.append("exclude: every cell is excluded; nothing would train")
    if errors:
        raise UserError("the matrix is not valid:\n  " + "\n  ".join(errors))
    return dataset
