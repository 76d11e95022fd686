"""Checking a matrix's ``claims:`` on the scored run: tests, Holm correction and verdicts.

The claim vocabulary and the verdict rule are defined (and documented) in :mod:`benchmark.claims_spec`.
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
  :mod:`benchmark.claims_spec`.
* ``agrees``: per loss :func:`analysis.correlations.pooled` (``pingouin.rm_corr``, Bakdash & Marusich
  2017; pingouin's 95 % CI), or per cell Spearman's ρ with a percentile bootstrap CI at the Bonferroni
  level 1 − 0.05/cells (:func:`_cell_spearman`: with 5–20 epochs per cell and many cells, 95 % intervals
  per cell would let one cell decide by chance) — the verdict reads the agreement's CI; ``p`` is the
  correlation's two-sided p (H0: ρ = 0), shown for information, not corrected. Epochs of one run are
  autocorrelated: read these intervals as descriptive (:mod:`analysis.correlations`).

Holm's step-down correction (Holm 1979) is :func:`analysis.significance.holm` (``pingouin.multicomp``; the
same values as statsmodels' ``multipletests(method="holm")``, which the tests compare) over one direction's
p-values of the conditions of one claim (conditions without data left out).
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
from benchmark.claims_spec import (
    INPUT_REFERENCE,
    NDCT_REFERENCE,
    NOT_TESTED,
    AgreesClaim,
    AnyClaim,
    BetterClaim,
    CloserTextureClaim,
    EquivalentClaim,
    GateConfig,
    RanksFirstClaim,
    claim_metrics,
    describe,
)
from benchmark.core.io import atomic_write_text
from benchmark.layout import CLAIMS_CSV, RunLayout

CLAIM_COLUMNS = [
    "id", "kind", "statement", "condition", "estimate", "numbers", "test", "n", "p", "p_holm", "p_reverse",
    "p_holm_reverse", "result", "gate", "verdict", "seed_verdicts", "stability",
]  # fmt: skip
SUMMARY_COLUMNS = ["id", "kind", "statement", "numbers", "test", "p_holm", "gate", "verdict", "stability"]
GATE_PASSED = "passed"  # a condition's gate column starts with it, or with GATE_FAILED
GATE_FAILED = "failed"
STABLE, SEED_DEPENDENT, ONE_SEED = "stable", "seed-dependent", "one seed"
DEGENERATE = "degenerate bootstrap interval (every resample gave the same ρ): no evidence either way"
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
    gate: GateConfig


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
    """The claim's verdict from its conditions' results (:mod:`benchmark.claims_spec`): *does not hold* if any
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
            "p": np.nan, "p_reverse": np.nan, "gate": "–"}  # fmt: skip


def _fmt(x: float) -> str:
    return f"{x:.4g}" if np.isfinite(x) else "–"


# ------------------------------------------------------------------------------------------ the gate


def _arm_mean(ctx: Context, metric: str, arch: str, dose: str, loss: str) -> float:
    """Mean of ``metric`` over the images (and seeds) of one arm at the compared epoch; NaN without rows."""
    r = ctx.rows
    sel = r[(r["metric"] == metric) & (r["architecture"].astype(str) == arch) & (r["dose"].astype(str) == dose)
            & (r["loss"].astype(str) == loss)]  # fmt: skip
    return float(sel["value"].mean()) if len(sel) else float("nan")


def _input_mean(ctx: Context, metric: str, dose: str) -> float:
    """Mean of ``metric`` of the LDCT input over its images at ``dose``; NaN without a baseline."""
    t = ctx.inputs
    if t.empty:
        return float("nan")
    sel = t[(t["metric"] == metric) & (t["dose"].astype(str) == dose)]
    return float(sel["value"].mean()) if len(sel) else float("nan")


