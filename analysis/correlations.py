"""Does the training loss track the image-quality metrics? Loss–metric correlations over epochs.

``<out>/analysis/correlations.csv`` has one row per (scope, group, metric, against):

* ``scope = "cell"``: within one cell, Spearman's ρ (``scipy.stats.spearmanr``, ties get average ranks)
  between the loss trajectory ``against`` ∈ {``train_loss``, ``val_loss``} (from ``history.csv``) and the
  metric's per-epoch mean over the evaluation images, over the scored epochs; ``n`` = epochs.
* ``scope = "pooled"``: all cells of one loss (every architecture, dose and seed) pooled with the
  repeated-measures correlation of Bakdash & Marusich (2017, *Front. Psychol.* 8:456),
  ``pingouin.rm_corr`` with the cell as the subject: the common within-cell (Pearson) association after
  removing each cell's mean, so differences between cells (dose, architecture) cannot create it.
  ``method = "rm_corr"``, ``n`` = observations (cells × epochs), CI = pingouin's 95 % interval.
  Different losses are not pooled together: their values are on different scales.
* ``scope = "final"``: across the cells of one loss and dose (architectures × seeds) at their last scored
  epoch, Spearman's ρ between the final loss and the final metric — does a lower final loss mean a
  better metric? ``n`` = cells (often small: read the CI).

``agreement`` is ρ for lower-is-better metrics and −ρ for higher-is-better ones (from the metric
metadata), so a positive agreement always means the metric improves as the loss falls. ``ci_low`` /
``ci_high`` bound ρ (percentile bootstrap over epochs or cells, :func:`analysis.significance.bootstrap_ci`;
epochs of one run are autocorrelated, so read these intervals as descriptive), and
``agreement_ci_low`` / ``agreement_ci_high`` bound the agreement.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pingouin as pg
from scipy import stats

from analysis.schema import KEYS, LOSS_CURVES, epoch_means, higher_is_better_map, loss_curves
from analysis.significance import bootstrap_ci

CORRELATION_COLUMNS = [
    "scope", "cell", "loss", "architecture", "dose", "seed", "metric", "against", "method", "rho", "p_value",
    "n", "agreement", "ci_low", "ci_high", "agreement_ci_low", "agreement_ci_high",
]  # fmt: skip
SCOPES = ("cell", "pooled", "final")
METHOD = ("per cell, Spearman ρ between the loss (train/val, history.csv) and the metric's per-epoch mean over "
          "images; pooled per loss with repeated-measures correlation (pingouin `rm_corr`, cell = subject); "
          "across cells of a loss × dose at the final epoch. `agreement` = ρ for lower-is-better metrics, −ρ "
          "otherwise (> 0: the metric improves as the loss falls)")
ALL = "*"  # the ``cell`` (and other key) value of rows that pool several cells


def spearman_rho(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's ρ along ``axis`` (Pearson correlation of average ranks), vectorised for the bootstrap;
    NaN where either variable is constant."""
    rx = stats.rankdata(x, axis=axis)
    ry = stats.rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=axis) / np.sqrt((rx**2).sum(axis=axis) * (ry**2).sum(axis=axis))


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(ρ, two-sided p)`` from ``scipy.stats.spearmanr``; NaN with fewer than 3 pairs or a constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    res = stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def orient(rho: float, lo: float, hi: float, higher_is_better: bool) -> tuple[float, float, float]:
    """Agreement and its interval: ``(ρ, lo, hi)`` for lower-is-better metrics, ``(−ρ, −hi, −lo)`` else."""
    return (-rho, -hi, -lo) if higher_is_better else (rho, lo, hi)


def _row(key: dict[str, object], x: np.ndarray, y: np.ndarray, higher: bool, n_resamples: int, seed: int,
         confidence: float = 0.95) -> dict:  # fmt: skip
    rho, p = spearman(x, y)
    lo, hi = bootstrap_ci(spearman_rho, [x, y], n_resamples=n_resamples, confidence=confidence, rng=seed)
    agr, alo, ahi = orient(rho, lo, hi, higher)
    return {**key, "method": "spearman", "rho": rho, "p_value": p, "n": len(x), "agreement": agr,
            "ci_low": lo, "ci_high": hi, "agreement_ci_low": alo, "agreement_ci_high": ahi}  # fmt: skip


def paired_trajectories(traj: pd.DataFrame) -> pd.DataFrame:
    """Per cell × metric × epoch: the metric's mean over images (``value``) next to ``train_loss`` and
    ``val_loss`` of that epoch; only epochs that have both a metric and a history row."""
    return epoch_means(traj).merge(loss_curves(traj), on=KEYS, how="inner")


