"""Check a parsed matrix against the registries before anything trains.

Every problem is collected and reported in one :class:`UserError` whose lines name the field, the bad
value and what is allowed (with the closest valid name). Losses and architectures are instantiated
once each here, and the optimizer and scheduler are built on the model, so bad kwargs fail now, not
after the data is built or hours of training; the training patch is checked against the dataset's image
size. What ``run`` would refuse, this refuses first.

Two kinds of problem are kept apart: what the matrix gets wrong (always an error, exit 2) and what this
machine lacks (:class:`~benchmark.core.errors.MissingResource`: a weight file, a GPU, a data folder).
``run`` refuses both; ``ldct-bench validate`` reports the second kind as warnings with their fix, so a
matrix can be checked before its weights are fetched or away from its data (``--strict``: errors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from analysis.metrics import METRICS
from benchmark import optim
from benchmark.cells import expand_cells, warm_start_errors
from benchmark.checkpoint import load_start_weights, read_start_weights
from benchmark.claims_spec import CloserTextureClaim, EquivalentClaim
from benchmark.config import ArchitectureConfig, LossConfig, MatrixConfig
from benchmark.core.device import resolve_device
from benchmark.core.errors import MissingResource, UserError
from benchmark.core.registry import lookup
from benchmark.data import Dataset, open_dataset
from benchmark.schemes import SCHEMES, check_options
from benchmark.schemes import pairing as scheme_pairing
from benchmark.schemes.base import build_scheduler
from benchmark.train import steps_per_epoch
from losses import LOSSES, build_term
from models import ARCHITECTURES, ModelInfo, build_model


class _Missing(str):
    """A problem message about what this machine lacks (from a :class:`MissingResource`)."""


def _collect(errors: list[str], fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except MissingResource as exc:
        errors.append(_Missing(str(exc)))
        return None
    except UserError as exc:
        errors.append(str(exc))
        return None


def _optimizer_errors(matrix: MatrixConfig, model: Any) -> list[str]:
    """Build the training optimizer and scheduler on ``model`` as a cell does, so unknown or bad kwargs
    are reported here. The schedule's length in steps is unknown before the data is built; a per-step
    schedule is sized as if an epoch had ``patches_per_epoch / batch_size`` steps (else many: a warm-up
    longer than the training is then reported by ``run``)."""
    tr = matrix.training
    errors: list[str] = []
    params = [p for p in model.parameters() if p.requires_grad] or [torch.nn.Parameter(torch.zeros(1))]
    opt = _collect(errors, optim.build_optimizer, params, tr.optimizer.name, tr.optimizer.lr, tr.optimizer.kwargs,
                   field="training.optimizer.kwargs")  # fmt: skip
    if opt is not None:
        steps = steps_per_epoch(tr, 10**6) if tr.patches_per_epoch is None else steps_per_epoch(tr, 0)
        _collect(errors, build_scheduler, opt, tr.scheduler, tr.epochs, steps)
    return errors


def _image_errors(patch: int | list[int] | None, shape: tuple[int, int] | None, kind: str) -> list[str]:
    """The training patch fits the dataset's images (a larger one would be refused by the sampler)."""
    if shape is None or patch is None:
        return []
    side = patch if isinstance(patch, int) else max(patch[1:])
    if side > min(shape):
        return [f"training.patch_size: {patch} does not fit the {shape[0]}x{shape[1]} images of dataset {kind!r}; "
                f"give a patch of at most {min(shape)} pixels, or null to train on whole slices"]  # fmt: skip
    return []


def _min_size(info: ModelInfo, kwargs: dict[str, Any]) -> int | None:
    """The architecture's smallest input side with these kwargs; None where they do not bind (the
    instantiation below reports that, with the allowed kwargs)."""
    try:
        return info.min_size_for(kwargs)
    except TypeError:
        return None


def _model_dims(info: ModelInfo, patch_dims: int | None) -> int:
    """The dimensionality a cell trains the architecture in: its only one, else the patch's (2 by default)."""
    if len(info.dims) == 1:
        return info.dims[0]
    return patch_dims if patch_dims in info.dims else 2


def _patch_errors(patch: int | list[int] | None, i: int, name: str, dims: int, need: int | None) -> list[str]:
    """The training patch against architecture ``i``: its form (an int or null for 2-D models,
    ``[d, h, w]`` for 3-D ones) and every side at least the architecture's minimum input size."""
    where = f"architectures[{i}] ({name})"
    if dims == 3 and not isinstance(patch, list):
        form = "whole slices (null)" if patch is None else f"a square 2-D patch ({patch})"
        return [f"training.patch_size: {form} for the 3-D model {where}: give [depth, height, width], crops of "
                "`depth` consecutive slices"]  # fmt: skip
    if dims == 2 and isinstance(patch, list):
        return [f"training.patch_size: a 3-D patch {patch} for the 2-D model {where}: give an int (square slice "
                "patches) or null (whole slices)"]  # fmt: skip
    if need is None or patch is None:
        return []
    if isinstance(patch, int) and patch < need:
        return [f"training.patch_size: {patch} is smaller than {name}'s minimum input size {need}"]
    if isinstance(patch, list) and min(patch) < need:
        return [f"training.patch_size: {patch} has a side smaller than {name}'s minimum input size {need} "
                "(every side of [depth, height, width] must reach it)"]  # fmt: skip
    return []