def gate_arms(ctx: Context, arch: str, dose: str, arms: Sequence[str], *, texture: bool = False) -> str:
    """The learning gate of ``arms`` (loss labels; the pseudo-arms are skipped) in one architecture × dose:
    ``"passed: …"`` with each arm's ratio to the input, or ``"failed: …"`` naming each arm, condition and
    number that failed (or the data that is missing, since then learning cannot be confirmed).
    ``texture`` adds the residual-noise check of ``closer_texture`` (:class:`benchmark.claims_spec.GateConfig`)."""
    g = ctx.gate
    if not g.enabled:
        return "off"
    checks = [("rmse_hu", g.rmse_ratio)] + ([("nps_noise_hu", g.noise_ratio)] if texture else [])
    failed, shown = [], []
    for metric, limit in checks:
        base = _input_mean(ctx, metric, dose)
        ratios = []
        for arm in (a for a in dict.fromkeys(arms) if not a.startswith("\x00")):
            value = _arm_mean(ctx, metric, arch, dose, arm)
            ratio = value / base if np.isfinite(base) and base > 0 else float("nan")
            if not np.isfinite(ratio):
                failed.append(f"{arm} · {arch} · {dose}: no {metric} of the arm or of the LDCT input to check it")
            elif ratio > limit:
                failed.append(f"{arm} · {arch} · {dose}: {metric} {value:.3g} = {ratio:.2f}× the LDCT input's "
                              f"{base:.3g} (gate ≤ {limit:g}×)")  # fmt: skip
            else:
                ratios.append(f"{arm} {ratio:.2f}×")
        shown.append(f"{metric} {', '.join(ratios)} of the input (≤ {limit:g}×)")
    if failed:
        return f"{GATE_FAILED}: " + "; ".join(failed)
    return f"{GATE_PASSED}: " + "; ".join(shown)


def combine_gates(gates: Sequence[str]) -> str:
    """Several gate texts as one: failed if any failed (its failures), else the passes joined."""
    failed = [g.removeprefix(f"{GATE_FAILED}: ") for g in gates if g.startswith(GATE_FAILED)]
    if failed:
        return f"{GATE_FAILED}: " + "; ".join(failed)
    passed = [g.removeprefix(f"{GATE_PASSED}: ") for g in gates if g.startswith(GATE_PASSED)]
    return f"{GATE_PASSED}: " + "; ".join(passed) if passed else gates[0] if gates else "off"


def plateau_fraction(values: Sequence[float]) -> float:
    """How much a loss still moves at the end of training: ``|L_n − L_{n−k}| / (max L − min L)`` with
    ``k = round(n / 3)`` epochs (the last third), over the loss's per-epoch values in epoch order; 0 for a
    loss that never moved, NaN with fewer than 3 epochs or a non-finite value."""
    v = np.asarray(values, dtype=float)
    if v.size < 3 or not np.all(np.isfinite(v)):
        return float("nan")
    k = max(1, round(v.size / 3))
    span = float(v.max() - v.min())
    return abs(float(v[-1] - v[-1 - k])) / span if span > 0 else 0.0