def within_cells(paired: pd.DataFrame, higher: Mapping[str, bool], *, n_resamples: int, seed: int,
                 confidence: float = 0.95) -> pd.DataFrame:  # fmt: skip
    """``scope = "cell"`` rows: Spearman over the epochs of each cell, with a percentile bootstrap CI
    at ``confidence``."""
    records = []
    for (cell, metric), g in paired.groupby(["cell", "metric"], observed=True, sort=False):
        first = g.iloc[0]
        for against in LOSS_CURVES:
            sub = g[[against, "value"]].dropna()
            key = {"scope": "cell", "cell": cell, "loss": first["loss"], "architecture": first["architecture"],
                   "dose": first["dose"], "seed": first["seed"], "metric": metric, "against": against}  # fmt: skip
            records.append(_row(key, sub[against].to_numpy(), sub["value"].to_numpy(), higher[str(metric)],
                                n_resamples, seed, confidence))  # fmt: skip
    return pd.DataFrame.from_records(records, columns=CORRELATION_COLUMNS)


def rm_corr(data: pd.DataFrame, x: str, y: str, subject: str) -> tuple[float, float, float, float, int]:
    """``(r, p, ci_low, ci_high, n)`` of ``pingouin.rm_corr``; NaN when it is undefined (fewer than 3
    subjects or no within-subject variation)."""
    data = data[[x, y, subject]].dropna()
    n = len(data)
    if data[subject].nunique() < 3:
        return float("nan"), float("nan"), float("nan"), float("nan"), n
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = pg.rm_corr(data=data, x=x, y=y, subject=subject)
    except (ValueError, AssertionError, ZeroDivisionError):
        return float("nan"), float("nan"), float("nan"), float("nan"), n
    ci = res["CI95"].iloc[0] if "CI95" in res.columns else res["CI95%"].iloc[0]
    return float(res["r"].iloc[0]), float(res["pval"].iloc[0]), float(ci[0]), float(ci[1]), n


def pooled(paired: pd.DataFrame, higher: Mapping[str, bool]) -> pd.DataFrame:
    """``scope = "pooled"`` rows: repeated-measures correlation over all cells of one loss."""
    records = []
    for (loss, metric), g in paired.groupby(["loss", "metric"], observed=True, sort=False):
        g = g.assign(cell=g["cell"].astype(str))
        for against in LOSS_CURVES:
            r, p, lo, hi, n = rm_corr(g, against, "value", "cell")
            agr, alo, ahi = orient(r, lo, hi, higher[str(metric)])
            records.append({"scope": "pooled", "cell": ALL, "loss": loss, "architecture": ALL, "dose": ALL,
                            "seed": ALL, "metric": metric, "against": against, "method": "rm_corr", "rho": r,
                            "p_value": p, "n": n, "agreement": agr, "ci_low": lo, "ci_high": hi,
                            "agreement_ci_low": alo, "agreement_ci_high": ahi})  # fmt: skip
    return pd.DataFrame.from_records(records, columns=CORRELATION_COLUMNS)


def final_epoch(
    paired: pd.DataFrame, higher: Mapping[str, bool], *, n_resamples: int, seed: int
) -> pd.DataFrame:
    """``scope = "final"`` rows: across the cells of one loss and dose at their last scored epoch."""
    last = paired.loc[paired.groupby(["cell", "metric"], observed=True)["epoch"].idxmax()]
    records = []
    for (loss, dose, metric), g in last.groupby(["loss", "dose", "metric"], observed=True, sort=False):
        for against in LOSS_CURVES:
            sub = g[[against, "value"]].dropna()
            key = {"scope": "final", "cell": ALL, "loss": loss, "architecture": ALL, "dose": dose, "seed": ALL,
                   "metric": metric, "against": against}  # fmt: skip
            records.append(_row(key, sub[against].to_numpy(), sub["value"].to_numpy(), higher[str(metric)],
                                n_resamples, seed))  # fmt: skip
    return pd.DataFrame.from_records(records, columns=CORRELATION_COLUMNS)


def correlations(
    traj: pd.DataFrame,
    *,
    directions: Mapping[str, bool] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """All three scopes (see the module docstring), in :data:`CORRELATION_COLUMNS` order."""
    paired = paired_trajectories(traj)
    higher = directions if directions is not None else higher_is_better_map(paired["metric"].unique())
    frames = [
        within_cells(paired, higher, n_resamples=n_resamples, seed=seed),
        pooled(paired, higher),
        final_epoch(paired, higher, n_resamples=n_resamples, seed=seed),
    ]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=CORRELATION_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    for col in ("cell", "loss", "architecture", "dose", "seed"):
        out[col] = out[col].astype(str)
    return out[CORRELATION_COLUMNS]
