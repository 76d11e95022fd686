"""Checking a matrix's ``claims:`` on the scored run: tests, Holm correction and verdicts.

The claim vocabulary and the verdict rule are defined (and documented) in :mod:`benchmark.claims`.
:func:`evaluate_claims` returns one row per claim × condition (:data:`CLAIM_COLUMNS`, written as
``<out>/analysis/claims.csv``); :func:`summarise_claims` collapses it to one row per claim for the report.

Data, as in :mod:`analysis.significance`: one epoch per cell (``final`` or ``best_val``), seeds averaged
per image, then per-patient means (``unit="patient"``, the default) — the patient is the unit of
inference; units missing for one side of a pair are dropped from that pair.

* ``better``: ``d = a − b`` per patient, oriented by the metric's ``higher_is_better`` (``b − a`` for
  lower-is-better metrics); ``p = scipy.stats.wilcoxon(d, alternative="greater")`` (claimed direction)
  and ``alternative="less"`` (reverse), scipy's defaults otherwise (zero differences dropped, exact null
  distribution for small n without ties).
* ``closer_texture``: ``d = |b − ref| − |a − ref|`` per patient and feature (> 0: *a* closer), the same
  two one-sided Wilcoxon tests.
* ``equivalent``: per pair ``(x, y)`` of the claim's losses (in the listed order) and condition,
  ``d = x − y`` per patient (not oriented: equivalence is symmetric) and the Wilcoxon TOST
  (:func:`wilcoxon_tost`): ``p = max(wilcoxon(d − margin, alternative="less"), wilcoxon(d + margin,
  alternative="greater"))``; ``p_reverse`` is the two-sided ``wilcoxon(d)`` p, and a condition counts as
  reversed (*differs*) only if, after Holm, that p is < α **and** ``|median(d)| > margin``
  (:func:`_finish`). ``estimate`` is ``median(d)``. Holm runs over all pairs × conditions of the claim.
* ``ranks_first``: :func:`analysis.significance.friedman_nemenyi` on the claim's losses (Friedman χ²,
  Nemenyi p-values of ``scikit_posthocs``; Demšar 2006) — combined per condition as in
  :mod:`benchmark.claims`.
* ``agrees``: per loss :func:`analysis.correlations.pooled` (``pingouin.rm_corr``, Bakdash & Marusich
  2017; pingouin's 95 % CI), or per cell Spearman's ρ with a percentile bootstrap CI at the Bonferroni
  level 1 − 0.05/cells (:func:`_cell_spearman`: with 5–20 epochs per cell and many cells, 95 % intervals
  per cell would let one cell decide by chance) — the verdict reads the agreement's CI; ``p`` is the
  correlation's two-sided p (H0: ρ = 0), shown for information, not corrected. Epochs of one run are
  autocorrelated: read these intervals as descriptive (:mod:`analysis.correlations`).

Holm's step-down correction (Holm 1979) is ``statsmodels.stats.multitest.multipletests(method="holm")``
over one direction's p-values of the conditions of one claim (conditions without data left out).
Only the verdict logic is written here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis import correlations as corr_mod
from analysis.schema import SOURCE_HISTORY, higher_is_better_map, level_order, metric_rows, select_epoch
from analysis.significance import Unit, correct, friedman_nemenyi, safe_test, unit_table
from benchmark.claims import (
    INPUT_REFERENCE,
    NDCT_REFERENCE,
    AgreesClaim,
    AnyClaim,
    BetterClaim,
    CloserTextureClaim,
    EquivalentClaim,
    RanksFirstClaim,
    claim_metrics,
    describe,
)
from benchmark.core.io import atomic_write_text
from benchmark.layout import CLAIMS_CSV, RunLayout

CLAIM_COLUMNS = [
    "id", "kind", "statement", "condition", "estimate", "numbers", "test", "n", "p", "p_holm", "p_reverse",
    "p_holm_reverse", "result", "verdict",
]  # fmt: skip
SUMMARY_COLUMNS = ["id", "kind", "statement", "numbers", "test", "p_holm", "verdict"]
HOLDS, REVERSED, UNCLEAR = "holds", "reversed", "unclear"  # a condition's result
_INPUT = "\x00input"  # the LDCT input as a pseudo-loss column (no loss label can contain a NUL)
_NDCT = "\x00ndct"  # the NDCT scan's own noise, likewise
TESTS = {
    "better": "one-sided Wilcoxon signed-rank on patient means, Holm over conditions",
    "closer_texture": "one-sided Wilcoxon signed-rank on |b − ref| − |a − ref| per patient, Holm over conditions",
    "ranks_first": "Friedman + Nemenyi (Demšar 2006), Holm over conditions",
    "equivalent": "paired Wilcoxon TOST on patient means, margin ±{margin:g}, Holm over pairs × conditions; "
                  "differs: two-sided Wilcoxon (Holm) and |median Δ| > margin",
    "agrees": "{method} agreement, {ci} CI vs threshold {threshold:g}",
}


@dataclass(frozen=True)
class Context:
    """What every claim is evaluated on (see :func:`evaluate_claims`)."""

    traj: pd.DataFrame
    rows: pd.DataFrame  # metric rows at the compared epoch
    inputs: pd.DataFrame
    ndct: pd.DataFrame  # the NDCT noise's NPS features (ndct_noise_baseline.parquet)
    unit: Unit
    epoch: str
    directions: Mapping[str, bool]
    n_resamples: int
    seed: int


# ------------------------------------------------------------------------------------------ helpers


def one_sided_wilcoxon(d: np.ndarray) -> tuple[float, float]:
    """``(p of d > 0, p of d < 0)`` from ``scipy.stats.wilcoxon``; NaN when there is no non-zero difference."""
    d = np.asarray(d, dtype=float)
    if not d.size or not np.any(d != 0):
        return float("nan"), float("nan")
    greater = safe_test(lambda: stats.wilcoxon(d, alternative="greater"))[1]
    less = safe_test(lambda: stats.wilcoxon(d, alternative="less"))[1]
    return greater, less


def two_sided_wilcoxon(d: np.ndarray) -> float:
    """Two-sided ``scipy.stats.wilcoxon`` p of ``d``; NaN when there is no non-zero difference."""
    d = np.asarray(d, dtype=float)
    if not d.size or not np.any(d != 0):
        return float("nan")
    return safe_test(lambda: stats.wilcoxon(d))[1]


def wilcoxon_tost(d: np.ndarray, margin: float) -> float:
    """Paired TOST (Schuirmann 1987) in the Wilcoxon signed-rank form: the larger of the one-sided p of
    ``d − margin < 0`` and of ``d + margin > 0``; small p: the location of ``d`` lies within ±``margin``."""
    d = np.asarray(d, dtype=float)
    if not d.size:
        return float("nan")
    below = one_sided_wilcoxon(d - margin)[1]  # H1: d − margin < 0
    above = one_sided_wilcoxon(d + margin)[0]  # H1: d + margin > 0
    return max(1.0 if np.isnan(q) else q for q in (below, above))  # every d on a bound: no evidence, p = 1


def condition_result(p_holm: float, p_holm_reverse: float, alpha: float) -> str:
    """``holds`` / ``reversed`` / ``unclear`` from one condition's Holm p-values."""
    if p_holm < alpha:
        return HOLDS
    if p_holm_reverse < alpha:
        return REVERSED
    return UNCLEAR


