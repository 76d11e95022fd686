"""The matrix YAML: pydantic models (unknown keys are errors), YAML loading and preset look-up.

A matrix names a dataset, the axes ``losses × architectures × doses × seeds`` (their cross product,
minus ``exclude`` entries, is the set of cells), training and evaluation settings and the device.
:func:`load_matrix` parses and validates a file or a shipped preset; :mod:`benchmark.validate`
then checks every name against the registries before anything trains.

Loss entries take four forms, all normalised to :class:`LossConfig` (a label plus weighted terms)::

    losses:
      - mse                                   # a registered name
      - {name: charbonnier, kwargs: {eps: 1.0e-3}}
      - 0.95 mse + 0.05 wgan_gp               # a weighted sum, as text
      - {mse: 0.95, wgan_gp: 0.05}            # a weighted sum, as a mapping
      - {label: mse_wgan, terms: [{name: mse, weight: 0.95}, {name: wgan_gp, weight: 0.05, kwargs: {critic_steps: 5}}]}
      - none                                  # GAN frameworks only: nothing added to the framework's objective

In a GAN framework (an architecture's ``scheme``: pix2pix, cyclegan, unit) a loss entry names only the
terms *added* to the framework's own objective, e.g. ``{mstlf: 0.001}``; ``none`` is its baseline.

A loss or architecture entry may start its cells from another cell's generator weights (a warm start,
:class:`InitFrom`), e.g. adversarial fine-tuning after supervised pre-training::

    losses:
      - {name: l1, label: l1_pretrain}
      - {mse: 0.95, wgan_gp: 0.05, init_from: {loss: l1_pretrain, epoch: final}}
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    ValidationError,
    field_validator,
    model_validator,
)

from benchmark.claims_spec import Claim, GateConfig, reference_errors
from benchmark.core.errors import UnknownNameError, UserError
from benchmark.core.registry import lookup
from benchmark.optim import OPTIMIZERS, SCHEDULERS

_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]*")
# A label is a part of every cell id (``<loss>__<architecture>__<dose>__s<seed>``), which names a folder
# and files under it: three labels of at most LABEL_MAX characters and a seed below MAX_SEED keep a cell
# id (and ``analysis/examples/<cell id>.npz``) well inside the 255-byte file-name limit.
LABEL_MAX = 64
MAX_SEED = 2**32 - 1

# Integers in the matrix are integers: YAML ``true`` (a bool is an int to Python) or ``2.0`` is refused
# rather than read as 1 or 2.
StrictPositiveInt = Annotated[int, Field(gt=0, strict=True)]
StrictNonNegativeInt = Annotated[int, Field(ge=0, strict=True)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


def _check_label(label: str, what: str) -> str:
    """A label as it may appear in a cell id and a file name: letters, digits and ``_.+-``, starting with
    a letter or digit, no ``__``, at most :data:`LABEL_MAX` characters (the whole string: a trailing
    newline is refused too)."""
    if not _LABEL_RE.fullmatch(label) or "__" in label:
        raise ValueError(
            f"{what} {label!r} must start with a letter or digit and use only letters, digits and '_.+-' "
            "(no double underscore: it separates the parts of a cell id)"
        )
    if len(label) > LABEL_MAX:
        raise ValueError(f"{what} {label[:20]!r}... has {len(label)} characters; at most {LABEL_MAX} are allowed "
                         "(labels name the cell folders): give the entry a shorter 'label'")  # fmt: skip
    return label


def _fmt_weight(w: float) -> str:
    return f"{w:g}"


_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _none(value: Any) -> bool:
    return value is None


class InitFrom(Strict):
    """A warm start (``init_from:`` of a loss or an architecture entry): the cell's generator starts from
    the weights of another cell of the same matrix, or of a checkpoint file, instead of its random
    initialisation. Either

    * ``{loss: <label>}`` and/or ``{architecture: <label>}``: the parent cell's coordinates that differ
      from the dependent cell's (dose, seed and the coordinate not named are the dependent cell's own),
      at ``epoch: final`` (the default: the parent's last epoch) or a named epoch ``N``; or
    * ``{checkpoint: <path>, sha256: <hex>}``: a file (an ldct-bench checkpoint, whose ``model`` is
      taken, or a state dict of tensors), used only if its sha256 is the one given.

    Only the generator's weights (its ``state_dict``: parameters and buffers) are copied. The optimizer,
    the schedule, the history and the RNG state are not: a warm-started cell is a new training run
    (epoch 1, its own optimizer, the same seed-driven data order as a cold start), and the scheme's
    other networks (discriminators, critics, CycleGAN's F) start fresh. The parent's architecture must
    be the same model with the same kwargs (its label and training scheme may differ)."""

    loss: str | None = Field(None, exclude_if=_none, description="the parent cell's loss label (default: the cell's own)")
    architecture: str | None = Field(
        None, exclude_if=_none, description="the parent cell's architecture label (default: the cell's own)"
    )
    epoch: Literal["final"] | StrictPositiveInt | None = Field(
        None, exclude_if=_none, description="the parent's epoch whose weights are copied: final (default) or N"
    )
    checkpoint: str | None = Field(None, exclude_if=_none, description="a weight file instead of a parent cell")
    sha256: str | None = Field(None, exclude_if=_none, description="the checkpoint file's sha256 (hex)")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not _SHA256_RE.fullmatch(v.lower()):
            raise ValueError(f"sha256 {v!r} must be 64 hexadecimal digits (sha256sum FILE)")
        return None if v is None else v.lower()

    @model_validator(mode="after")
    def _one_form(self) -> InitFrom:
        cell = self.loss is not None or self.architecture is not None
        if self.checkpoint is not None or self.sha256 is not None:
            if cell or self.epoch is not None:
                raise ValueError("init_from names a parent cell ({loss, architecture, epoch}) or a file "
                                 "({checkpoint, sha256}), not both")  # fmt: skip
            if self.checkpoint is None or self.sha256 is None:
                raise ValueError("a checkpoint file start needs both checkpoint: <path> and sha256: <hex> (sha256sum FILE)")
            return self
        if not cell:
            raise ValueError("init_from needs loss: <label> and/or architecture: <label> (the parent cell), "
                             "or checkpoint: <path> with sha256: <hex>")  # fmt: skip
        if self.epoch is None:
            self.epoch = "final"
        return self

    @property
    def is_file(self) -> bool:
        return self.checkpoint is not None


_INIT_FROM_DOC = "a warm start: the generator starts from another cell's (or a file's) weights (InitFrom)"


class LossTerm(Strict):
    """One registered loss with its kwargs and weight in a weighted sum."""

    name: str
    weight: float = 1.0
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("weight")
    @classmethod
    def _finite_positive(cls, v: float) -> float:
        if not v > 0 or v != v or v == float("inf"):
            raise ValueError(f"weight must be a positive finite number, got {v}")
        return v


class LossConfig(Strict):
    """A training loss: one term, or a weighted sum of terms. ``label`` names it in cell ids."""

    label: str
    terms: list[LossTerm] = Field(
        default_factory=list, description="empty (the entry 'none') only in a GAN framework: its own baseline objective"
    )
    init_from: InitFrom | None = Field(None, exclude_if=_none, description=_INIT_FROM_DOC)

    @field_validator("label")
    @classmethod
    def _label(cls, v: str) -> str:
        return _check_label(v, "loss label")

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        return normalise_loss_entry(data)


# Loss entries with no terms: a GAN framework's own objective, nothing added (its baseline).
NO_EXTRA_TERMS = ("none", "baseline")

_TERM_RE = re.compile(r"^\s*(?:(?P<w>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*?\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$")
_STRUCTURED_KEYS = {"name", "kwargs", "label", "terms", "weight"}


def default_label(terms: list[dict[str, Any]]) -> str:
    if len(terms) == 1 and float(terms[0].get("weight", 1.0)) == 1.0:
        return str(terms[0]["name"])
    return "+".join(f"{_fmt_weight(float(t.get('weight', 1.0)))}{t['name']}" for t in terms)


def normalise_loss_entry(data: Any) -> Any:
    """Turn any of the accepted loss forms into ``{"label": ..., "terms": [...]}`` (plus ``init_from``,
    which any mapping form may carry)."""
    if isinstance(data, LossConfig):
        return data.model_dump()
    if isinstance(data, dict) and "init_from" in data:
        rest = {k: v for k, v in data.items() if k != "init_from"}
        out = normalise_loss_entry(rest)
        return {**out, "init_from": data["init_from"]} if isinstance(out, dict) else out
    if isinstance(data, str) and data.strip() in NO_EXTRA_TERMS:
        return {"label": data.strip(), "terms": []}
    if isinstance(data, str):
        terms = []
        for part in data.split("+"):
            m = _TERM_RE.match(part)
            if not m:
                raise ValueError(
                    f"cannot read loss {data!r}: write a registered name, or a weighted sum like '0.95 mse + 0.05 wgan_gp'"
                )
            terms.append({"name": m["name"], "weight": float(m["w"]) if m["w"] else 1.0})
        return {"label": default_label(terms), "terms": terms}
    if isinstance(data, dict):
        keys = set(data)
        if "terms" in keys:
            out = dict(data)
            out.setdefault("label", default_label([dict(t) if isinstance(t, dict) else {"name": t} for t in data["terms"]]))
            return out
        if "name" in keys and keys <= _STRUCTURED_KEYS:
            term = {k: data[k] for k in ("name", "kwargs", "weight") if k in data}
            label = data.get("label") or default_label([term])
            return {"label": label, "terms": [term]}
        if keys and not keys & _STRUCTURED_KEYS and all(isinstance(v, int | float) for v in data.values()):
            terms = [{"name": k, "weight": float(v)} for k, v in data.items()]
            return {"label": default_label(terms), "terms": terms}
        raise ValueError(
            "a loss entry is a name, 'w1 a + w2 b', {name, kwargs, label}, {label, terms} or {name: weight, ...}; "
            f"got keys {sorted(keys)}"
        )
    raise ValueError(f"a loss entry must be a string or a mapping, got {type(data).__name__}")


class ArchitectureConfig(Strict):
    """A registered architecture with its constructor kwargs, trained in a training ``scheme``
    (``benchmark.schemes.SCHEMES``: supervised, pix2pix, cyclegan, unit) with its ``scheme_kwargs``;
    ``label`` names it in cell ids."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    label: str = ""
    scheme: str = Field("supervised", description="training framework: supervised, pix2pix, cyclegan or unit")
    scheme_kwargs: dict[str, Any] = Field(default_factory=dict, description="options of the scheme (e.g. lambda_cycle)")
    init_from: InitFrom | None = Field(None, exclude_if=_none, description=_INIT_FROM_DOC)

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        return data

    @model_validator(mode="after")
    def _default_label(self) -> ArchitectureConfig:
        if not self.label:
            self.label = self.name
        _check_label(self.label, "architecture label")
        return self


class DatasetConfig(Strict):
    """``kind`` is a name in ``benchmark.data.DATASETS``; ``options`` are checked by that dataset."""

    kind: str = "synth"
    options: dict[str, Any] = Field(default_factory=dict)


def _registered(registry: dict[str, Any], kind: str) -> Any:
    """A field validator accepting the names of ``registry`` (unknown: the valid names, closest match)."""

    def check(name: str) -> str:
        try:
            lookup(registry, name, kind)
        except UnknownNameError as exc:
            raise ValueError(exc.message) from None
        return name

    return check


class OptimizerConfig(Strict):
    """``name`` is a name in :data:`benchmark.optim.OPTIMIZERS`; ``kwargs`` go to its constructor."""

    name: Annotated[str, AfterValidator(_registered(OPTIMIZERS, "optimizer"))] = "adam"
    lr: float = Field(1e-4, gt=0)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class SchedulerConfig(Strict):
    """``name`` is a name in :data:`benchmark.optim.SCHEDULERS` (``step``, ``multistep``, ``cosine``,
    ``exponential``, ``plateau`` on the validation loss, or ``none``); ``kwargs`` override its
    defaults. Stepped once per epoch, or after every optimizer step with ``interval: step`` (then its
    counts, e.g. cosine's ``T_max``, are optimizer steps and default to the whole training), after an
    optional linear ``warmup`` of that many steps."""

    name: Annotated[str, AfterValidator(_registered(SCHEDULERS, "scheduler"))] = "none"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    interval: Literal["epoch", "step"] = Field(
        "epoch", description="step the schedule once per epoch, or after every optimizer step (its counts are then steps)"
    )
    warmup: StrictNonNegativeInt = Field(0, description="optimizer steps of linear learning-rate warm-up (needs interval: step)")

    @model_validator(mode="after")
    def _warmup_per_step(self) -> SchedulerConfig:
        if self.warmup and self.interval != "step":
            raise ValueError("warmup counts optimizer steps: set interval: step")
        return self


class EarlyStoppingConfig(Strict):
    enabled: bool = False
    patience: StrictPositiveInt = 10
    min_delta: NonNegativeFloat = 0.0


class TrainingConfig(Strict):
    """How each cell trains. Besides the optimisation settings:

    * ``precision``: ``fp32`` (default; PyTorch's defaults untouched, so CPU results are bit-identical
      between runs), ``tf32`` (TensorFloat-32 matmuls and cuDNN convolutions on CUDA during the
      training epochs) or ``bf16`` (forward pass and loss under ``torch.autocast`` with bfloat16; also
      on the CPU). bf16 and tf32 results are not bit-comparable to fp32 ones; validation stays fp32.
    * ``channels_last``: networks and batches in channels-last memory layout (faster convolutions on
      recent GPUs; the same values, but other kernels, so not bit-comparable either).
    * ``check_every``: the loss values are summed on the device and read back (a host
      synchronisation) only every ``check_every`` optimizer steps and at the end of the epoch; a NaN or
      infinite term is then raised as ``benchmark.train.Diverged`` naming the term and the epoch. 1
      checks every update before its backward pass (no deferral). The epoch means are the same either way.

    The matrix's ``deterministic: true`` (the default) stays in force with every precision; it is
    slower on GPU than ``false``. The device, precision, memory layout and torch / CUDA / cuDNN
    versions of each training run of a cell are recorded in its ``environment.json``.
    """

    epochs: StrictPositiveInt = 10
    batch_size: StrictPositiveInt = 16
    patch_size: StrictPositiveInt | Annotated[list[StrictPositiveInt], Field(min_length=3, max_length=3)] | None = Field(
        64,
        description="2-D models: square crop side, null trains on whole slices; 3-D models: [depth, height, width], "
        "crops of `depth` consecutive slices of one patient",
    )
    patches_per_epoch: StrictPositiveInt | None = Field(
        None, description="training samples drawn per epoch; default: one per training slice"
    )
    pairing: Literal["auto", "paired", "unpaired"] = Field(
        "auto", description="training batches: LD/ND crops of the same slice (paired) or of independently drawn slices "
        "(unpaired); auto: the scheme's default (unpaired for cyclegan and unit)"
    )
    disjoint_patients: bool = Field(
        False, description="unpaired: LD crops from the first half of the training patients, ND crops from the second"
    )
    augment: bool = Field(False, description="random 90° rotations and flips")
    patient_balanced: bool = Field(False, description="every patient equally likely in patch sampling")
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig())
    scheduler: SchedulerConfig = Field(default_factory=lambda: SchedulerConfig())
    grad_clip: float | None = Field(None, gt=0, description="max global gradient norm; null disables")
    early_stopping: EarlyStoppingConfig = Field(default_factory=lambda: EarlyStoppingConfig())
    val_batch_size: StrictPositiveInt = 8
    val_max_images: StrictPositiveInt | None = Field(None, description="cap on validation slices per epoch")
    precision: Literal["fp32", "tf32", "bf16"] = Field(
        "fp32", description="fp32 (default), tf32 (CUDA TensorFloat-32) or bf16 (autocast); not bit-comparable to fp32"
    )
    channels_last: bool = Field(False, description="networks and batches in channels-last memory layout")
    check_every: StrictPositiveInt = Field(
        16, description="read the summed losses back and check them for NaN/inf every N optimizer steps (1: every update)"
    )

    @field_validator("patch_size", mode="before")
    @classmethod
    def _patch_form(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            if len(v) != 3 or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
                raise ValueError(f"a 3-D patch is [depth, height, width], three positive integers; got {list(v)}")
            return list(v)
        return v

    @property
    def patch_dims(self) -> int | None:
        """2 for a square slice patch (an int), 3 for ``[d, h, w]``, None for whole slices."""
        if self.patch_size is None:
            return None
        return 3 if isinstance(self.patch_size, list) else 2


# Task-based image quality (``evaluation.task``; computed by :mod:`analysis.detectability`). The names are
# the vocabulary of the matrix; ``tests/test_detectability.py`` checks that they are the implemented ones
# (``benchmark.data.task_sets.OBJECTS``, ``analysis.detectability.OBSERVERS``, ``MIN_REALISATIONS``).
TASK_OBJECTS: dict[str, str] = {
    "cct189": "MITA CCT189-like low-contrast module: 3/5/7/10 mm inserts at +14/+7/+5/+3 HU in a 200 mm water disk",
    "rods": "TG-233 TTF rods: 25 mm rods at +15, -35, +120, +300 HU in a 200 mm water disk",
    "lesions": "hypodense 5/7/10 mm disks (-20/-15/-10 HU) in the parenchyma of an abdomen slice",
}
TASK_OBSERVERS: dict[str, str] = {
    "lg_cho": "channelized Hotelling observer, 5 Laguerre-Gauss channels",
    "gabor_cho": "channelized Hotelling observer, 16 Gabor channels (4 octaves x 4 orientations)",
    "npw": "non-prewhitening matched filter",
    "npwe": "non-prewhitening matched filter with an eye filter",
    "ho": "Hotelling observer on the pixels of a small square around the signal",
}
TASK_MIN_REALISATIONS = 100  # analysis.metrics.task.MIN_REALISATIONS: fewer per class are refused


def _task_names(registry: dict[str, str], kind: str) -> Any:
    """A validator of a list of names of ``registry``: each known (else the valid names and the closest
    match, :func:`benchmark.core.registry.lookup`), none twice."""
    check = _registered(registry, kind)

    def names(values: list[str]) -> list[str]:
        for v in values:
            check(v)
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            raise ValueError(f"{kind} {dup} listed twice")
        return values

    return names


class TaskConfig(Strict):
    """Task-based image quality (``evaluation.task``, off when absent): model-observer detectability and
    the task transfer function on simulated signal-present / signal-absent realisations
    (:mod:`benchmark.data.task_sets`) at each cell's condition, for the cell's denoiser, the LDCT input
    and the NDCT reference (:mod:`analysis.detectability`). ``synth`` datasets only."""

    objects: Annotated[list[str], AfterValidator(_task_names(TASK_OBJECTS, "task object"))] = Field(
        default_factory=lambda: ["cct189", "rods"], min_length=1,
        description="test objects: cct189 (low-contrast detection), rods (TTF), lesions (detection in anatomy)")
    realisations: int = Field(200, strict=True,
                              description=f"signal-present and signal-absent images per class (>= {TASK_MIN_REALISATIONS})")
    observers: Annotated[list[str], AfterValidator(_task_names(TASK_OBSERVERS, "observer"))] = Field(
        default_factory=lambda: ["lg_cho", "npw", "npwe"], min_length=1,
        description="model observers: lg_cho, gabor_cho, npw, npwe, ho")
    epochs: Literal["final", "scored"] = Field(
        "final", description="final: each cell's last kept epoch; scored: every epoch `analyze` scores")

    @field_validator("realisations")
    @classmethod
    def _enough(cls, v: int) -> int:
        if not TASK_MIN_REALISATIONS <= v <= 10_000:
            raise ValueError(f"{v} realisations per class: between {TASK_MIN_REALISATIONS} and 10000 (below "
                             f"{TASK_MIN_REALISATIONS} a held-out d' and its AUC are too noisy to use, and the "
                             "estimators refuse them: analysis.metrics.task.detectability)")  # fmt: skip
        return v


class EvaluationConfig(Strict):
    """What ``ldct-bench analyze`` scores: metrics (names in ``analysis.metrics.METRICS``), the split,
    every N-th epoch checkpoint (the last one always), the HU window and a cap on images; ``task``: the
    task-based image quality (:class:`TaskConfig`; off by default)."""

    metrics: list[str] = Field(default_factory=lambda: ["psnr", "ssim", "rmse_hu", "vif", "niqe", "pique", "lpips", "dists"])
    split: Literal["val", "test"] = "test"
    every: StrictPositiveInt = 1
    window: str | tuple[float, float] = "abdomen"
    max_images: StrictPositiveInt | None = None
    batch_size: StrictPositiveInt = 8
    task: TaskConfig | None = Field(None, exclude_if=_none,
                                    description="task-based image quality (detectability, TTF); synth datasets only")


class ExcludeRule(Strict):
    """Cells matching every given field are left out of the matrix."""

    loss: str | None = None
    architecture: str | None = None
    dose: str | None = None
    seed: Annotated[int, Field(strict=True)] | None = None


class ReproducibilityConfig(Strict):
    """Which CPU kernels train and score the matrix (:mod:`benchmark.core.kernels`).

    ``kernels: native`` (default) lets PyTorch, oneDNN, MKL and numpy use the fastest code path for this
    CPU: results are reproducible on the same CPU kind, not across kinds. ``kernels: portable`` pins every
    kernel family to a path that every x86-64 CPU runs the same way, and ``threads`` intra-op threads per
    cell (training and scoring, in every worker of ``--jobs N``), so the same matrix writes byte-identical
    checkpoints and tables on any x86-64 host and with any ``--jobs``; ~4-6x slower on the CPU. A GPU's
    own arithmetic is not covered (``deterministic: true`` makes it reproducible per device model). The
    ``ldct-bench`` command applies the pins before torch loads; a Python process that already loaded
    torch is refused. Portable cells record ``kernels`` and ``threads`` in their config, so a native
    cell does not resume portably or the other way round.

    ``threads`` with native kernels: unset (the default), each process keeps the threads it has (``--jobs
    1``: every core; ``--jobs N``: the cores divided among the workers), so a float sum's order, hence a
    cell's bytes, depends on ``--jobs`` and the machine's cores. Set, every cell trains and is scored with
    that many intra-op threads whatever ``--jobs``, and the cell records it in its config: results then
    depend on the CPU kind alone. Portable kernels always pin it (1 unless set)."""

    kernels: Literal["native", "portable"] = "native"
    threads: int | None = Field(
        None, ge=1, le=256, strict=True,
        description="intra-op CPU threads per cell (training and scoring, every worker); portable: 1 unless set; "
                    "native: unset keeps each process's threads",
    )

    @model_validator(mode="after")
    def _portable_pins_threads(self) -> ReproducibilityConfig:
        if self.kernels == "portable" and self.threads is None:
            self.threads = 1
        return self

    @property
    def pinned(self) -> bool:
        """Whether each cell runs a recorded number of threads (portable kernels, or native with ``threads``)."""
        return self.threads is not None


class CheckpointsConfig(Strict):
    """Which per-epoch checkpoints a cell keeps on disk (``benchmark.runner``), to bound a large run's
    disk use. The defaults (``keep: all``, ``weights_only: false``) keep every epoch's full checkpoint.

    * The newest epoch always has a **full** checkpoint (model + ``train_state``: optimizers,
      schedulers, the loss's state, RNG states, history), so a run resumes exactly.
    * Once epoch ``e + 1``'s full checkpoint is safely written, epoch ``e``'s is **deleted** when it is
      not kept (``keep: last``; ``keep: every_k`` and ``e % every != 0``), or, when it is kept and
      ``weights_only`` is true, **rewritten** (atomically) as a weights-only checkpoint:
      ``format_version``, ``epoch``, ``cell``, ``model`` and ``weights_only: True``, no ``train_state``.
      The new file is always written before the old one is touched, so at every instant a full
      checkpoint of the newest epoch exists, or the previous full one is still there.
    * The final epoch's checkpoint stays full: a finished cell is scorable at its final epoch.
    * Resuming skips weights-only checkpoints (they cannot resume); if the newest full checkpoint is
      lost, the cell resumes from the newest full one left, else it restarts (deterministically, so it
      ends with the same files).
    * ``ldct-bench analyze`` scores the epochs that are kept (intersected with ``evaluation.every``);
      metric trajectories over every epoch, and ``best_val`` among every epoch, need ``keep: all``
      (the loss curves in ``history.csv`` always have every epoch).

    Unchanged settings change nothing: with ``keep: all`` and ``weights_only: false`` checkpoints are
    bit-identical to a run without this section; with any setting a killed-and-resumed run ends with
    the same checkpoints as an uninterrupted one."""

    keep: Literal["all", "last", "every_k"] = Field(
        "all", description="all epochs, only the last, or every `every`-th epoch (and the last)"
    )
    every: StrictPositiveInt | None = Field(None, description="k of keep: every_k (keep epochs k, 2k, ... and the last)")
    weights_only: bool = Field(
        False, description="kept non-final epochs hold only the model weights (enough to score, not to resume)"
    )

    @model_validator(mode="after")
    def _every_with_every_k(self) -> CheckpointsConfig:
        if self.keep == "every_k" and self.every is None:
            raise ValueError("keep: every_k needs every: k (an integer >= 1)")
        if self.keep != "every_k" and self.every is not None:
            raise ValueError(f"every applies to keep: every_k only (keep is {self.keep!r})")
        return self

    def keeps(self, epoch: int, final: int) -> bool:
        """Whether epoch ``epoch``'s checkpoint stays on disk once a newer one is written (``final``: the
        cell's last planned epoch, always kept)."""
        if self.keep == "all" or epoch >= final:
            return True
        if self.keep == "last":
            return False
        assert self.every is not None
        return epoch % self.every == 0

    @property
    def thins(self) -> bool:
        """False for the defaults: every checkpoint stays full and nothing is ever deleted or rewritten."""
        return self.keep != "all" or self.weights_only


class MatrixConfig(Strict):
    """A whole experiment matrix (see the README's matrix reference)."""

    name: str = "matrix"
    description: str = ""
    dataset: DatasetConfig = Field(default_factory=lambda: DatasetConfig())
    losses: list[LossConfig] = Field(min_length=1)
    architectures: list[ArchitectureConfig] = Field(min_length=1)
    doses: list[str] = Field(min_length=1, description="dataset condition names, e.g. '25_360'")
    seeds: list[Annotated[int, Field(strict=True)]] = Field(default_factory=lambda: [0], min_length=1)
    exclude: list[ExcludeRule] = Field(default_factory=list)
    training: TrainingConfig = Field(default_factory=lambda: TrainingConfig())
    evaluation: EvaluationConfig = Field(default_factory=lambda: EvaluationConfig())
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    deterministic: bool = Field(True, description="on GPU, torch.use_deterministic_algorithms (slower)")
    tensorboard: bool = Field(False, description="also write each cell's per-epoch scalars to <cell>/tensorboard")
    checkpoints: CheckpointsConfig = Field(
        default_factory=lambda: CheckpointsConfig(),
        description="which per-epoch checkpoints stay on disk (keep: all | last | every_k; weights_only)",
    )
    reproducibility: ReproducibilityConfig = Field(
        default_factory=lambda: ReproducibilityConfig(),
        description="kernels: native | portable (byte-identical on every x86-64 host); threads per cell",
    )
    claims: list[Claim] = Field(
        default_factory=list,
        description="the study's findings as testable statements, checked by `ldct-bench report` (benchmark.claims_spec)",
    )
    gate: GateConfig = Field(
        default_factory=lambda: GateConfig(),
        description="the learning gate every claim checks before it decides (benchmark.claims_spec.GateConfig)",
    )

    @field_validator("doses", mode="before")
    @classmethod
    def _doses_are_strings(cls, v: Any) -> Any:
        if isinstance(v, list):
            for item in v:
                if not isinstance(item, str):
                    raise ValueError(f"dose {item!r} must be a condition name string such as '25_360'")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.match(r"^(auto|cpu|cuda(:\d+)?|mps)$", v):
            raise ValueError(f"device {v!r}: allowed are auto, cpu, cuda, cuda:N, mps")
        return v

    @model_validator(mode="after")
    def _unique(self) -> MatrixConfig:
        for what, labels in (
            ("loss label", [loss.label for loss in self.losses]),
            ("architecture label", [a.label for a in self.architectures]),
            ("dose", self.doses),
            ("seed", [str(s) for s in self.seeds]),
        ):
            dup = sorted({x for x in labels if labels.count(x) > 1})
            if dup:
                raise ValueError(f"duplicate {what}(s) {dup}: give each entry a distinct 'label'")
        for s in self.seeds:
            if not 0 <= s <= MAX_SEED:
                raise ValueError(f"seed {s} must be in [0, {MAX_SEED}]")
        for d in self.doses:
            _check_label(d, "dose")
        return self

    @model_validator(mode="after")
    def _task_needs_synth(self) -> MatrixConfig:
        if self.evaluation.task is not None and self.dataset.kind != "synth":
            raise ValueError(f"evaluation.task: task-based image quality needs simulated test objects with known "
                             f"signals, which only the synth dataset makes; dataset.kind is {self.dataset.kind!r} "
                             "(remove evaluation.task, or use dataset kind synth)")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _claims_refer_to_the_matrix(self) -> MatrixConfig:
        errors = reference_errors(self.claims, losses=[x.label for x in self.losses],
                                  architectures=[a.label for a in self.architectures], doses=self.doses,
                                  metrics=self.evaluation.metrics, seeds=len(self.seeds), gate=self.gate)  # fmt: skip
        if errors:
            raise ValueError("; ".join(errors))
        return self


# ---------------------------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader whose ints have no underscores, so ``25_360`` stays the string '25_360'."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:int"] for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1]+|[-+]?0[0-7]+|[-+]?(?:0|[1-9][0-9]*)|[-+]?0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)


def load_yaml(text: str, source: str = "<string>") -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise UserError(f"not valid YAML: {exc}", field=source) from None


def preset_names() -> list[str]:
    return sorted(p.name for p in resources.files("benchmark.presets").iterdir() if p.name.endswith(".yaml"))


def resolve_matrix_path(spec: str | Path) -> tuple[str, str]:
    """Return ``(text, source)`` for a path or the name of a shipped preset (``small.yaml``)."""
    path = Path(spec)
    if path.is_file():
        return path.read_text(), str(path)
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    if str(spec) in (name, path.stem) or not path.parent.parts:
        res = resources.files("benchmark.presets").joinpath(name)
        if res.is_file():
            return res.read_text(), f"preset {name}"
    raise UserError(
        f"no such file, and not a shipped preset (presets: {', '.join(preset_names())})", field=f"--matrix {spec}"
    )


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here)"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse_matrix(data: Any, source: str = "<matrix>") -> MatrixConfig:
    if not isinstance(data, dict):
        raise UserError("a matrix file must be a YAML mapping at the top level", field=source)
    try:
        return MatrixConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(_format_validation_error(exc, source)) from None


def load_matrix(spec: str | Path) -> MatrixConfig:
    """Read and validate a matrix file or preset (schema only; see :func:`benchmark.validate.check_matrix`)."""
    text, source = resolve_matrix_path(spec)
    return parse_matrix(load_yaml(text, source), source)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)
