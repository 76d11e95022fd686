"""Paired significance tests between losses on the same test images.

For each metric, architecture and dose, every pair of losses is compared on the same evaluation images
at one epoch per cell (the last scored epoch, or the best-validation epoch: labelled in ``epoch_choice``):

* **Unit of analysis** (``unit``): ``patient`` by default — per-patient means over that patient's test
  slices, because slices of one patient are not independent; ``slice`` as an option (labelled).
* **Seeds** are averaged per image before anything else: the seed is a nuisance of training and the
  patient (or slice) is the unit of inference. Pairing by (image, seed) would count seed replicates as
  independent units and overstate n.
* **Tests**: the two-sided Wilcoxon signed-rank test with scipy's defaults (``zero_method="wilcox"``,
  exact null distribution for small n without ties) and the paired t-test (``scipy.stats.ttest_rel``).
* **Effect sizes**: the matched-pairs rank-biserial correlation ``r = (T+ − T−) / (T+ + T−)`` for
  Wilcoxon (Kerby 2014, *Comprehensive Psychology* 3:11; zero differences dropped as in the test), and
  Cohen's ``d_z = mean(d) / sd(d)`` (ddof 1) for the t-test (Cohen 1988; Lakens 2013, *Front. Psychol.*
  4:863), both for ``d = loss_a − loss_b`` in metric units. Their confidence intervals are percentile
  bootstrap intervals over units (:func:`bootstrap_ci`).
* **Multiple comparisons**: Holm (FWER, ``pingouin.multicomp``) and Benjamini–Hochberg (FDR,
  ``statsmodels.stats.multitest.multipletests``) over a *family* of tests of one kind (Wilcoxon or t):
  ``family="metric"`` (default) is every loss pair × architecture × dose of one metric — the comparisons
  that appear together in one results table; ``"condition"`` is the loss pairs of one metric ×
  architecture × dose; ``"all"`` is every test of that kind in the file.
* **More than two losses**: the Friedman test over the units (blocks) with Kendall's W as effect size,
  and the Nemenyi post-hoc test (``scikit_posthocs.posthoc_nemenyi_friedman``), which controls the
  family-wise error itself (so ``p_holm``/``p_bh`` are left empty on those rows). Average ranks (1 = best,
  oriented by the metric's ``higher_is_better``) and the critical difference of Demšar (2006, *JMLR*
  7:1–30) feed the CD diagram.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from pingouin import multicomp
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.schema import higher_is_better_map, metric_rows, select_epoch
from benchmark.core.errors import UserError

Unit = Literal["patient", "slice"]
Family = Literal["metric", "condition", "all"]
# The options of the tests, each with the sentence the report states for it (analysis.pipeline.StatsOptions).
UNITS: dict[str, str] = {
    "patient": "the patient: per-patient means over that patient's evaluation slices",
    "slice": "the slice (slices of one patient are not independent: read p-values as optimistic)",
}
FAMILIES: dict[str, str] = {
    "metric": "all loss pairs × architectures × doses of one metric and one test",
    "condition": "the loss pairs of one metric × architecture × dose and one test",
    "all": "every pairwise test of one kind in the file",
}
TESTS = ("two-sided Wilcoxon signed-rank (scipy defaults) and paired t-test on the units; effect sizes "
         "matched-pairs rank-biserial r (Wilcoxon) and Cohen's d_z (t), differences loss_a − loss_b")
CORRECTIONS = ("Holm and Benjamini–Hochberg (statsmodels); with ≥ 3 losses: Friedman test (effect size "
               "Kendall's W) and Nemenyi post-hoc (its own FWER control)")
CONDITION = ["metric", "architecture", "dose"]

SIGNIFICANCE_COLUMNS = [
    "metric", "architecture", "dose", "loss_a", "loss_b", "test", "unit", "epoch_choice", "n", "statistic",
    "p_value", "p_holm", "p_bh", "effect_size", "effect_name", "ci_low", "ci_high", "mean_a", "mean_b",
    "mean_diff", "better", "family",
]  # fmt: skip


# ------------------------------------------------------------------------------------------ bootstrap


def bootstrap_ci(
    statistic: Callable[..., np.ndarray],
    arrays: Sequence[np.ndarray],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of a statistic of paired samples (rows resampled together).

    ``statistic(*arrays, axis=-1)`` must be vectorised over a leading resample axis. Resamples on which
    the statistic is undefined (NaN/inf, e.g. a constant resample for a correlation) are dropped —
    written here rather than with ``scipy.stats.bootstrap`` because scipy returns a NaN interval as soon
    as one resample is undefined, which happens routinely with 5–20 epochs or patients. Returns
    ``(nan, nan)`` with fewer than 3 observations or fewer than half the resamples defined.
    """
    arrays = [np.asarray(a, dtype=float) for a in arrays]
    n = len(arrays[0])
    if n < 3 or n_resamples < 1:
        return float("nan"), float("nan")
    gen = np.random.default_rng(rng)
    idx = gen.integers(0, n, size=(n_resamples, n))
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values = np.asarray(statistic(*[a[idx] for a in arrays], axis=-1), dtype=float)
    values = values[np.isfinite(values)]
    if values.size < n_resamples / 2:
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------- effect sizes