def gate_agrees(ctx: Context, claim: AgreesClaim, cells: Sequence[str]) -> str:
    """The gate of an ``agrees`` condition (its cells): each cell's arm passes :func:`gate_arms`, has
    ≥ ``min_epochs`` scored epochs of ``claim.metric``, and its ``claim.against`` loss has flattened
    (:func:`plateau_fraction` < ``plateau``)."""
    g = ctx.gate
    if not g.enabled:
        return "off"
    t = ctx.traj
    t = t[t["cell"].astype(str).isin(list(cells))]
    failed, epochs, moved = [], [], []
    arms = t[["loss", "architecture", "dose"]].astype(str).drop_duplicates()
    for loss, arch, dose in arms.itertuples(index=False):
        verdict_ = gate_arms(ctx, arch, dose, [loss])
        if verdict_.startswith(GATE_FAILED):
            failed.append(verdict_.removeprefix(f"{GATE_FAILED}: "))
    scored = t[(t["source"] != SOURCE_HISTORY) & (t["metric"] == claim.metric)]
    hist = t[(t["source"] == SOURCE_HISTORY) & (t["metric"] == claim.against)]
    for cell in cells:
        n = int(scored.loc[scored["cell"].astype(str) == cell, "epoch"].nunique())
        series = hist[hist["cell"].astype(str) == cell].groupby("epoch")["value"].mean().sort_index()
        frac = plateau_fraction(series.to_numpy())
        epochs.append(n)
        moved.append(frac)
        if n < g.min_epochs:
            failed.append(f"{cell}: {n} scored epochs of {claim.metric} (gate ≥ {g.min_epochs})")
        if not np.isfinite(frac) or frac >= g.plateau:
            failed.append(f"{cell}: {claim.against} moved {frac:.2f} × its range over the last third of its "
                          f"{len(series)} epochs (gate < {g.plateau:g}: not flattened)")  # fmt: skip
    if failed:
        return f"{GATE_FAILED}: " + "; ".join(failed)
    return (f"{GATE_PASSED}: rmse_hu ≤ {g.rmse_ratio:g}× the input; ≥ {min(epochs, default=0)} scored epochs; "
            f"{claim.against} moved ≤ {max(moved, default=0.0):.2f} × its range over the last third")  # fmt: skip


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
                    "gate": gate_arms(ctx, arch, dose, [claim.a, claim.b]),
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
                        "gate": combine_gates([gate_arms(ctx, arch, dose, [claim.a, claim.b], texture=True)]
                                              + ([] if ref in (_INPUT, _NDCT) else [gate_arms(ctx, arch, dose, [ref])])),
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
                        "gate": gate_arms(ctx, arch, dose, [x, y]),
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
        out.append({**_ranks_condition(claim, cond, sel, float(fried["p_value"].iloc[0])),
                    "gate": gate_arms(ctx, arch, dose, field)})
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
        degenerate = key == "cell" and lo == hi  # every bootstrap resample gave the same ρ
        cells = [cond] if key == "cell" else sorted(set(paired.loc[paired["loss"].astype(str) == cond, "cell"].astype(str)))
        numbers = f"{cond}: agreement {float(r['agreement']):+.2f} [{lo:+.2f}, {hi:+.2f}], n = {int(r['n'])}"
        out.append({"condition": cond, "estimate": float(r["agreement"]), "n": int(r["n"]), "p": float(r["p_value"]),
                    "p_reverse": np.nan, "gate": gate_agrees(ctx, claim, cells),
                    "result": UNCLEAR if degenerate else HOLDS if claimed else REVERSED if other else UNCLEAR,
                    "numbers": numbers + (f" ({DEGENERATE})" if degenerate else "")})  # fmt: skip
    return out


KINDS: dict[str, Callable[..., list[dict[str, object]]]] = {
    "better": _better, "closer_texture": _texture, "ranks_first": _ranks_first, "agrees": _agrees,
    "equivalent": _equivalent,
}  # fmt: skip


def _finish(claim: AnyClaim, records: list[dict[str, object]]) -> pd.DataFrame:
    """Holm over the conditions (tested kinds), each condition's result and the claim's verdict. For
    ``equivalent``, a condition is reversed only if its difference is also beyond the margin (``beyond``)."""
    df = pd.DataFrame.from_records(
        records, columns=["condition", "estimate", "numbers", "n", "p", "p_reverse", "result", "beyond", "gate"]
    )
    if isinstance(claim, AgreesClaim):
        df["p_holm"], df["p_holm_reverse"] = np.nan, np.nan
        df["result"] = df["result"].astype(object).fillna(UNCLEAR)
        ci = "95 %" if claim.method == "rm_corr" else f"Bonferroni {1 - 0.05 / max(1, len(df)):.2%} bootstrap"
        test = TESTS["agrees"].format(method=claim.method, ci=ci, threshold=claim.threshold)
        if claim.method == "spearman":
            test += " (descriptive: the epochs of one run are autocorrelated)"
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
    df["gate"] = df["gate"].astype(object).fillna("–")
    gated = df["gate"].astype(str).str.startswith(GATE_FAILED)
    df.loc[gated, "result"] = NOT_TESTED
    decided = NOT_TESTED if gated.any() else verdict(list(df["result"]))
    df = df.assign(id=claim.id, kind=claim.kind, statement=describe(claim), test=test, verdict=decided,
                   seed_verdicts="", stability="")  # fmt: skip
    return df[CLAIM_COLUMNS]