def verdict(results: Sequence[str]) -> str:
    """The claim's verdict from its conditions' results (:mod:`benchmark.claims`): *does not hold* if any
    condition is reversed, *holds* if every one holds (and there is at least one), else *inconclusive*."""
    if any(r == REVERSED for r in results):
        return "does not hold"
    if results and all(r == HOLDS for r in results):
        return "holds"
    return "inconclusive"


def _levels(ctx: Context, column: str, chosen: Sequence[str] | None) -> list[str]:
    return list(chosen) if chosen else level_order(ctx.rows, column)


def _conditions(ctx: Context, claim: AnyClaim) -> list[tuple[str, str]]:
    """``(architecture, dose)`` pairs the claim is checked in."""
    return [(a, d) for a in _levels(ctx, "architecture", claim.architectures) for d in _levels(ctx, "dose", claim.doses)]


def _patients(ctx: Context, metric: str, arch: str, dose: str, losses: Sequence[str]) -> pd.DataFrame:
    """Wide ``patients × losses`` table (:func:`analysis.significance.unit_table`); the pseudo-loss
    :data:`_INPUT` reads the LDCT input baseline, :data:`_NDCT` the NDCT noise's."""
    r = ctx.rows
    sel = r[(r["metric"] == metric) & (r["architecture"].astype(str) == arch) & (r["dose"].astype(str) == dose)
            & r["loss"].astype(str).isin(losses)]  # fmt: skip
    frames = [sel[["loss", "seed", "patient", "image", "value"]].assign(loss=sel["loss"].astype(str))]
    for pseudo, table in ((_INPUT, ctx.inputs), (_NDCT, ctx.ndct)):
        if pseudo in losses and len(table):
            base = table[(table["metric"] == metric) & (table["dose"].astype(str) == dose)]
            frames.append(base[["patient", "image", "value"]].assign(loss=pseudo, seed=0))
    values = pd.concat(frames, ignore_index=True)
    if values.empty:
        return pd.DataFrame(columns=list(losses))
    return unit_table(values, ctx.unit).reindex(columns=list(losses))