def rank_biserial(d: np.ndarray, axis: int = -1) -> np.ndarray:
    """Matched-pairs rank-biserial correlation of differences ``d`` along ``axis`` (Kerby 2014).

    ``r = (T+ − T−) / (T+ + T−)`` with ``T±`` the sums of the ranks of ``|d|`` over positive/negative
    differences; zeros are dropped (scipy's ``zero_method="wilcox"``), ties get average ranks. In [−1, 1];
    +1 when every non-zero difference is positive. NaN when all differences are zero.
    """
    d = np.asarray(d, dtype=float)
    zeros = (d == 0).sum(axis=axis, keepdims=True)
    # zeros have the smallest |d|, so a non-zero difference's rank among the non-zeros is its rank among
    # all minus the number of zeros
    ranks = stats.rankdata(np.abs(d), axis=axis) - zeros
    t_plus = np.where(d > 0, ranks, 0.0).sum(axis=axis)
    t_minus = np.where(d < 0, ranks, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (t_plus - t_minus) / (t_plus + t_minus)


def cohens_dz(d: np.ndarray, axis: int = -1) -> np.ndarray:
    """Cohen's ``d_z = mean(d) / sd(d)`` (ddof 1) of paired differences along ``axis``."""
    d = np.asarray(d, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return d.mean(axis=axis) / d.std(axis=axis, ddof=1)


def demsar_critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks, ``CD = q_α · sqrt(k(k+1) / (6N))`` (Demšar 2006).

    ``q_α`` is the studentized-range quantile for ``k`` groups and infinite degrees of freedom divided by
    √2 (Demšar's Table 5 lists q_0.05 = 1.960, 2.343, 2.569 … for k = 2, 3, 4 …).
    """
    if k < 2 or n < 1:
        return float("nan")
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(k * (k + 1) / (6.0 * n)))


# -------------------------------------------------------------------------------------- paired units


def unit_table(values: pd.DataFrame, unit: Unit = "patient") -> pd.DataFrame:
    """Wide ``units × losses`` table of one metric/architecture/dose.

    ``values`` has columns ``loss, seed, patient, image, value`` (one epoch per cell). Seeds are averaged
    per image, then images per patient (``unit="patient"``) or kept (``"slice"``).
    """
    if unit not in UNITS:
        raise UserError(f"{unit!r}: allowed units are {', '.join(UNITS)}", field="unit")
    per_image = values.groupby(["loss", "patient", "image"], observed=True, sort=False)["value"].mean().reset_index()
    key = "patient" if unit == "patient" else "image"
    per_unit = per_image.groupby(["loss", key], observed=True, sort=False)["value"].mean().reset_index()
    wide = per_unit.pivot(index=key, columns="loss", values="value")
    wide.columns = [str(c) for c in wide.columns]
    return wide


def safe_test(test: Callable[[], object]) -> tuple[float, float]:
    """Run a scipy test; NaN statistic and p when it is undefined (n too small, all-zero differences)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = test()
    except ValueError:
        return float("nan"), float("nan")
    return float(res.statistic), float(res.pvalue)  # type: ignore[attr-defined]


def compare_pair(
    a: np.ndarray, b: np.ndarray, *, n_resamples: int = 2000, confidence: float = 0.95, rng: int | None = 0
) -> list[dict[str, object]]:
    """Wilcoxon signed-rank and paired t-test of ``a`` vs ``b`` (paired, same units), with effect sizes.

    Returns two records (``test`` = ``wilcoxon`` / ``t``) with ``n, statistic, p_value, effect_size,
    effect_name, ci_low, ci_high, mean_a, mean_b, mean_diff``; differences are ``a − b``.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    n = int(d.size)
    common = {"n": n, "mean_a": float(a.mean()) if n else np.nan, "mean_b": float(b.mean()) if n else np.nan,
              "mean_diff": float(d.mean()) if n else np.nan}  # fmt: skip
    w_stat, w_p = safe_test(lambda: stats.wilcoxon(d)) if n >= 1 and np.any(d != 0) else (np.nan, np.nan)
    t_stat, t_p = safe_test(lambda: stats.ttest_rel(a, b)) if n >= 2 else (np.nan, np.nan)
    rb_lo, rb_hi = bootstrap_ci(rank_biserial, [d], n_resamples=n_resamples, confidence=confidence, rng=rng)
    dz_lo, dz_hi = bootstrap_ci(cohens_dz, [d], n_resamples=n_resamples, confidence=confidence, rng=rng)
    return [
        {"test": "wilcoxon", "statistic": w_stat, "p_value": w_p, "effect_size": float(rank_biserial(d)) if n else np.nan,
         "effect_name": "rank_biserial", "ci_low": rb_lo, "ci_high": rb_hi, **common},
        {"test": "t", "statistic": t_stat, "p_value": t_p, "effect_size": float(cohens_dz(d)) if n >= 2 else np.nan,
         "effect_name": "cohens_dz", "ci_low": dz_lo, "ci_high": dz_hi, **common},
    ]  # fmt: skip


def _better(mean_a: float, mean_b: float, a: str, b: str, higher: bool) -> str:
    if not np.isfinite(mean_a) or not np.isfinite(mean_b) or mean_a == mean_b:
        return ""
    return a if (mean_a > mean_b) == higher else b


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979) of a family of finite p-values, by
    ``pingouin.multicomp``. Not statsmodels' ``multipletests(method="holm")``, which gives the same values
    (tests/test_significance.py checks both) but calls ``gc.collect()`` on every call: ~0.1–0.3 s each
    with torch loaded, i.e. most of the time of a report's statistics."""
    return np.asarray(multicomp(np.asarray(p, dtype=float), method="holm")[1], dtype=float)


def correct(p: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Holm (:func:`holm`) and Benjamini–Hochberg (statsmodels) adjusted p-values, NaNs left out of the
    family."""
    p = np.asarray(p, dtype=float)
    adj_holm, bh = np.full(p.shape, np.nan), np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        adj_holm[ok] = holm(p[ok])
        bh[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return adj_holm, bh


def _family_keys(family: Family) -> list[str]:
    if family not in FAMILIES:
        raise UserError(f"{family!r}: allowed families are {', '.join(FAMILIES)}", field="family")
    return {"metric": ["metric", "test"], "condition": [*CONDITION, "test"], "all": ["test"]}[family]


def pairwise_tests(
    traj: pd.DataFrame,
    *,
    unit: Unit = "patient",
    epoch: str = "final",
    family: Family = "metric",
    loss_order: Sequence[str] | None = None,
    directions: Mapping[str, bool] | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Every pair of losses per metric × architecture × dose: Wilcoxon and paired t rows, corrected.

    ``traj`` is the tidy trajectory table (:mod:`analysis.schema`); ``loss_order`` fixes which loss
    is ``loss_a`` (default: order of appearance). Units missing for one loss of a pair are dropped from
    that pair only. Returns :data:`SIGNIFICANCE_COLUMNS`.
    """
    rows = select_epoch(metric_rows(traj), epoch, history=traj)
    higher = directions if directions is not None else higher_is_better_map(rows["metric"].unique())
    order = list(loss_order) if loss_order is not None else list(dict.fromkeys(rows["loss"].astype(str)))
    records: list[dict[str, object]] = []
    for (metric, arch, dose), group in rows.groupby(CONDITION, observed=True, sort=False):
        wide = unit_table(group, unit)
        losses = [x for x in order if x in wide.columns]
        for la, lb in itertools.combinations(losses, 2):
            pair = wide[[la, lb]].dropna()
            for rec in compare_pair(pair[la].to_numpy(), pair[lb].to_numpy(), n_resamples=n_resamples,
                                    confidence=confidence, rng=seed):  # fmt: skip
                rec.update(metric=metric, architecture=arch, dose=dose, loss_a=la, loss_b=lb, unit=unit,
                           epoch_choice=epoch,
                           better=_better(float(rec["mean_a"]), float(rec["mean_b"]), la, lb,  # type: ignore[arg-type]
                                          bool(higher[str(metric)])))  # fmt: skip
                records.append(rec)
    out = pd.DataFrame.from_records(records, columns=[c for c in SIGNIFICANCE_COLUMNS if c not in ("p_holm", "p_bh", "family")])
    out["family"] = family
    out["p_holm"], out["p_bh"] = np.nan, np.nan
    if len(out):
        for _, idx in out.groupby(_family_keys(family), sort=False).groups.items():
            out.loc[idx, "p_holm"], out.loc[idx, "p_bh"] = correct(out.loc[idx, "p_value"])
    return out[SIGNIFICANCE_COLUMNS]


def friedman_nemenyi(
    traj: pd.DataFrame,
    *,
    unit: Unit = "patient",
    epoch: str = "final",
    loss_order: Sequence[str] | None = None,
    directions: Mapping[str, bool] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Friedman test and Nemenyi post-hoc per metric × architecture × dose with ≥ 3 losses.

    Only units observed for every loss enter (complete blocks). Ranks are 1 = best (oriented by the
    metric's ``higher_is_better``). Returns ``(tests, ranks)``: ``tests`` has the significance columns
    (``test`` = ``friedman`` with ``loss_a = loss_b = "*"``, statistic χ², effect size Kendall's W; and
    ``nemenyi`` per pair with statistic = mean rank of a − mean rank of b); ``ranks`` has ``metric,
    architecture, dose, loss, mean_rank, n, k, cd, nemenyi`` where ``nemenyi`` is the p-value matrix row
    (a dict loss → p) for the CD diagram.
    """
    rows = select_epoch(metric_rows(traj), epoch, history=traj)
    higher = directions if directions is not None else higher_is_better_map(rows["metric"].unique())
    order = list(loss_order) if loss_order is not None else list(dict.fromkeys(rows["loss"].astype(str)))
    tests: list[dict[str, object]] = []
    ranks: list[dict[str, object]] = []
    for (metric, arch, dose), group in rows.groupby(CONDITION, observed=True, sort=False):
        wide = unit_table(group, unit)
        wide = wide[[x for x in order if x in wide.columns]].dropna()
        n, k = wide.shape
        if k < 3 or n < 2:
            continue
        base = {"metric": metric, "architecture": arch, "dose": dose, "unit": unit, "epoch_choice": epoch, "n": n}
        columns = [wide[c].to_numpy() for c in wide.columns]
        chi2, p = safe_test(lambda: stats.friedmanchisquare(*columns))  # noqa: B023 - called at once
        kendall_w = chi2 / (n * (k - 1)) if np.isfinite(chi2) else np.nan
        tests.append({**base, "loss_a": "*", "loss_b": "*", "test": "friedman", "statistic": chi2, "p_value": p,
                      "effect_size": kendall_w, "effect_name": "kendalls_w"})  # fmt: skip
        oriented = -wide if higher[str(metric)] else wide
        mean_rank = oriented.rank(axis=1).mean(axis=0)
        pmat = sp.posthoc_nemenyi_friedman(oriented.to_numpy())
        pmat.index = pmat.columns = list(wide.columns)
        for la, lb in itertools.combinations(wide.columns, 2):
            tests.append({**base, "loss_a": la, "loss_b": lb, "test": "nemenyi",
                          "statistic": float(mean_rank[la] - mean_rank[lb]), "p_value": float(pmat.loc[la, lb]),
                          "mean_a": float(wide[la].mean()), "mean_b": float(wide[lb].mean()),
                          "mean_diff": float((wide[la] - wide[lb]).mean()),
                          "better": _better(float(wide[la].mean()), float(wide[lb].mean()), la, lb, bool(higher[str(metric)]))})  # fmt: skip
        cd = demsar_critical_difference(k, n)
        for loss in wide.columns:
            ranks.append({"metric": metric, "architecture": arch, "dose": dose, "loss": loss,
                          "mean_rank": float(mean_rank[loss]), "n": n, "k": k, "cd": cd,
                          "nemenyi": {c: float(pmat.loc[loss, c]) for c in wide.columns}})  # fmt: skip
    out = pd.DataFrame.from_records(tests, columns=SIGNIFICANCE_COLUMNS)
    out["family"] = "nemenyi"
    return out, pd.DataFrame.from_records(
        ranks, columns=["metric", "architecture", "dose", "loss", "mean_rank", "n", "k", "cd", "nemenyi"]
    )


def significance(
    traj: pd.DataFrame,
    *,
    unit: Unit = "patient",
    epoch: str = "final",
    family: Family = "metric",
    loss_order: Sequence[str] | None = None,
    directions: Mapping[str, bool] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All of the above: ``(significance table, Friedman mean ranks)`` — see the module docstring."""
    pairs = pairwise_tests(traj, unit=unit, epoch=epoch, family=family, loss_order=loss_order,
                           directions=directions, n_resamples=n_resamples, seed=seed)  # fmt: skip
    omnibus, ranks = friedman_nemenyi(traj, unit=unit, epoch=epoch, loss_order=loss_order, directions=directions)
    frames = [f for f in (pairs, omnibus) if len(f)]
    table = pd.concat(frames, ignore_index=True) if frames else pairs
    return table[SIGNIFICANCE_COLUMNS], ranks