def _scheme_errors(matrix: MatrixConfig, i: int, dims: int, model: Any) -> list[str]:
    """Architecture ``i``'s training scheme: a registered name, its options, the dimensionality and
    methods it needs, the pairing it samples, and (with the built ``model``) a generator that maps
    (N, 1, p, p) to (N, 1, p, p) at the training patch size."""
    arch = matrix.architectures[i]
    where = f"architectures[{i}]"
    try:
        info = lookup(SCHEMES, arch.scheme, "scheme", field=f"{where}.scheme")
    except UserError as exc:
        return [str(exc)]
    errors: list[str] = []
    _collect(errors, check_options, arch.scheme, arch.scheme_kwargs, field=f"{where}.scheme_kwargs")
    if dims not in info.dims:
        errors.append(f"{where}.scheme: {arch.scheme!r} trains {' or '.join(map(str, info.dims))}-D models; "
                      f"{arch.label!r} is {dims}-D")  # fmt: skip
    arch_info = ARCHITECTURES.get(arch.name)  # an unknown name is reported by the caller
    missing = [m for m in info.needs if arch_info is not None and not callable(getattr(arch_info.cls, m, None))]
    if missing:
        can = sorted(n for n, a in ARCHITECTURES.items() if all(callable(getattr(a.cls, m, None)) for m in info.needs))
        errors.append(f"{where}.name: the {arch.scheme!r} scheme needs a two-domain translator with "
                      f"{', '.join(info.needs)}; {arch.name!r} has no {', '.join(missing)} (use: {', '.join(can)})")
    if scheme_pairing(arch.scheme, matrix.training.pairing) == "unpaired" and dims != 2:
        errors.append(f"training.pairing: unpaired sampling draws 2-D patches; {arch.label!r} is {dims}-D")
    patch = matrix.training.patch_size
    if model is not None and not errors and not info.needs_loss and isinstance(patch, int):  # a framework of its own
        errors += _maps_patch(model, patch, where)
    return errors


def _maps_patch(model: Any, patch: int, where: str) -> list[str]:
    """The generator maps a (2, 1, p, p) patch to (2, 1, p, p) (a GAN framework compares and
    discriminates its outputs as images of the input's shape)."""
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, 1, patch, patch))
    except Exception as exc:  # a shape error of any kind
        return [f"{where}: the generator fails on a (2, 1, {patch}, {patch}) patch: {type(exc).__name__}: {exc}"]
    if tuple(out.shape) != (2, 1, patch, patch):
        return [f"{where}: the generator maps (2, 1, {patch}, {patch}) to {tuple(out.shape)}; a training scheme needs "
                "the input's shape"]  # fmt: skip
    return []


def _start_file_errors(matrix: MatrixConfig, pairs: set[tuple[str, str]], instantiate: bool) -> list[str]:
    """The checkpoint-file warm starts (``init_from: {checkpoint, sha256}``): the file is here (else what
    this machine lacks), has that sha256, is read safely (:func:`benchmark.checkpoint.read_start_weights`)
    and, with ``instantiate``, its weights load into every architecture whose cells start from it."""
    errors: list[str] = []
    entries: list[tuple[str, LossConfig | ArchitectureConfig, list[ArchitectureConfig]]] = [
        (f"losses[{i}]", x, [a for a in matrix.architectures if (x.label, a.label) in pairs]) for i, x in enumerate(matrix.losses)
    ] + [(f"architectures[{i}]", a, [a]) for i, a in enumerate(matrix.architectures)]
    for where, entry, archs in entries:
        spec = entry.init_from
        if spec is None or spec.checkpoint is None or spec.sha256 is None:
            continue
        path = Path(spec.checkpoint).expanduser()
        if not path.is_file():
            errors.append(_Missing(f"{where}.init_from.checkpoint: {path}: no such file (the warm start's weights; "
                                   "copy it here or fix the path)"))  # fmt: skip
            continue
        loaded = _collect(errors, read_start_weights, path, spec.sha256)
        if loaded is None:
            errors[-1] = f"{where}.init_from: {errors[-1]}"
            continue
        for arch in archs if instantiate else []:
            model = _collect(errors, build_model, arch.name, arch.kwargs, field=f"architectures ({arch.label}).kwargs")
            if model is not None:
                _collect(errors, load_start_weights, model, loaded[0], architecture=loaded[1], name=arch.name,
                         kwargs=arch.kwargs, source=f"{where}.init_from.checkpoint ({path}, architecture {arch.label!r})")  # fmt: skip
    return errors


