"""Metric metadata, the scorer protocol and the input conventions shared by every metric family.

A metric is a :class:`MetricInfo` (fixed metadata, read by the analysis instead of name lists) whose
``build(device)`` returns a :class:`Scorer`. A scorer splits the work into a reference side
(:meth:`Scorer.prepare_ref`, cached across calls by :mod:`analysis.metrics.engine`) and a prediction
side (:meth:`Scorer.score`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from benchmark.core.errors import UserError


class MetricUnavailable(UserError):
    """A requested metric cannot run here (a weight file is missing); ``reason`` names the file and
    the command that fixes it."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"metric {name!r} is unavailable: {reason}", field="metrics")
        self.name = name
        self.reason = reason


class Scorer:
    """Computes one metric on chunks of images already in the metric's input space.

    Input space ``"unit"``: ``(B, 1, H, W)`` float32 in [0, 1] (HU clipped to the window, scaled,
    ``data_range = 1``). Input space ``"hu"``: ``(B, 1, H, W)`` float32 raw HU.
    ``prepare_ref`` returns whatever the reference side needs (by default the tensor itself; deep
    metrics return reference features) and must not depend on the prediction.
    """

    max_batch: int | None = None  # images per forward pass, to bound memory (None: the caller's batch)

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device

    def prepare_ref(self, ref: torch.Tensor) -> Any:
        return ref

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:  # (B,)
        raise NotImplementedError


class RegionScorer(Scorer):
    """A scorer whose reference side also needs the pixel spacing (mm) and a per-image uniform-region
    mask (``(B, H, W)`` bool, or None to derive it from the reference): the engine calls
    :meth:`prepare_region_ref` instead of :meth:`Scorer.prepare_ref` (metrics with ``regions=True``)."""

    def prepare_region_ref(self, ref: torch.Tensor, roi: Any, pixel_mm: float) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class MetricInfo:
    """Fixed metadata of a registered metric.

    ``weights`` are keys of :data:`benchmark.core.weights.WEIGHTS` that must be present for the metric to
    run. ``space`` is the input the scorer takes (``"unit"``: windowed [0, 1]; ``"hu"``: raw HU).
    ``min_size`` is the smallest image side the implementation supports. ``build(device)`` makes the
    scorer (loads networks / parameters); usually the :class:`Scorer` subclass itself.
    ``ranked``: False for a descriptor with no better direction (the NPS frequencies: what matters is
    closeness to the reference's or the input's value, not higher or lower); tables bold no best, labels
    show ``↕`` and critical-difference diagrams leave it out (``higher_is_better`` is then only the
    nominal orientation of signed statistics). ``regions``: the scorer is a :class:`RegionScorer` and
    needs the pixel spacing (and optionally a uniform-region mask) passed to
    :func:`analysis.metrics.compute_metrics`. ``version``: the implementation's version, stamped in
    every score cache; bump it when a fix changes the metric's values, and cached values of an older
    version are recomputed (never mixed with new ones).
    """

    name: str
    kind: Literal["full_reference", "no_reference"]
    higher_is_better: bool
    differentiable: bool
    value_domain: tuple[float, float]
    library: str
    weights: tuple[str, ...]
    unit: str = ""
    summary: str = ""
    paper: str = ""
    space: Literal["unit", "hu"] = "unit"
    min_size: int = 1
    ranked: bool = True
    regions: bool = False
    version: int = 1
    build: Callable[[torch.device], Scorer] | None = field(default=None, repr=False, compare=False)

    @property
    def full_reference(self) -> bool:
        return self.kind == "full_reference"

    @property
    def direction(self) -> str:
        """``↑`` (higher is better), ``↓`` (lower is better) or ``↕`` (no better direction)."""
        return "↕" if not self.ranked else ("↑" if self.higher_is_better else "↓")


INF = math.inf


def gray_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` → ``(B, 3, H, W)`` by repeating the channel (for metrics whose networks or
    implementations require RGB input). A no-op on 3-channel input."""
    return x if x.shape[1] == 3 else x.expand(-1, 3, -1, -1)


def per_image(values: torch.Tensor, batch: int) -> torch.Tensor:
    """Flatten a library's per-image output (``(B,)``, ``(B, 1)``, ``(B, 1, 1, 1)`` or a 0-d tensor for
    B = 1) to ``(B,)``."""
    return values.reshape(batch)