def _context(traj: pd.DataFrame, claims: Sequence[AnyClaim], *, inputs: pd.DataFrame | None, ndct: pd.DataFrame | None,
             unit: Unit, epoch: str, directions: Mapping[str, bool] | None, n_resamples: int, seed: int,
             gate: GateConfig) -> Context:  # fmt: skip
    rows = select_epoch(metric_rows(traj), epoch, history=traj)
    metrics = {m for c in claims for m in claim_metrics(c)}
    return Context(traj=traj, rows=rows, inputs=inputs if inputs is not None else pd.DataFrame(),
                   ndct=ndct if ndct is not None else pd.DataFrame(), unit=unit, epoch=epoch,
                   directions={**higher_is_better_map(metrics), **(directions or {})}, n_resamples=n_resamples,
                   seed=seed, gate=gate)  # fmt: skip


def _stability(pooled: str, per_seed: Mapping[str, str]) -> tuple[str, str]:
    """``(seed_verdicts, stability)``: each seed's verdict alone, and whether every one equals the
    pooled verdict (:data:`STABLE`) or not (:data:`SEED_DEPENDENT`); :data:`ONE_SEED` with one seed."""
    if len(per_seed) < 2:
        return "", ONE_SEED
    shown = "; ".join(f"seed {s}: {v}" for s, v in per_seed.items())
    return shown, STABLE if all(v == pooled for v in per_seed.values()) else SEED_DEPENDENT


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
    gate: GateConfig | None = None,
) -> pd.DataFrame:
    """Every claim's conditions, tests, learning gate and verdict (:data:`CLAIM_COLUMNS`, one row per
    claim × condition).

    ``traj`` is the tidy trajectory table (:mod:`analysis.schema`), ``inputs`` the LDCT-input baseline
    (read by the gate, and by ``closer_texture`` claims with ``reference: input``), ``ndct`` the NDCT
    noise's NPS features (``reference: ndct``); ``unit`` and ``epoch`` as in
    :mod:`analysis.significance`; ``n_resamples``/``seed`` drive the bootstrap of ``agrees`` with
    ``method: spearman``; ``gate`` the learning gate (:class:`benchmark.claims_spec.GateConfig`, its defaults
    when None). A claim whose data are missing is *inconclusive*, with "no data" in ``numbers``; one with
    an arm below the gate *not tested*.

    With several seeds, each claim is also decided on each seed alone (the same tests and gate on that
    seed's cells; ``seed_verdicts``), and ``stability`` says whether every seed gives the pooled verdict
    (**stable**) or not (**seed-dependent**); with one seed it says **one seed**.
    """
    if not claims:
        return pd.DataFrame(columns=CLAIM_COLUMNS)
    gate = gate or GateConfig()
    options = {"inputs": inputs, "ndct": ndct, "unit": unit, "epoch": epoch, "directions": directions,
               "n_resamples": n_resamples, "seed": seed, "gate": gate}  # fmt: skip
    ctx = _context(traj, claims, **options)  # type: ignore[arg-type]
    frames = [_finish(c, KINDS[c.kind](c, ctx)) for c in claims]
    seeds = sorted(set(metric_rows(traj)["seed"].astype(str)), key=lambda x: (len(x), x))
    per_seed: dict[str, dict[str, str]] = {c.id: {} for c in claims}
    if len(seeds) > 1:
        for s in seeds:
            ctx_s = _context(traj[traj["seed"].astype(str) == s], claims, **options)  # type: ignore[arg-type]
            for c in claims:
                per_seed[c.id][s] = str(_finish(c, KINDS[c.kind](c, ctx_s))["verdict"].iloc[0])
    for frame, c in zip(frames, claims):
        frame["seed_verdicts"], frame["stability"] = _stability(str(frame["verdict"].iloc[0]), per_seed[c.id])
    return pd.concat(frames, ignore_index=True)[CLAIM_COLUMNS]