def check_matrix(matrix: MatrixConfig, *, instantiate: bool = True, warnings: list[str] | None = None) -> Dataset | None:
    """Raise :class:`UserError` listing every problem; return the opened dataset when all is well.

    With a ``warnings`` list, what this machine lacks (a :class:`MissingResource`: weight files, GPUs,
    data folders) is appended there instead of raised (``ldct-bench validate`` without ``--strict``);
    without one it is an error like the rest (``run``)."""
    errors: list[str] = []
    dataset = _collect(errors, open_dataset, matrix.dataset.kind, matrix.dataset.options)
    _collect(errors, resolve_device, matrix.device, field="device")
    if dataset is not None:
        found = _collect(errors, dataset.conditions)
        conditions = {c: c for c in found or []}
        for i, dose in enumerate(matrix.doses if found is not None else []):
            _collect(errors, lookup, conditions, dose, "condition", field=f"doses[{i}] (dataset {matrix.dataset.kind!r})")
        errors += _image_errors(matrix.training.patch_size, _collect(errors, dataset.image_shape), matrix.dataset.kind)

    arch_dims: dict[str, int] = {}  # architecture label -> the dimensionality its cells train in
    patch = matrix.training.patch_size
    for i, arch in enumerate(matrix.architectures):
        info = _collect(errors, lookup, ARCHITECTURES, arch.name, "architecture", field=f"architectures[{i}].name")
        if info is None:
            continue
        dims = arch_dims[arch.label] = _model_dims(info, matrix.training.patch_dims)
        errors += _patch_errors(patch, i, arch.name, dims, _min_size(info, arch.kwargs))
        model = _collect(errors, build_model, arch.name, arch.kwargs, field=f"architectures[{i}].kwargs") if instantiate else None
        errors += _scheme_errors(matrix, i, dims, model)
        if model is not None and i == 0:  # the optimizer settings are the matrix's, not the architecture's
            errors += _optimizer_errors(matrix, model)

    # every term of a loss must take the inputs of every architecture it is trained with (excluded cells aside)
    pairs = {(c.loss.label, c.architecture.label) for c in expand_cells(matrix, ordered=False)}
    for i, loss in enumerate(matrix.losses):
        for j, term in enumerate(loss.terms):
            field = f"losses[{i}] ({loss.label}).terms[{j}]"
            info = _collect(errors, lookup, LOSSES, term.name, "loss", field=f"{field}.name")
            if info is None:
                continue
            takes = info.dims_for(term.kwargs)
            for label, dims in arch_dims.items():
                if (loss.label, label) in pairs and dims not in takes:
                    hint = f" (set its kwargs dims: {dims})" if dims in info.dims else ""
                    errors.append(f"{field}: loss {term.name!r} as configured takes {' or '.join(map(str, takes))}-D "
                                  f"inputs, architecture {label!r} is {dims}-D{hint}")  # fmt: skip
            if instantiate:
                _collect(errors, build_term, term.name, term.kwargs, field=f"{field}.kwargs")
            for arch in matrix.architectures:
                scheme = SCHEMES.get(arch.scheme)
                if info.adversarial and scheme is not None and not scheme.adversarial_terms and (loss.label, arch.label) in pairs:
                    errors.append(f"{field}: {term.name!r} trains its own discriminator, which the {arch.scheme!r} scheme "
                                  f"of architecture {arch.label!r} cannot use (it has its own adversarial objective); "
                                  "a framework's loss entry adds non-adversarial terms only, or is 'none'")  # fmt: skip
        for arch in matrix.architectures:
            scheme = SCHEMES.get(arch.scheme)
            if not loss.terms and scheme is not None and scheme.needs_loss and (loss.label, arch.label) in pairs:
                errors.append(f"losses[{i}] ({loss.label}): no loss terms, but the {arch.scheme!r} scheme of architecture "
                              f"{arch.label!r} trains on the loss alone; '{loss.label}' is a GAN framework's baseline "
                              "(pix2pix, cyclegan, unit)")  # fmt: skip

    for i, m in enumerate(matrix.evaluation.metrics):
        _collect(errors, lookup, METRICS, m, "metric", field=f"evaluation.metrics[{i}]")

    for i, claim in enumerate(matrix.claims):  # labels and metric names are checked by the schema
        if isinstance(claim, CloserTextureClaim | EquivalentClaim):  # no better direction needed
            continue
        info = METRICS.get(claim.metric)
        if info is not None and not info.ranked:
            errors.append(f"claims[{i}].metric: {info.name!r} has no better direction; compare it with a "
                          "reference with kind: closer_texture")  # fmt: skip

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
    if not errors and not expand_cells(matrix, ordered=False):
        errors.append("exclude: every cell is excluded; nothing would train")
    errors += warm_start_errors(matrix)
    errors += _start_file_errors(matrix, pairs, instantiate)
    if warnings is not None:
        warnings += [e for e in dict.fromkeys(errors) if isinstance(e, _Missing)]
        errors = [e for e in errors if not isinstance(e, _Missing)]
    if errors:
        raise UserError("the matrix is not valid:\n  " + "\n  ".join(dict.fromkeys(errors)))
    return dataset
