"""The analysis step (``ldct-bench analyze``): from a run folder to the numeric outputs under
``<out>/analysis/`` (file names: :mod:`benchmark.layout`)::

    trajectories.parquet      tidy per-image metric values + per-epoch losses (analysis.scoring)
    input_baseline.parquet    the same metrics of the LDCT input itself (no denoising), per dose
    correlations.csv          loss–metric correlations (analysis.correlations)
    significance.csv          paired tests, corrections, effect sizes (analysis.significance)
    friedman_ranks.csv        mean ranks, Demšar CD and Nemenyi p-values per condition
    claims.csv                the matrix's claims checked (analysis.claims), when it declares any
    detectability.parquet     task-based image quality (analysis.detectability), when evaluation.task is set
    ttf.parquet               its task transfer functions
    unavailable_metrics.csv   metrics that could not run here, and why
    cells.csv                 every cell's status and whether it was analysed
    settings.json             the settings of this analysis (read by the report)

:class:`StatsOptions` holds the statistical choices; the statistics run with them, they are saved in
``settings.json``, and the report's conventions are written from them (:meth:`StatsOptions.conventions`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import claims as claims_mod
from analysis import correlations as corr_mod
from analysis import significance as sig_mod
from analysis.detectability import TaskOptions, TaskSummary, task_run
from analysis.schema import EPOCH_CHOICES, SOURCE_METRIC
from analysis.scoring import ScoreOptions, ScoreSummary, load_input_baseline, load_trajectories, score_run
from analysis.tables import Orders
from benchmark.config import MatrixConfig
from benchmark.core.errors import UserError
from benchmark.core.io import atomic_write_text
from benchmark.layout import CLAIMS_CSV, CORRELATIONS, NDCT_BASELINE, RANKS, SETTINGS, SIGNIFICANCE, RunLayout


@dataclass
class StatsOptions:
    """Statistical settings shared by ``analyze`` and ``report`` (see :mod:`analysis.significance`)."""

    unit: str = "patient"
    epoch: str = "final"
    family: str = "metric"
    n_resamples: int = 2000
    seed: int = 0

    def check(self) -> StatsOptions:
        """Raise a :class:`UserError` naming the bad option and the allowed values."""
        for name, value, allowed in (("unit", self.unit, sig_mod.UNITS), ("epoch", self.epoch, EPOCH_CHOICES),
                                     ("family", self.family, sig_mod.FAMILIES)):  # fmt: skip
            if value not in allowed:
                raise UserError(f"{value!r}: allowed are {', '.join(allowed)}", field=f"--{name}")
        if self.n_resamples < 0:
            raise UserError(f"{self.n_resamples}: the number of bootstrap resamples must be >= 0", field="--bootstrap")
        return self

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> StatsOptions:
        """The options saved in ``settings.json`` (missing keys take the defaults)."""
        return cls(**{f.name: settings[f.name] for f in fields(cls) if f.name in settings})

    def conventions(self) -> list[str]:
        """The report's Markdown lines for these options, from the descriptions the statistics modules
        keep beside the options themselves."""
        choices = "; ".join(f"`{k}`: {v}" for k, v in EPOCH_CHOICES.items())
        return [
            f"- **Epoch compared**: `{self.epoch}` ({choices}).",
            f"- **Unit of analysis**: {sig_mod.UNITS[self.unit]}. Seeds are averaged per image before anything else.",
            f"- **Tests**: {sig_mod.TESTS}, {self.n_resamples} bootstrap resamples for 95 % CIs (seed {self.seed}).",
            f"- **Multiple comparisons**: over a family = {sig_mod.FAMILIES[self.family]}: {sig_mod.CORRECTIONS}.",
            f"- **Correlations**: {corr_mod.METHOD}.",
        ]


@dataclass
class AnalysisResult:
    """What :func:`analyze_run` produced (also written to disk)."""

    trajectories: pd.DataFrame
    correlations: pd.DataFrame
    significance: pd.DataFrame
    ranks: pd.DataFrame
    summary: ScoreSummary | None = None
    settings: dict = field(default_factory=dict)
    claims: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=claims_mod.CLAIM_COLUMNS))
    task: TaskSummary | None = None  # the task-based image quality (evaluation.task), when the matrix asks for it


def sort_levels(traj: pd.DataFrame, orders: Orders) -> pd.DataFrame:
    """Rows in the display order (architecture, dose and loss as in the matrix), so every output table
    lists conditions in the same order as the figures."""
    rank = {
        "architecture": {a: i for i, a in enumerate(orders.architectures)},
        "dose": {d: i for i, d in enumerate(orders.doses)},
        "loss": {x: i for i, x in enumerate(orders.losses)},
    }
    keys = pd.DataFrame({k: traj[k].astype(str).map(v) for k, v in rank.items()})
    order = keys.sort_values(["architecture", "dose", "loss"], kind="stable").index
    return traj.loc[order].reset_index(drop=True)


def compute_statistics(traj: pd.DataFrame, stats: StatsOptions, orders: Orders) -> tuple[pd.DataFrame, ...]:
    """Correlations, significance table and Friedman ranks from a trajectory table."""
    traj = sort_levels(traj, orders)
    corr = corr_mod.correlations(traj, n_resamples=stats.n_resamples, seed=stats.seed)
    sig, ranks = sig_mod.significance(traj, unit=stats.unit, epoch=stats.epoch, family=stats.family,  # type: ignore[arg-type]
                                      loss_order=orders.losses, n_resamples=stats.n_resamples, seed=stats.seed)  # fmt: skip
    return corr, sig, ranks


def write_statistics(layout: RunLayout, corr: pd.DataFrame, sig: pd.DataFrame, ranks: pd.DataFrame) -> None:
    """``correlations.csv``, ``significance.csv`` and ``friedman_ranks.csv``, each written atomically."""
    atomic_write_text(layout.analysis_file(CORRELATIONS), corr.to_csv(index=False))
    atomic_write_text(layout.analysis_file(SIGNIFICANCE), sig.to_csv(index=False))
    ranks = ranks.assign(nemenyi=ranks["nemenyi"].map(json.dumps))
    atomic_write_text(layout.analysis_file(RANKS), ranks.to_csv(index=False))


def check_claims(out: Path | str, traj: pd.DataFrame, stats: StatsOptions, matrix: MatrixConfig | None) -> pd.DataFrame:
    """The matrix's claims checked on ``traj`` (:func:`analysis.claims.evaluate_claims`) and written to
    ``claims.csv``; an empty table, and no file, when the matrix declares none."""
    if matrix is None or not matrix.claims:
        return pd.DataFrame(columns=claims_mod.CLAIM_COLUMNS)
    traj = sort_levels(traj, Orders.from_traj(traj, matrix))  # conditions in the matrix's order
    ndct = load_input_baseline(out, name=NDCT_BASELINE)
    table = claims_mod.evaluate_claims(matrix.claims, traj, inputs=load_input_baseline(out), ndct=ndct,
                                       unit=stats.unit, epoch=stats.epoch,  # type: ignore[arg-type]
                                       n_resamples=stats.n_resamples, seed=stats.seed, gate=matrix.gate)  # fmt: skip
    claims_mod.write_claims(RunLayout(out, must_exist=False), table)
    return table


def read_ranks(path: Path) -> pd.DataFrame:
    ranks = pd.read_csv(path, dtype={"dose": str, "architecture": str, "loss": str})
    return ranks.assign(nemenyi=ranks["nemenyi"].map(json.loads))


def analyze_run(out: Path | str, score: ScoreOptions | None = None, stats: StatsOptions | None = None) -> AnalysisResult:
    """Score the run (incrementally) and write the numeric outputs listed in the module docstring."""
    stats = (stats or StatsOptions()).check()
    layout = RunLayout(out, must_exist=False)
    summary = score_run(out, score)
    traj = load_trajectories(out)
    if traj[traj["source"] == SOURCE_METRIC].empty:
        raise UserError("no finished cell has checkpoints to score yet (see analysis/cells.csv)", field=str(out))
    task = task_run(out, task_options(score))
    matrix = layout.matrix_or_none()
    orders = Orders.from_traj(traj, matrix)
    corr, sig, ranks = compute_statistics(traj, stats, orders)
    write_statistics(layout, corr, sig, ranks)
    claims = check_claims(out, traj, stats, matrix)
    settings = {
        **asdict(stats),
        "metrics": summary.metrics,
        "unavailable": summary.unavailable,
        "window": str(matrix.evaluation.window) if matrix is not None else "abdomen",
        "split": matrix.evaluation.split if matrix is not None else "",
        "every": (score.every if score and score.every else matrix.evaluation.every) if matrix is not None else 1,
        "images_per_dose": summary.images // max(1, len({c for c in traj["dose"]})),
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_text(layout.analysis_file(SETTINGS), json.dumps(settings, indent=1))
    return AnalysisResult(traj, corr, sig, ranks, summary, settings, claims, task)


def task_options(score: ScoreOptions | None) -> TaskOptions:
    """The task analysis's options from the scoring's (the same epochs, batch size, devices and processes)."""
    s = score or ScoreOptions()
    return TaskOptions(every=s.every, batch_size=s.batch_size, device=s.device, include_partial=s.include_partial,
                       progress=s.progress, jobs=s.jobs, devices=s.devices)  # fmt: skip


def load_analysis(out: Path | str, stats: StatsOptions) -> AnalysisResult:
    """Read the outputs of :func:`analyze_run`; statistics missing on disk are recomputed."""
    layout = RunLayout(out, must_exist=False)
    traj = load_trajectories(out)
    path = layout.analysis_file(SETTINGS)
    settings = json.loads(path.read_text()) if path.is_file() else asdict(stats)
    paths = [layout.analysis_file(name) for name in (CORRELATIONS, SIGNIFICANCE, RANKS)]
    if all(p.is_file() for p in paths):
        dtypes = {"dose": str, "architecture": str, "loss": str, "cell": str, "seed": str, "loss_a": str, "loss_b": str}
        corr = pd.read_csv(paths[0], dtype=dtypes)
        sig = pd.read_csv(paths[1], dtype=dtypes)
        ranks = read_ranks(paths[2])
    else:
        orders = Orders.from_traj(traj, layout.matrix_or_none())
        corr, sig, ranks = compute_statistics(traj, stats, orders)
        write_statistics(layout, corr, sig, ranks)
    claims_path = layout.analysis_file(CLAIMS_CSV)
    matrix = layout.matrix_or_none()
    if claims_path.is_file() and matrix is not None and matrix.claims:
        claims = pd.read_csv(claims_path, dtype={"id": str, "condition": str})
    else:
        claims = check_claims(out, traj, StatsOptions.from_settings(settings), matrix)
    return AnalysisResult(traj, corr, sig, ranks, None, settings, claims)