def _no_data(condition: str, why: str) -> dict[str, object]:
    return {"condition": condition, "estimate": np.nan, "numbers": f"{condition}: no data ({why})", "n": 0,
            "p": np.nan, "p_reverse": np.nan}  # fmt: skip


def _fmt(x: float) -> str:
    return f"{x:.4g}" if np.isfinite(x) else "–"


# ------------------------------------------------------------------------------------------ the kinds


def _better(claim: BetterClaim, ctx: Context) -> list[dict[str, object]]:
    higher = bool(ctx.directions[claim.metric])
    out = []
    for arch, dose in _conditions(ctx, claim):
        cond = f"{arch} · {dose}"
        pair = _patients(ctx, claim.metric, arch, dose, [claim.a, claim.b]).dropna()
        if pair.empty:
            out.append(_no_data(cond, f"{claim.metric} of {claim.a} and {claim.b}"))
            continue
        a, b = pair[claim.a].to_numpy(), pair[claim.b].to_numpy()
        p, p_rev = one_sided_wilcoxon(a - b if higher else b - a)
        diff = float((a - b).mean())
        out.append({"condition": cond, "estimate": diff, "n": len(pair), "p": p, "p_reverse": p_rev,
                    "numbers": f"{cond}: {claim.a} {_fmt(a.mean())} vs {claim.b} {_fmt(b.mean())} "
                               f"(Δ {diff:+.3g}, {'higher' if higher else 'lower'} is better), n = {len(pair)}"})  # fmt: skip
    return out


def _texture(claim: CloserTextureClaim, ctx: Context) -> list[dict[str, object]]:
    ref = {INPUT_REFERENCE: _INPUT, NDCT_REFERENCE: _NDCT}.get(claim.reference, claim.reference)
    ref_name = {_INPUT: "LDCT input", _NDCT: "NDCT noise"}.get(ref, ref)
    out = []
    for feature in claim.features:
        for arch, dose in _conditions(ctx, claim):
            cond = f"{feature} · {arch} · {dose}"
            t = _patients(ctx, feature, arch, dose, [claim.a, claim.b, ref]).dropna()
            if t.empty:
                out.append(_no_data(cond, f"{feature} of {claim.a}, {claim.b} and {ref_name}"))
                continue
            dist_a, dist_b = (t[claim.a] - t[ref]).abs(), (t[claim.b] - t[ref]).abs()
            p, p_rev = one_sided_wilcoxon((dist_b - dist_a).to_numpy())
            est = float((dist_b - dist_a).mean())
            out.append({"condition": cond, "estimate": est, "n": len(t), "p": p, "p_reverse": p_rev,
                        "numbers": f"{cond}: {claim.a} {_fmt(t[claim.a].mean())}, {claim.b} {_fmt(t[claim.b].mean())}, "
                                   f"{ref_name} {_fmt(t[ref].mean())}; mean |Δ to ref| {_fmt(dist_a.mean())} vs "
                                   f"{_fmt(dist_b.mean())}, n = {len(t)}"})  # fmt: skip
    return out