def _decisive(g: pd.DataFrame) -> float:
    """The p that decides the verdict: the largest claimed-direction Holm p when it holds, the smallest
    reverse Holm p of the reversed conditions when it does not, else the largest claimed-direction Holm p
    (the weakest condition)."""
    if g["verdict"].iloc[0] == "does not hold":
        reversed_ = g["result"] == REVERSED
        return float(g.loc[reversed_ if reversed_.any() else g.index, "p_holm_reverse"].min())
    return float(g["p_holm"].max()) if g["p_holm"].notna().any() else float("nan")


def _joined(items: Sequence[str], max_items: int) -> str:
    more = f"; … {len(items) - max_items} more in claims.csv" if len(items) > max_items else ""
    return "; ".join(items[:max_items]) + more


def gate_summary(g: pd.DataFrame, max_conditions: int = 6) -> str:
    """One claim's gate in a sentence: its failures (``failed: …``), or ``passed: …`` per condition."""
    gates = [str(x) for x in g["gate"].fillna("–")] if "gate" in g else []
    failed = [x.removeprefix(f"{GATE_FAILED}: ") for x in gates if x.startswith(GATE_FAILED)]
    if failed:
        return f"{GATE_FAILED}: " + _joined(list(dict.fromkeys(failed)), max_conditions)
    passed = [f"{c}: {x.removeprefix(f'{GATE_PASSED}: ')}" for c, x in zip(g["condition"], gates)
              if x.startswith(GATE_PASSED)]  # fmt: skip
    if passed:
        return f"{GATE_PASSED}: " + _joined(passed, max_conditions)
    return gates[0] if gates else "–"


def stability_summary(first: pd.Series) -> str:
    """``one seed``, ``stable (…)`` or ``seed-dependent (…)`` with each seed's verdict."""
    stability, per_seed = str(first.get("stability", "") or ""), str(first.get("seed_verdicts", "") or "")
    if per_seed and per_seed != "nan":
        return f"{stability} ({per_seed})"
    return stability or ONE_SEED


def summarise_claims(df: pd.DataFrame, max_conditions: int = 6) -> pd.DataFrame:
    """One row per claim (:data:`SUMMARY_COLUMNS`): the numbers of up to ``max_conditions`` conditions
    (the rest are in ``claims.csv``), the deciding Holm p (:func:`_decisive`), the learning gate
    (:func:`gate_summary`) and the seed stability (:func:`stability_summary`)."""
    records = []
    for cid, g in df.groupby("id", sort=False):
        first = g.iloc[0]
        records.append({"id": cid, "kind": first["kind"], "statement": first["statement"],
                        "numbers": _joined(list(g["numbers"].astype(str)), max_conditions), "test": first["test"],
                        "p_holm": _decisive(g), "gate": gate_summary(g, max_conditions), "verdict": first["verdict"],
                        "stability": stability_summary(first)})  # fmt: skip
    return pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)


def write_claims(layout: RunLayout, df: pd.DataFrame) -> None:
    """``<out>/analysis/claims.csv`` (atomically)."""
    atomic_write_text(layout.analysis_file(CLAIMS_CSV), df.to_csv(index=False))
