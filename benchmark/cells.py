"""Cells: one (loss, architecture, dose, seed) combination of a matrix, with a stable readable id.

**Warm starts.** A loss or architecture entry's ``init_from`` (:class:`benchmark.config.InitFrom`) makes
each of its cells start from another cell of the matrix, its *parent* (the *shared start*): the cell
with the coordinates ``init_from`` names and the dependent cell's own dose, seed and other coordinate.
:func:`expand_cells` orders parents before their dependents; :func:`warm_start_errors` is what
``validate`` refuses (a missing or excluded parent, a cycle, an epoch the parent does not keep, another
architecture). The resolved start (parent cell, epoch, the sha256 of its checkpoint file) is part of the
dependent cell's config (:func:`cell_config`), so its config hash changes when its parent does.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from benchmark.config import ArchitectureConfig, ExcludeRule, InitFrom, LossConfig, MatrixConfig
from benchmark.core.errors import UserError


def make_cell_id(loss: str, architecture: str, dose: str, seed: int) -> str:
    """``<loss>__<architecture>__<dose>__s<seed>``."""
    return f"{loss}__{architecture}__{dose}__s{seed}"


@dataclass(frozen=True)
class Cell:
    loss: LossConfig
    architecture: ArchitectureConfig
    dose: str
    seed: int

    @property
    def cell_id(self) -> str:
        """``<loss>__<architecture>__<dose>__s<seed>``, e.g. ``mse__redcnn__25_720__s0``."""
        return make_cell_id(self.loss.label, self.architecture.label, self.dose, self.seed)

    @property
    def init_from(self) -> InitFrom | None:
        """The warm start of this cell: its loss entry's ``init_from``, else its architecture entry's
        (``validate`` refuses a cell that gets one from both)."""
        return self.loss.init_from if self.loss.init_from is not None else self.architecture.init_from

    @property
    def parent_labels(self) -> tuple[str, str] | None:
        """``(loss label, architecture label)`` of the parent cell, or None: no warm start, a file start,
        or a start that names this very cell (an architecture entry's ``{loss: P}`` makes P's own cell of
        that architecture the shared start, trained from scratch)."""
        spec = self.init_from
        if spec is None or spec.is_file:
            return None
        labels = (spec.loss or self.loss.label, spec.architecture or self.architecture.label)
        return None if labels == (self.loss.label, self.architecture.label) else labels

    @property
    def parent_id(self) -> str | None:
        """The id of the parent cell (:attr:`parent_labels`), or None."""
        labels = self.parent_labels
        return None if labels is None else make_cell_id(*labels, self.dose, self.seed)

    def matches(self, rule: ExcludeRule) -> bool:
        return (
            (rule.loss is None or rule.loss == self.loss.label)
            and (rule.architecture is None or rule.architecture == self.architecture.label)
            and (rule.dose is None or rule.dose == self.dose)
            and (rule.seed is None or rule.seed == self.seed)
        )

    def to_dict(self) -> dict[str, Any]:
        # ``init_from`` is recorded resolved (parent, epoch, sha256) by cell_config, not as the entry spells it
        return {
            "cell_id": self.cell_id,
            "loss": self.loss.model_dump(mode="json", exclude={"init_from"}),
            "architecture": self.architecture.model_dump(mode="json", exclude={"init_from"}),
            "dose": self.dose,
            "seed": self.seed,
        }


def expand_cells(matrix: MatrixConfig, *, ordered: bool = True) -> list[Cell]:
    """The cross product ``losses × architectures × doses × seeds`` minus ``exclude`` rules, in a
    fixed order (seed, dose, architecture, loss vary slowest to fastest: loss fastest), so the cells
    compared with each other finish close together; ``ordered`` (default): then each warm-started cell
    after its parent (:func:`parents_first`; a cycle is a :class:`UserError`)."""
    cells = []
    for seed in matrix.seeds:
        for dose in matrix.doses:
            for arch in matrix.architectures:
                for loss in matrix.losses:
                    cell = Cell(loss, arch, dose, seed)
                    if not any(cell.matches(r) for r in matrix.exclude):
                        cells.append(cell)
    return parents_first(cells) if ordered else cells


def dependencies(cells: list[Cell]) -> dict[str, list[str]]:
    """``cell id -> the ids of its parents among cells`` (one at most; empty for a cold start)."""
    ids = {c.cell_id for c in cells}
    return {c.cell_id: [p] if (p := c.parent_id) is not None and p in ids else [] for c in cells}


def parents_first(cells: list[Cell]) -> list[Cell]:
    """``cells`` in topological order, parents before their dependents, otherwise in the given order (of
    the cells ready at each point, the earliest given comes first). A cycle is a :class:`UserError`
    naming its cells (``validate`` reports it per entry first)."""
    deps = dependencies(cells)
    index = {c.cell_id: i for i, c in enumerate(cells)}
    children: dict[str, list[str]] = {}
    for cid, parents in deps.items():
        for p in parents:
            children.setdefault(p, []).append(cid)
    left = {cid: len(parents) for cid, parents in deps.items()}
    ready = [index[cid] for cid, n in left.items() if n == 0]
    heapq.heapify(ready)
    out: list[Cell] = []
    while ready:
        cell = cells[heapq.heappop(ready)]
        out.append(cell)
        for child in children.get(cell.cell_id, []):
            left[child] -= 1
            if left[child] == 0:
                heapq.heappush(ready, index[child])
    if len(out) < len(cells):
        stuck = sorted(cid for cid, n in left.items() if n)
        raise UserError(f"the warm starts form a cycle among {', '.join(stuck)}", field="init_from")
    return out


def cell_config(cell: Cell, matrix: MatrixConfig, start: dict[str, Any] | None = None) -> dict[str, Any]:
    """What defines a cell's training (its ``config.yaml`` and every checkpoint's ``cell``): a rerun
    with a different value must not reuse its checkpoints. ``start``: the resolved warm start
    (``{"cell", "epoch", "sha256"}`` of the parent's checkpoint, or ``{"sha256"}`` of a file; see
    ``benchmark.runner.resolve_start``), recorded as ``init_from``; cold-started cells have no such key."""
    return {
        **cell.to_dict(),
        "dataset": matrix.dataset.model_dump(mode="json"),
        "training": matrix.training.model_dump(mode="json"),
        "deterministic": matrix.deterministic,
        # the kernels and a pinned thread count decide the bytes; unpinned native cells keep their old config
        **({"reproducibility": matrix.reproducibility.model_dump(mode="json")}
           if matrix.reproducibility.pinned else {}),
        **({"init_from": dict(start)} if start is not None else {}),
    }


# ------------------------------------------------------------------------------------- warm starts


def _entries(matrix: MatrixConfig) -> list[tuple[str, str, LossConfig | ArchitectureConfig]]:
    """``(field, axis, entry)`` of every loss and architecture entry, e.g. ``("losses[2]", "loss", ...)``."""
    return ([(f"losses[{i}]", "loss", x) for i, x in enumerate(matrix.losses)]
            + [(f"architectures[{i}]", "architecture", a) for i, a in enumerate(matrix.architectures)])  # fmt: skip


def start_field(matrix: MatrixConfig, cell: Cell) -> str:
    """The field of the ``init_from`` that applies to ``cell``, e.g. ``losses[1].init_from``."""
    axis, label = ("loss", cell.loss.label) if cell.loss.init_from is not None else ("architecture", cell.architecture.label)
    return next(f"{where}.init_from" for where, a, e in _entries(matrix) if a == axis and e.label == label)


def _entry_errors(matrix: MatrixConfig) -> list[str]:
    """Each entry's ``init_from`` on its own: labels of the matrix, not the entry itself, an epoch the
    parent trains and keeps."""
    labels = {"loss": [x.label for x in matrix.losses], "architecture": [a.label for a in matrix.architectures]}
    epochs, keep = matrix.training.epochs, matrix.checkpoints
    errors = []
    for where, axis, entry in _entries(matrix):
        spec = entry.init_from
        if spec is None or spec.is_file:
            continue
        for key in ("loss", "architecture"):
            value = getattr(spec, key)
            if value is not None and value not in labels[key]:
                errors.append(f"{where}.init_from.{key}: {value!r} is not {'a loss' if key == 'loss' else 'an architecture'} "
                              f"label of the matrix (valid: {', '.join(labels[key])})")  # fmt: skip
        other = "architecture" if axis == "loss" else "loss"
        if getattr(spec, axis) == entry.label and getattr(spec, other) is None:
            errors.append(f"{where}.init_from.{axis}: {entry.label!r} is this entry itself; name the {axis} whose cells "
                          "are the shared start")  # fmt: skip
        if isinstance(spec.epoch, int) and spec.epoch > epochs:
            errors.append(f"{where}.init_from.epoch: {spec.epoch} is beyond the parent's {epochs} epoch(s) (training.epochs)")
        elif isinstance(spec.epoch, int) and not keep.keeps(spec.epoch, epochs):
            errors.append(f"{where}.init_from.epoch: the parent's epoch {spec.epoch} is deleted by checkpoints "
                          f"(keep: {keep.keep}{f', every: {keep.every}' if keep.every else ''}); keep it, or start from "
                          "a kept epoch")  # fmt: skip
    return errors


def _cycle(cid: str, parent: dict[str, str]) -> list[str] | None:
    """The cycle reached from ``cid`` by following parents, as a closed path, or None."""
    path: list[str] = []
    while cid in parent and cid not in path:
        path.append(cid)
        cid = parent[cid]
    return [*path[path.index(cid):], cid] if cid in path else None


def _cell_errors(matrix: MatrixConfig) -> list[str]:
    """The warm starts of the cells: one ``init_from`` per cell, a parent in the matrix (not excluded),
    the same architecture (model and kwargs), no cycle."""
    cells = expand_cells(matrix, ordered=False)
    by_id = {c.cell_id: c for c in cells}
    archs = {a.label: a for a in matrix.architectures}
    parent: dict[str, str] = {}
    errors = []
    for cell in cells:
        if cell.loss.init_from is not None and cell.architecture.init_from is not None:
            errors.append(f"{start_field(matrix, cell)}: cell {cell.cell_id} also gets the init_from of architecture "
                          f"{cell.architecture.label!r}; give each cell one warm start")  # fmt: skip
            continue
        labels, pid = cell.parent_labels, cell.parent_id
        if labels is None or pid is None:
            continue
        where = start_field(matrix, cell)
        if pid not in by_id:
            errors.append(f"{where}: cell {cell.cell_id} starts from {pid}, which exclude leaves out of the matrix")
            continue
        mine, theirs = cell.architecture, archs[labels[1]]
        if (theirs.name, theirs.kwargs) != (mine.name, mine.kwargs):
            errors.append(f"{where}.architecture: {theirs.label!r} ({theirs.name} {theirs.kwargs}) is not the model of "
                          f"{mine.label!r} ({mine.name} {mine.kwargs}); a warm start copies the generator's weights, so "
                          "the parent must be the same architecture with the same kwargs")  # fmt: skip
            continue
        parent[cell.cell_id] = pid
    seen: set[frozenset[str]] = set()
    for cid in parent:
        cycle = _cycle(cid, parent)
        if cycle is not None and frozenset(cycle) not in seen:
            seen.add(frozenset(cycle))
            errors.append(f"{start_field(matrix, by_id[cycle[0]])}: the warm starts form a cycle: {' → '.join(cycle)}")
    return errors


def warm_start_errors(matrix: MatrixConfig) -> list[str]:
    """Every problem with the matrix's ``init_from`` entries, each naming its field (``validate``): a
    label that is not the matrix's, an entry naming itself, an epoch beyond ``training.epochs`` or one
    the ``checkpoints`` policy deletes, a cell with two warm starts, a parent that ``exclude`` leaves
    out, a parent of another architecture, a cycle. File starts are checked by ``validate`` (it reads them)."""
    errors = _entry_errors(matrix)
    return errors or _cell_errors(matrix)


def shared_starts(matrix: MatrixConfig) -> dict[str, dict[str, list[str]]]:
    """``{"loss": {label: [dependent labels]}, "architecture": {...}}``: the loss and architecture labels
    whose cells are the shared start of other labels' cells (tables and figures label them so).

    A label counts only when *every* one of its cells is some cell's parent, i.e. the label exists to be a
    start: ``mse_pretrain`` in ``{loss: mse_pretrain}``, or ``pix2pix_pre`` in an architecture entry's
    ``{architecture: pix2pix_pre, loss: none}``. There the loss ``none`` is also the parent's loss, but its
    ``pix2pix`` cells are compared arms, so ``none`` is not labelled a start."""
    cells = expand_cells(matrix, ordered=False)
    parents = {p for c in cells if (p := c.parent_id) is not None}
    out: dict[str, dict[str, list[str]]] = {"loss": {}, "architecture": {}}
    for axis in ("loss", "architecture"):
        by_label: dict[str, list[Cell]] = {}
        for c in cells:
            by_label.setdefault(c.loss.label if axis == "loss" else c.architecture.label, []).append(c)
        for label, members in by_label.items():
            if not all(c.cell_id in parents for c in members):
                continue
            dependents: list[str] = []
            for c in cells:
                labels = c.parent_labels
                own = c.loss.label if axis == "loss" else c.architecture.label
                if labels is not None and labels[0 if axis == "loss" else 1] == label and own != label and own not in dependents:
                    dependents.append(own)
            out[axis][label] = dependents
    return out


def shared_start_label(label: str, dependents: list[str]) -> str:
    """How tables and figures name a shared start: ``l1_pretrain (shared start of 0.95mse+0.05wgan_gp)``."""
    return f"{label} (shared start of {', '.join(dependents)})"