def _equivalent(claim: EquivalentClaim, ctx: Context) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for arch, dose in _conditions(ctx, claim):
        table = _patients(ctx, claim.metric, arch, dose, claim.losses)
        for x, y in itertools.combinations(claim.losses, 2):
            cond = f"{x} vs {y} · {arch} · {dose}"
            pair = table[[x, y]].dropna()
            if pair.empty:
                out.append(_no_data(cond, f"{claim.metric} of {x} and {y}"))
                continue
            d = pair[x].to_numpy() - pair[y].to_numpy()
            med = float(np.median(d))
            out.append({"condition": cond, "estimate": med, "n": len(pair), "p": wilcoxon_tost(d, claim.margin),
                        "p_reverse": two_sided_wilcoxon(d), "beyond": abs(med) > claim.margin,
                        "numbers": f"{cond}: {x} {_fmt(pair[x].mean())} vs {y} {_fmt(pair[y].mean())} "
                                   f"(median Δ {med:+.3g}, margin ±{claim.margin:g}), n = {len(pair)}"})  # fmt: skip
    return out


def _ranks_condition(claim: RanksFirstClaim, cond: str, ranks: pd.DataFrame, friedman_p: float) -> dict[str, object]:
    """One condition of ``ranks_first``: combine the Friedman p and A's Nemenyi p-values."""
    mean_rank = ranks.set_index("loss")["mean_rank"]
    nemenyi = ranks.set_index("loss").loc[claim.a, "nemenyi"]
    others = [x for x in mean_rank.index if x != claim.a]
    above = [x for x in others if mean_rank[x] < mean_rank[claim.a]]
    best = all(mean_rank[x] > mean_rank[claim.a] for x in others)
    p = max(friedman_p, max(nemenyi[x] for x in others)) if best else 1.0
    p_rev = max(friedman_p, min(nemenyi[x] for x in above)) if above else 1.0
    n = int(ranks["n"].iloc[0])
    shown = ", ".join(f"{x} {mean_rank[x]:.2f}" for x in mean_rank.sort_values().index)
    return {"condition": cond, "estimate": float(mean_rank[claim.a]), "n": n, "p": float(p), "p_reverse": float(p_rev),
            "numbers": f"{cond}: mean ranks {shown} (1 = best; Friedman p {_fmt(friedman_p)}), n = {n}"}  # fmt: skip


def _ranks_first(claim: RanksFirstClaim, ctx: Context) -> list[dict[str, object]]:
    field = list(claim.losses) if claim.losses else level_order(ctx.rows, "loss")
    t = ctx.traj
    keep = (t["source"] == SOURCE_HISTORY) | ((t["metric"] == claim.metric) & t["loss"].astype(str).isin(field))
    tests, ranks = friedman_nemenyi(t[keep & t["loss"].astype(str).isin(field)], unit=ctx.unit, epoch=ctx.epoch,
                                    loss_order=field, directions={claim.metric: ctx.directions[claim.metric]})  # fmt: skip
    out = []
    for arch, dose in _conditions(ctx, claim):
        cond = f"{arch} · {dose}"
        sel = ranks[(ranks["architecture"].astype(str) == arch) & (ranks["dose"].astype(str) == dose)]
        fried = tests[(tests["test"] == "friedman") & (tests["architecture"].astype(str) == arch)
                      & (tests["dose"].astype(str) == dose)]  # fmt: skip
        if sel.empty or claim.a not in set(sel["loss"]):
            out.append(_no_data(cond, f"complete blocks of ≥ 3 losses incl. {claim.a} on {claim.metric}"))
            continue
        out.append(_ranks_condition(claim, cond, sel, float(fried["p_value"].iloc[0])))
    return out


def _cell_spearman(paired: pd.DataFrame, claim: AgreesClaim, higher: bool, ctx: Context) -> pd.DataFrame:
    """Per cell: Spearman's ρ against ``claim.against`` with its percentile bootstrap CI
    (:func:`analysis.correlations.within_cells`) at the Bonferroni level ``1 − 0.05 / cells``, so that the
    cells' intervals cover together; oriented to agreement."""
    confidence = 1 - 0.05 / max(1, paired["cell"].nunique())
    rows = corr_mod.within_cells(paired, {claim.metric: higher}, n_resamples=ctx.n_resamples, seed=ctx.seed,
                                 confidence=confidence)  # fmt: skip
    return rows[rows["against"] == claim.against]


def _agrees(claim: AgreesClaim, ctx: Context) -> list[dict[str, object]]:
    paired = corr_mod.paired_trajectories(ctx.traj)
    archs, doses = _levels(ctx, "architecture", claim.architectures), _levels(ctx, "dose", claim.doses)
    losses = list(claim.losses) if claim.losses else level_order(ctx.rows, "loss")
    paired = paired[(paired["metric"] == claim.metric) & paired["loss"].astype(str).isin(losses)
                    & paired["architecture"].astype(str).isin(archs) & paired["dose"].astype(str).isin(doses)]  # fmt: skip
    higher = {claim.metric: ctx.directions[claim.metric]}
    if claim.method == "rm_corr":
        rows, key = corr_mod.pooled(paired, higher), "loss"
        rows = rows[rows["against"] == claim.against] if len(rows) else rows
    else:
        rows, key = _cell_spearman(paired, claim, higher[claim.metric], ctx), "cell"
    found = {str(r[key]): r for _, r in rows.iterrows()}
    wanted = losses if key == "loss" else list(found) or losses
    out = []
    for cond in wanted:
        r = found.get(cond)
        if r is None or not np.isfinite(r["agreement_ci_low"]):
            out.append(_no_data(cond, f"{claim.against} and {claim.metric} over ≥ 3 epochs (rm_corr: ≥ 3 cells)"))
            continue
        lo, hi = float(r["agreement_ci_low"]), float(r["agreement_ci_high"])
        above, below = lo >= claim.threshold, hi < claim.threshold
        claimed, other = (above, below) if claim.expect == "agree" else (below, above)
        out.append({"condition": cond, "estimate": float(r["agreement"]), "n": int(r["n"]), "p": float(r["p_value"]),
                    "p_reverse": np.nan, "result": HOLDS if claimed else REVERSED if other else UNCLEAR,
                    "numbers": f"{cond}: agreement {float(r['agreement']):+.2f} [{lo:+.2f}, {hi:+.2f}], n = {int(r['n'])}"})  # fmt: skip
    return out


KINDS: dict[str, Callable[..., list[dict[str, object]]]] = {
    "better": _better, "closer_texture": _texture, "ranks_first": _ranks_first, "agrees": _agrees,
    "equivalent": _equivalent,
}  # fmt: skip


def _finish(claim: AnyClaim, records: list[dict[str, object]]) -> pd.DataFrame:
    """Holm over the conditions (tested kinds), each condition's result and the claim's verdict. For
    ``equivalent``, a condition is reversed only if its difference is also beyond the margin (``beyond``)."""
    df = pd.DataFrame.from_records(
        records, columns=["condition", "estimate", "numbers", "n", "p", "p_reverse", "result", "beyond"]
    )
    if isinstance(claim, AgreesClaim):
        df["p_holm"], df["p_holm_reverse"] = np.nan, np.nan
        df["result"] = df["result"].astype(object).fillna(UNCLEAR)
        ci = "95 %" if claim.method == "rm_corr" else f"Bonferroni {1 - 0.05 / max(1, len(df)):.2%}"
        test = TESTS["agrees"].format(method=claim.method, ci=ci, threshold=claim.threshold)
    else:
        df["p_holm"] = correct(df["p"])[0] if len(df) else []
        df["p_holm_reverse"] = correct(df["p_reverse"])[0] if len(df) else []
        rev = df["p_holm_reverse"].to_numpy(dtype=float)
        if isinstance(claim, EquivalentClaim):  # significant, but inside the margin: not a reversal
            rev = np.where(df["beyond"].eq(True), rev, np.nan)
        df["result"] = [condition_result(a, b, claim.alpha) for a, b in zip(df["p_holm"], rev)]
        test = f"{TESTS[claim.kind]}, α = {claim.alpha:g}"
        if isinstance(claim, EquivalentClaim):
            test = test.format(margin=claim.margin)
    df = df.assign(id=claim.id, kind=claim.kind, statement=describe(claim), test=test,
                   verdict=verdict(list(df["result"])))  # fmt: skip
    return df[CLAIM_COLUMNS]


def evaluate_claims(
    claims: Sequence[AnyClaim],
    traj: pd.DataFrame,
    *,
    inputs: pd.DataFrame | None = None,
    ndct: pd.DataFrame | None = None,
    unit: Unit = "patient",
    epoch: str = "final",
    directions: Mapping[str, bool] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Every claim's conditions, tests and verdict (:data:`CLAIM_COLUMNS`, one row per claim × condition).

    ``traj`` is the tidy trajectory table (:mod:`analysis.schema`), ``inputs`` the LDCT-input baseline
    (needed by ``closer_texture`` claims with ``reference: input``), ``ndct`` the NDCT noise's NPS
    features (``reference: ndct``); ``unit`` and ``epoch`` as in
    :mod:`analysis.significance`; ``n_resamples``/``seed`` drive the bootstrap of ``agrees`` with
    ``method: spearman``. A claim whose data are missing is *inconclusive*, with "no data" in ``numbers``.
    """
    if not claims:
        return pd.DataFrame(columns=CLAIM_COLUMNS)
    rows = select_epoch(metric_rows(traj), epoch, history=traj)
    metrics = {m for c in claims for m in claim_metrics(c)}
    ctx = Context(traj=traj, rows=rows, inputs=inputs if inputs is not None else pd.DataFrame(),
                  ndct=ndct if ndct is not None else pd.DataFrame(), unit=unit, epoch=epoch,
                  directions={**higher_is_better_map(metrics), **(directions or {})}, n_resamples=n_resamples,
                  seed=seed)  # fmt: skip
    frames = [_finish(c, KINDS[c.kind](c, ctx)) for c in claims]
    return pd.concat(frames, ignore_index=True)[CLAIM_COLUMNS]


def _decisive(g: pd.DataFrame) -> float:
    """The p that decides the verdict: the largest claimed-direction Holm p when it holds, the smallest
    reverse Holm p of the reversed conditions when it does not, else the largest claimed-direction Holm p
    (the weakest condition)."""
    if g["verdict"].iloc[0] == "does not hold":
        reversed_ = g["result"] == REVERSED
        return float(g.loc[reversed_ if reversed_.any() else g.index, "p_holm_reverse"].min())
    return float(g["p_holm"].max()) if g["p_holm"].notna().any() else float("nan")


def summarise_claims(df: pd.DataFrame, max_conditions: int = 6) -> pd.DataFrame:
    """One row per claim (:data:`SUMMARY_COLUMNS`): the numbers of up to ``max_conditions`` conditions
    (the rest are in ``claims.csv``) and the deciding Holm p (:func:`_decisive`)."""
    records = []
    for cid, g in df.groupby("id", sort=False):
        numbers = list(g["numbers"].astype(str))
        more = f"; … {len(numbers) - max_conditions} more in claims.csv" if len(numbers) > max_conditions else ""
        first = g.iloc[0]
        records.append({"id": cid, "kind": first["kind"], "statement": first["statement"],
                        "numbers": "; ".join(numbers[:max_conditions]) + more, "test": first["test"],
                        "p_holm": _decisive(g), "verdict": first["verdict"]})  # fmt: skip
    return pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)


def write_claims(layout: RunLayout, df: pd.DataFrame) -> None:
    """``<out>/analysis/claims.csv`` (atomically)."""
    atomic_write_text(layout.analysis_file(CLAIMS_CSV), df.to_csv(index=False))
