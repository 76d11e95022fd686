"""Claims (benchmark.claims_spec, analysis.claims): every kind's verdict on planted effects (holds), reversed
effects (does not hold) and nulls (inconclusive) in seeded synthetic trajectories; the p-values against
scipy and statsmodels computed independently; the schema's errors; and claims.csv plus the report's
Claims section end to end."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.claims import CLAIM_COLUMNS, evaluate_claims, summarise_claims
from analysis.schema import BASELINE_COLUMNS
from analysis.simulate import simulate_trajectories
from benchmark.claims_spec import (
    AgreesClaim,
    BetterClaim,
    CloserTextureClaim,
    EquivalentClaim,
    GateConfig,
    RanksFirstClaim,
    describe,
)
from benchmark.config import parse_matrix
from benchmark.core.errors import UserError

DOSES = ("d1", "d2")
METRICS = {"psnr": (30.0, 1.0, True), "rmse_hu": (20.0, 1.0, False)}


def _traj(effects: dict[str, float], *, seed: int = 0, patients: int = 10, seeds=(0,), epochs: int = 5,
          metrics=None, noise_sd: float = 0.5) -> pd.DataFrame:  # fmt: skip
    """Seeded trajectories with the given latent effect per loss (1 unit = 1 dB PSNR / 1 HU RMSE)."""
    return simulate_trajectories(losses=tuple(effects), doses=DOSES, seeds=seeds, epochs=epochs, patients=patients,
                                 metrics=metrics or METRICS, effects=effects, noise_sd=noise_sd, rng=seed)  # fmt: skip


OFF = GateConfig(enabled=False)


def _evaluate(claims, traj, **kw) -> pd.DataFrame:
    """The statistics alone: the learning gate off (its own tests switch it on, below)."""
    return evaluate_claims(claims, traj, **{"gate": OFF, **kw})


def _verdict(claim, traj, **kw) -> str:
    df = _evaluate([claim], traj, n_resamples=300, **kw)
    assert list(df.columns) == CLAIM_COLUMNS and df["verdict"].nunique() == 1
    return str(df["verdict"].iloc[0])


def _mostly_inconclusive(claim, make, runs: int = 10) -> None:
    """A null planted in ``runs`` seeded data sets (``make(seed)``: a trajectory table, or ``(table,
    evaluate_claims kwargs)``): the claim is inconclusive in at least 80 % of them. Its tests are at level
    α = 0.05 per direction, so one data set alone may give a false verdict by chance."""
    verdicts = []
    for seed in range(runs):
        data = make(seed)
        traj, kw = data if isinstance(data, tuple) else (data, {})
        verdicts.append(_verdict(claim, traj, **kw))
    assert verdicts.count("inconclusive") >= 0.8 * runs, verdicts


# ------------------------------------------------------------------------------------------ better


@pytest.mark.parametrize("metric", ["psnr", "rmse_hu"])  # both orientations
def test_better_planted_reversed_null(metric):
    claim = BetterClaim(id="c", kind="better", a="a", b="b", metric=metric)
    assert _verdict(claim, _traj({"a": 2.0, "b": 0.0})) == "holds"
    assert _verdict(claim, _traj({"a": 0.0, "b": 2.0})) == "does not hold"
    _mostly_inconclusive(claim, lambda seed: _traj({"a": 1.0, "b": 1.0}, seed=seed))


def test_better_p_values_match_scipy_and_statsmodels():
    traj = _traj({"a": 0.4, "b": 0.0}, seeds=(0, 1), noise_sd=1.0, seed=3)
    claim = BetterClaim(id="c", kind="better", a="a", b="b", metric="rmse_hu")
    got = _evaluate([claim], traj).set_index("condition")
    last = traj[(traj["source"] == "metric") & (traj["metric"] == "rmse_hu") & (traj["epoch"] == traj["epoch"].max())]
    per_patient = (last.groupby(["dose", "loss", "patient", "image"])["value"].mean()  # seeds per image first
                   .groupby(["dose", "loss", "patient"]).mean().unstack("loss"))  # fmt: skip
    raw, rev = [], []
    for dose in DOSES:
        d = per_patient.loc[dose, "b"] - per_patient.loc[dose, "a"]  # lower is better: b − a > 0 claims a better
        raw.append(stats.wilcoxon(d, alternative="greater").pvalue)
        rev.append(stats.wilcoxon(d, alternative="less").pvalue)
    conds = [f"redcnn · {d}" for d in DOSES]
    np.testing.assert_allclose(got.loc[conds, "p"], raw, rtol=1e-12)
    np.testing.assert_allclose(got.loc[conds, "p_reverse"], rev, rtol=1e-12)
    np.testing.assert_allclose(got.loc[conds, "p_holm"], multipletests(raw, method="holm")[1], rtol=1e-12)
    np.testing.assert_allclose(got.loc[conds, "p_holm_reverse"], multipletests(rev, method="holm")[1], rtol=1e-12)
    assert (got["n"] == 10).all()


def test_missing_condition_is_inconclusive_not_dropped():
    traj = _traj({"a": 2.0, "b": 0.0})
    traj = traj[~((traj["dose"] == "d2") & (traj["loss"] == "b"))]
    df = _evaluate([BetterClaim(id="c", kind="better", a="a", b="b", metric="psnr")], traj)
    assert set(df["result"]) == {"holds", "unclear"} and set(df["verdict"]) == {"inconclusive"}
    assert df["numbers"].str.contains("no data").sum() == 1


# ------------------------------------------------------------------------------------------ ranks_first


def test_ranks_first_planted_reversed_null():
    claim = RanksFirstClaim(id="r", kind="ranks_first", a="a", metric="psnr")
    assert _verdict(claim, _traj({"a": 3.0, "b": 0.0, "c": 0.0}, patients=12)) == "holds"
    assert _verdict(claim, _traj({"a": 0.0, "b": 3.0, "c": 1.5}, patients=12)) == "does not hold"
    _mostly_inconclusive(claim, lambda seed: _traj({"a": 1.0, "b": 1.0, "c": 1.0}, patients=12, seed=seed))


def test_ranks_first_p_combines_friedman_and_nemenyi():
    import scikit_posthocs as sp

    traj = _traj({"a": 3.0, "b": 0.0, "c": 0.5}, patients=12, seed=5)
    got = _evaluate([RanksFirstClaim(id="r", kind="ranks_first", a="a", metric="psnr")], traj)
    last = traj[(traj["source"] == "metric") & (traj["metric"] == "psnr") & (traj["epoch"] == traj["epoch"].max())]
    raw = []
    for dose in DOSES:
        wide = last[last["dose"] == dose].groupby(["patient", "loss"])["value"].mean().unstack("loss")[["a", "b", "c"]]
        friedman = stats.friedmanchisquare(*[wide[c] for c in wide]).pvalue
        nem = sp.posthoc_nemenyi_friedman((-wide).to_numpy())  # higher is better: rank the negated values
        raw.append(max(friedman, nem.iloc[0, 1], nem.iloc[0, 2]))
    np.testing.assert_allclose(got["p"], raw, rtol=1e-10)
    np.testing.assert_allclose(got["p_holm"], multipletests(raw, method="holm")[1], rtol=1e-10)


# ------------------------------------------------------------------------------------------ agrees


@pytest.mark.parametrize("method", ["rm_corr", "spearman"])
def test_agrees_planted_reversed_null(method):
    def claim(expect: str, threshold: float) -> AgreesClaim:
        return AgreesClaim(id="g", kind="agrees", metric="psnr", losses=["a"], method=method, expect=expect,
                           threshold=threshold)  # fmt: skip

    # true agreement ≈ ±0.9: clearly on one side of the threshold 0.3
    tracks = _traj({"a": 4.0}, seeds=(0, 1, 2), epochs=8, noise_sd=0.2)  # the metric improves as the loss falls
    opposes = _traj({"a": -4.0}, seeds=(0, 1, 2), epochs=8, noise_sd=0.2)  # it worsens as the loss falls
    if method == "rm_corr":
        assert _verdict(claim("agree", 0.3), tracks) == "holds"
        assert _verdict(claim("weak", 0.3), tracks) == "does not hold"
        assert _verdict(claim("weak", 0.3), opposes) == "holds"
    else:  # per cell, 8 epochs: a perfectly monotone cell's bootstrap interval is [1, 1], which decides nothing
        df = _evaluate([claim("agree", 0.3)], tracks, n_resamples=300)
        degenerate = df["numbers"].str.contains("degenerate bootstrap interval")
        assert degenerate.any() and (~degenerate).any()
        assert set(df.loc[degenerate, "result"]) == {"unclear"} and set(df.loc[~degenerate, "result"]) == {"holds"}
        assert df["verdict"].iloc[0] == "inconclusive"
    assert _verdict(claim("agree", 0.3), opposes) == "does not hold"
    # no relation: the true agreement 0 is the threshold
    _mostly_inconclusive(claim("agree", 0.0), lambda seed: _traj({"a": 0.0}, seeds=(0, 1, 2), epochs=8, seed=seed))


def test_agrees_uses_the_correlation_module():
    from analysis.correlations import correlations

    traj = _traj({"a": 2.0, "b": 0.5}, seeds=(0, 1, 2), epochs=6)
    got = _evaluate([AgreesClaim(id="g", kind="agrees", metric="psnr")], traj).set_index("condition")
    ref = correlations(traj, n_resamples=0)
    ref = ref[(ref["scope"] == "pooled") & (ref["metric"] == "psnr") & (ref["against"] == "train_loss")]
    np.testing.assert_allclose(got.loc[["a", "b"], "estimate"], ref.set_index("loss").loc[["a", "b"], "agreement"])


# ------------------------------------------------------------------------------------------ closer_texture

TEXTURE = {"nps_favg": (0.30, 0.02, True), "nps_noise_hu": (8.0, 1.0, False)}


def _texture_data(effects: dict[str, float], seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trajectories of ``a`` and ``b`` and, as the LDCT-input baseline, the values of a pseudo-loss ``ref``
    (same patients; effect 0): a loss with effect 0 has the reference's texture up to noise."""
    traj = _traj({**effects, "ref": 0.0}, metrics=TEXTURE, seed=seed)
    last = traj[(traj["loss"] == "ref") & (traj["source"] == "metric") & (traj["epoch"] == traj["epoch"].max())]
    return traj[traj["loss"] != "ref"], last[BASELINE_COLUMNS].reset_index(drop=True)


def test_closer_texture_planted_reversed_null():
    claim = CloserTextureClaim(id="t", kind="closer_texture", a="a", b="b")
    traj, inputs = _texture_data({"a": 0.0, "b": 3.0})
    assert _verdict(claim, traj, inputs=inputs) == "holds"
    traj, inputs = _texture_data({"a": -3.0, "b": 0.0})
    assert _verdict(claim, traj, inputs=inputs) == "does not hold"
    def null(seed: int) -> tuple[pd.DataFrame, dict]:
        t, i = _texture_data({"a": 2.0, "b": 2.0}, seed=seed)  # both equally far from the reference
        return t, {"inputs": i}

    _mostly_inconclusive(claim, null)
    assert _verdict(claim, traj) == "inconclusive"  # no input baseline: no data, never a verdict


def test_closer_texture_against_the_ndct_noise():
    """``reference: ndct`` reads the NDCT noise baseline (not the input's): planted / reversed / missing."""
    claim = CloserTextureClaim(id="t", kind="closer_texture", a="a", b="b", reference="ndct")
    traj, ndct = _texture_data({"a": 0.0, "b": 3.0})
    far_input = ndct.assign(value=ndct["value"] + 100.0)  # an input baseline nothing is close to
    assert _verdict(claim, traj, ndct=ndct, inputs=far_input) == "holds"
    traj, ndct = _texture_data({"a": -3.0, "b": 0.0})
    assert _verdict(claim, traj, ndct=ndct) == "does not hold"
    assert _verdict(claim, traj, inputs=ndct) == "inconclusive"  # the input baseline is not the NDCT's
    got = _evaluate([claim], traj, ndct=ndct, n_resamples=10)
    assert got["numbers"].str.contains("NDCT noise").all()
    assert "NDCT scan's own noise" in describe(claim)


def test_closer_texture_against_a_loss_and_p_values():
    traj = _traj({"a": 0.3, "b": 1.0, "ref": 0.0}, metrics=TEXTURE, seed=4)
    claim = CloserTextureClaim(id="t", kind="closer_texture", a="a", b="b", reference="ref", features=["nps_favg"])
    got = _evaluate([claim], traj)
    last = traj[(traj["metric"] == "nps_favg") & (traj["epoch"] == traj["epoch"].max())]
    raw = []
    for dose in DOSES:
        w = last[last["dose"] == dose].groupby(["patient", "loss"])["value"].mean().unstack("loss")
        raw.append(stats.wilcoxon((w["b"] - w["ref"]).abs() - (w["a"] - w["ref"]).abs(), alternative="greater").pvalue)
    np.testing.assert_allclose(got["p"], raw, rtol=1e-12)
    np.testing.assert_allclose(got["p_holm"], multipletests(raw, method="holm")[1], rtol=1e-12)


# ------------------------------------------------------------------------------------------ equivalent


def _equivalent(metric: str = "psnr", margin: float = 0.5, losses=("a", "b", "c")) -> EquivalentClaim:
    return EquivalentClaim(id="e", kind="equivalent", losses=list(losses), metric=metric, margin=margin)


@pytest.mark.parametrize("metric", ["psnr", "rmse_hu"])  # equivalence is symmetric: either orientation
def test_equivalent_planted_equivalence_difference_and_null(metric):
    claim = _equivalent(metric)
    # identical distributions, small noise, many patients: every pair × dose inside ±0.5
    assert _verdict(claim, _traj({"a": 1.0, "b": 1.0, "c": 1.0}, patients=30, noise_sd=0.2)) == "holds"
    # c is ≈ 1.8 units off a and b: significant and beyond the margin
    df = _evaluate([claim], _traj({"a": 1.0, "b": 1.0, "c": 3.0}, patients=30, noise_sd=0.2))
    assert set(df["verdict"]) == {"does not hold"}
    assert set(df.loc[df["result"] == "reversed", "condition"].str[:6]) == {"a vs c", "b vs c"}
    assert (df.loc[df["condition"].str.startswith("a vs b"), "result"] == "holds").all()
    # too few patients: the exact Wilcoxon p of 4 patients is ≥ 1/16, so no test can reach 0.05
    few = _traj({"a": 1.0, "b": 1.0, "c": 3.0}, patients=4, noise_sd=0.2)
    assert _verdict(claim, few) == "inconclusive"
    # high noise (per-patient Δ sd ≈ 2.4 ≫ margin): equal losses are neither shown equivalent nor different
    _mostly_inconclusive(claim, lambda seed: _traj({"a": 1.0, "b": 1.0, "c": 1.0}, noise_sd=3.0, seed=seed))


def test_equivalent_significant_difference_inside_the_margin_still_holds():
    """A real but small difference (≈ 0.18 dB, margin 0.5 dB) is significant two-sided, yet inside the
    margin: the losses are equivalent, the rule never calls it a reversal."""
    traj = _traj({"a": 1.0, "b": 1.2}, patients=40, noise_sd=0.1)
    df = _evaluate([_equivalent(losses=("a", "b"))], traj)
    assert (df["p_holm_reverse"] < 1e-6).all() and (df["estimate"].abs() < 0.5).all()
    assert set(df["result"]) == {"holds"} and set(df["verdict"]) == {"holds"}
    # with a margin below the difference, the same data do not hold
    assert _verdict(_equivalent(losses=("a", "b"), margin=0.05), traj) == "does not hold"


def _exact_signed_rank(x: np.ndarray) -> tuple[float, float]:
    """``(P(W+ ≤ w), P(W+ ≥ w))`` of the Wilcoxon signed-rank statistic from its exact null distribution,
    counted here (no scipy): every one of the 2ⁿ sign patterns of the ranks 1..n is equally likely.
    Needs no zeros and no tied |x|."""
    a = np.abs(x)
    assert np.all(a > 0) and len(np.unique(a)) == len(a)
    ranks = np.empty(len(a), dtype=int)
    ranks[np.argsort(a)] = np.arange(1, len(a) + 1)
    w = int(ranks[x > 0].sum())
    counts = [1] + [0] * (len(a) * (len(a) + 1) // 2)  # counts[s]: sign patterns with W+ = s (exact ints)
    for k in range(1, len(a) + 1):
        for s in range(len(counts) - 1, k - 1, -1):
            counts[s] += counts[s - k]
    total = 2 ** len(a)
    return sum(counts[: w + 1]) / total, sum(counts[w:]) / total


def test_equivalent_p_values_against_an_independent_computation():
    margin = 0.5
    traj = _traj({"a": 0.0, "b": 0.3}, patients=12, seeds=(0, 1), noise_sd=0.6, seed=7)
    got = _evaluate([_equivalent(losses=("a", "b"), margin=margin)], traj).set_index("condition")
    last = traj[(traj["source"] == "metric") & (traj["metric"] == "psnr") & (traj["epoch"] == traj["epoch"].max())]
    per_patient = (last.groupby(["dose", "loss", "patient", "image"])["value"].mean()  # seeds per image first
                   .groupby(["dose", "loss", "patient"]).mean().unstack("loss"))  # fmt: skip
    tost, two_sided, tost_exact, two_exact, medians = [], [], [], [], []
    for dose in DOSES:
        d = (per_patient.loc[dose, "a"] - per_patient.loc[dose, "b"]).to_numpy()
        medians.append(np.median(d))
        # scipy on the independently aggregated patient means
        tost.append(max(stats.wilcoxon(d - margin, alternative="less").pvalue,
                        stats.wilcoxon(d + margin, alternative="greater").pvalue))  # fmt: skip
        two_sided.append(stats.wilcoxon(d).pvalue)
        # the exact null distribution counted by hand
        upper, lower = _exact_signed_rank(d - margin)[0], _exact_signed_rank(d + margin)[1]
        tost_exact.append(max(upper, lower))
        le, ge = _exact_signed_rank(d)
        two_exact.append(min(1.0, 2 * min(le, ge)))
    conds = [f"a vs b · redcnn · {d}" for d in DOSES]
    assert (got.loc[conds, "n"] == 12).all()
    np.testing.assert_allclose(got.loc[conds, "p"], tost, rtol=1e-12, atol=0)
    np.testing.assert_allclose(got.loc[conds, "p"], tost_exact, rtol=1e-9, atol=0)
    np.testing.assert_allclose(got.loc[conds, "p_reverse"], two_sided, rtol=1e-12, atol=0)
    np.testing.assert_allclose(got.loc[conds, "p_reverse"], two_exact, rtol=1e-9, atol=0)
    np.testing.assert_allclose(got.loc[conds, "p_holm"], multipletests(tost, method="holm")[1], rtol=1e-12)
    np.testing.assert_allclose(got.loc[conds, "p_holm_reverse"], multipletests(two_sided, method="holm")[1],
                               rtol=1e-12)  # fmt: skip
    np.testing.assert_allclose(got.loc[conds, "estimate"], medians, rtol=1e-12)


def test_equivalent_summary_and_description():
    claim = _equivalent()
    df = _evaluate([claim], _traj({"a": 1.0, "b": 1.0, "c": 3.0}, patients=30, noise_sd=0.2))
    s = summarise_claims(df).iloc[0]
    assert s["verdict"] == "does not hold"
    assert s["p_holm"] == df.loc[df["result"] == "reversed", "p_holm_reverse"].min()
    assert "TOST" in s["test"] and "±0.5" in s["test"]
    assert describe(claim).startswith("a, b and c do not differ on psnr by more than ±0.5")
    assert len(df) == 3 * len(DOSES)  # every pair × dose


# ------------------------------------------------------------------------------------------ summary


def test_summary_one_row_per_claim_with_the_deciding_p():
    traj = _traj({"a": 2.0, "b": 0.0})
    claims = [BetterClaim(id="yes", kind="better", a="a", b="b", metric="psnr"),
              BetterClaim(id="no", kind="better", a="b", b="a", metric="psnr", statement="b wins")]  # fmt: skip
    df = _evaluate(claims, traj)
    s = summarise_claims(df).set_index("id")
    assert list(s.index) == ["yes", "no"] and s.loc["no", "statement"] == "b wins"
    assert s.loc["yes", "p_holm"] == df.loc[df["id"] == "yes", "p_holm"].max()
    assert s.loc["no", "p_holm"] == df.loc[df["id"] == "no", "p_holm_reverse"].min()
    assert "a is better than b on psnr" in describe(claims[0])


# ------------------------------------------------------------------------------------------ schema

BASE = {"losses": ["mse", "l1"], "architectures": ["dncnn"], "doses": ["25_360"],
        "evaluation": {"metrics": ["psnr", "nps_favg", "nps_noise_hu", "rmse_hu"]}}  # fmt: skip


def test_schema_accepts_every_kind():
    m = parse_matrix({**BASE, "claims": [
        {"id": "b", "kind": "better", "a": "mse", "b": "l1", "metric": "psnr"},
        {"id": "g", "kind": "agrees", "metric": "psnr", "method": "spearman", "expect": "weak"},
        {"id": "t", "kind": "closer_texture", "a": "mse", "b": "l1", "doses": ["25_360"]},
        {"id": "e", "kind": "equivalent", "losses": ["mse", "l1"], "metric": "psnr", "margin": 0.5},
    ]})  # fmt: skip
    assert [c.kind for c in m.claims] == ["better", "agrees", "closer_texture", "equivalent"]
    assert parse_matrix(m.model_dump(mode="json")).claims == m.claims  # the resolved matrix reads back


@pytest.mark.parametrize(
    ("claim", "message"),
    [({"id": "x", "kind": "better", "a": "mse", "b": "l1", "metric": "psnr", "alhpa": 0.1}, "unknown key"),
     ({"id": "x", "kind": "better", "a": "mse", "b": "l2", "metric": "psnr"},
      "claims[0].b: 'l2' is not a loss label of the matrix (valid: mse, l1)"),
     ({"id": "x", "kind": "better", "a": "mse", "b": "l1", "metric": "ssim"}, "claims[0].metric: 'ssim'"),
     ({"id": "x", "kind": "better", "a": "mse", "b": "l1", "metric": "psnr", "doses": ["5_90"]},
      "claims[0].doses: '5_90' is not a dose of the matrix (valid: 25_360)"),
     ({"id": "x", "kind": "closer_texture", "a": "mse", "b": "l1", "architectures": ["redcnn"]},
      "claims[0].architectures: 'redcnn' is not a architecture label"),
     ({"id": "x", "kind": "ranks_first", "a": "mse", "metric": "psnr", "losses": ["mse", "l1"]}, "at least 3"),
     ({"id": "x", "kind": "worse", "a": "mse"}, "does not match any of the expected tags"),
     ({"id": "x", "kind": "better", "a": "mse", "b": "mse", "metric": "psnr"}, "the same loss"),
     ({"id": "x", "kind": "equivalent", "losses": ["mse", "l1"], "metric": "psnr"},
      "claims.0.equivalent.margin: Field required"),
     ({"id": "x", "kind": "equivalent", "losses": ["mse", "l1"], "metric": "psnr", "margin": 0},
      "claims.0.equivalent.margin: Input should be greater than 0"),
     ({"id": "x", "kind": "equivalent", "losses": ["mse", "mse"], "metric": "psnr", "margin": 0.5},
      "at least 2 distinct losses"),
     ({"id": "x", "kind": "equivalent", "losses": ["mse", "l2"], "metric": "psnr", "margin": 0.5},
      "claims[0].losses: 'l2' is not a loss label of the matrix"),
     ({"id": "x", "kind": "equivalent", "losses": ["mse", "l1"], "metric": "ssim", "margin": 0.005},
      "claims[0].metric: 'ssim' is not a metric in evaluation.metrics")],
)  # fmt: skip
def test_schema_rejects_bad_claims_naming_the_field(claim, message):
    with pytest.raises(UserError) as exc:
        parse_matrix({**BASE, "claims": [claim]})
    assert message in str(exc.value)


def test_rm_corr_agreement_needs_three_cells_per_loss():
    """One architecture x one dose x one seed gives rm_corr one subject per loss: the claim could only ever
    be "no data", so the matrix is refused up front, naming the field, the count and the way out."""
    claim = {"id": "g", "kind": "agrees", "metric": "psnr"}  # method: rm_corr by default
    with pytest.raises(UserError) as exc:
        parse_matrix({**BASE, "seeds": [0, 1], "claims": [claim]})
    assert ("claims[0].method: rm_corr pools the cells of each loss and needs >= 3; this claim covers 2 per loss "
            "(1 architecture(s) x 1 dose(s) x 2 seed(s)): use method: spearman") in str(exc.value)
    assert parse_matrix({**BASE, "seeds": [0, 1, 2], "claims": [claim]}).claims[0].method == "rm_corr"
    assert parse_matrix({**BASE, "claims": [{**claim, "method": "spearman"}]}).claims[0].method == "spearman"
    two_doses = {**BASE, "doses": ["25_360", "10_180"], "seeds": [0, 1]}
    assert parse_matrix({**two_doses, "claims": [claim]}).claims  # 2 doses x 2 seeds = 4 cells
    with pytest.raises(UserError, match=r"claims\[0\]\.method: rm_corr .* covers 2 per loss"):
        parse_matrix({**two_doses, "claims": [{**claim, "doses": ["10_180"]}]})  # the claim's own doses count


def test_validate_rejects_a_better_claim_on_an_unranked_metric():
    from benchmark.validate import check_matrix

    m = parse_matrix({**BASE, "claims": [{"id": "x", "kind": "better", "a": "mse", "b": "l1", "metric": "nps_favg"}]})
    with pytest.raises(UserError, match=r"claims\[0\]\.metric: 'nps_favg' has no better direction"):
        check_matrix(m, instantiate=False)


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_report_writes_claims_csv_and_section(tmp_path, tmp_cache, monkeypatch):
    from test_trajectories import make_run  # a finished run folder written as the runner does

    from analysis.pipeline import StatsOptions
    from analysis.report import write_report
    from benchmark.layout import CLAIMS_CSV, REPORT

    layout = make_run(tmp_path / "run", monkeypatch, losses=("mse", "l1"), epochs=3, metrics=("psnr", "rmse_hu"))
    data = layout.matrix().model_dump(mode="json")
    data["claims"] = [{"id": "mse_psnr", "kind": "better", "a": "mse", "b": "l1", "metric": "psnr"},
                      {"id": "agree", "kind": "agrees", "metric": "rmse_hu", "method": "spearman",
                       "statement": "loss tracks RMSE"}]  # fmt: skip
    layout.write_matrix(parse_matrix(data))
    path = write_report(layout.out, stats=StatsOptions(n_resamples=50))
    csv = pd.read_csv(layout.analysis_file(CLAIMS_CSV))
    assert list(csv.columns) == CLAIM_COLUMNS and list(dict.fromkeys(csv["id"])) == ["mse_psnr", "agree"]
    assert set(csv["verdict"]) <= {"holds", "does not hold", "inconclusive", "not tested"}
    # three epochs of a tiny run: the agreement claim cannot pass the gate (>= 10 scored epochs)
    agree = csv[csv["id"] == "agree"]
    assert set(agree["verdict"]) == {"not tested"} and agree["gate"].str.contains("3 scored epochs of rmse_hu").all()

    report = path.read_text()
    assert path == layout.analysis_file(REPORT) and "## Claims" in report and "loss tracks RMSE" in report
    for v in csv.drop_duplicates("id")["verdict"]:
        assert f"**{v}**" in report
    assert "**Learning gate**" in report and re.search(r"\| learning gate +\|", report)
    assert re.search(r"\| one seed +\|", report)


def test_report_tables_escape_pipes_inside_cells():
    """A claim's numbers contain ``|Δ to ref|``: in the Markdown table every row keeps the header's columns."""
    from analysis.report import _md_table

    df = pd.DataFrame({"claim": ["t"], "numbers": ["mean |Δ to ref| 0.004 vs 0.006"], "test": ["|b − ref| − |a − ref|"]})
    lines = _md_table(df).splitlines()
    unescaped = [len(re.findall(r"(?<!\\)\|", line)) for line in lines]
    assert len(set(unescaped)) == 1 and unescaped[0] == 4, lines
    assert "\\|Δ to ref\\|" in lines[-1]


# ------------------------------------------------------------------------------------------ the learning gate


def _rmse_inputs(traj: pd.DataFrame, value: float) -> pd.DataFrame:
    """An LDCT-input baseline of ``rmse_hu`` = ``value`` HU on every image and dose of ``traj``."""
    images = traj.loc[traj["source"] == "metric", ["dose", "patient", "image"]].drop_duplicates()
    return images.assign(metric="rmse_hu", value=value)[BASELINE_COLUMNS].reset_index(drop=True)


def test_a_claim_with_an_arm_that_did_not_learn_is_not_tested_whatever_its_p():
    """The arms end near 20 HU (b) and 18 HU (a, 2 HU better): against an input at 40 HU both learned
    (0.5×) and the planted effect holds; against an input at 23.5 HU b is at 0.85× (> 0.8×, a at 0.77×)
    and the same data, p-values unchanged, decide nothing. The gate names the failing arm, the condition
    and its ratio."""
    claim = BetterClaim(id="c", kind="better", a="a", b="b", metric="psnr")
    traj = _traj({"a": 2.0, "b": 0.0})
    learned = evaluate_claims([claim], traj, inputs=_rmse_inputs(traj, 40.0))
    stuck = evaluate_claims([claim], traj, inputs=_rmse_inputs(traj, 23.5))
    assert set(learned["verdict"]) == {"holds"} and learned["gate"].str.startswith("passed").all()
    assert set(stuck["verdict"]) == {"not tested"} and set(stuck["result"]) == {"not tested"}
    np.testing.assert_array_equal(stuck["p_holm"], learned["p_holm"])  # the tests still ran
    b_mean = traj[(traj["loss"] == "b") & (traj["metric"] == "rmse_hu") & (traj["epoch"] == 5)]
    for dose, row in zip(DOSES, stuck.itertuples()):
        ratio = b_mean.loc[b_mean["dose"] == dose, "value"].mean() / 23.5
        assert ratio > 0.8 and f"b · redcnn · {dose}: rmse_hu" in row.gate and f"{ratio:.2f}×" in row.gate
        assert "a · redcnn" not in row.gate  # only the failing arm is named
    # no input baseline: learning cannot be confirmed, so nothing is decided either
    assert set(evaluate_claims([claim], traj)["verdict"]) == {"not tested"}
    assert set(evaluate_claims([claim], traj, gate=GateConfig(enabled=False))["verdict"]) == {"holds"}


def test_texture_claims_also_gate_the_residual_noise():
    claim = CloserTextureClaim(id="t", kind="closer_texture", a="a", b="b", features=["nps_favg"])
    traj, inputs = _texture_data({"a": 0.0, "b": 3.0})  # nps_noise_hu of a, b and the input ≈ 8 HU
    base = pd.concat([inputs, _rmse_inputs(traj, 1000.0)], ignore_index=True)  # every arm passes on RMSE
    traj = pd.concat([traj, traj[traj["metric"] == "nps_favg"].assign(metric="rmse_hu", value=1.0)], ignore_index=True)
    got = evaluate_claims([claim], traj, inputs=base)
    assert set(got["verdict"]) == {"not tested"}
    assert got["gate"].str.contains(r"a · redcnn · d\d: nps_noise_hu .* the LDCT input's .* \(gate ≤ 0.8×\)").all()
    quiet = base.assign(value=np.where(base["metric"] == "nps_noise_hu", base["value"] * 2.0, base["value"]))
    assert set(evaluate_claims([claim], traj, inputs=quiet)["verdict"]) == {"holds"}  # each arm at ~0.5×


def test_plateau_fraction_closed_form():
    from analysis.claims import plateau_fraction

    # 9 epochs, the last third (3 epochs): |L9 − L6| / (max − min)
    v = np.exp(-np.arange(1, 10) / 2)
    assert plateau_fraction(v) == pytest.approx(abs(v[8] - v[5]) / (v[0] - v[8]), rel=1e-12)
    assert plateau_fraction(np.linspace(1, 0, 12)) == pytest.approx(4 / 11)  # a straight line never flattens
    assert plateau_fraction(np.ones(5)) == 0.0 and np.isnan(plateau_fraction([1.0, 0.5]))


def test_agreement_gate_needs_epochs_and_a_flattened_loss():
    """The simulated loss is e^{−epoch/2} (+ noise 0.01): after 6 epochs it still moves
    (e^{−2} − e^{−3}) / (e^{−1/2} − e^{−3}) = 0.15 of its range over the last third (not flat, and < 10
    epochs); after 16, ~0.01 (flat). The arms learned (input 40 HU)."""
    claim = AgreesClaim(id="g", kind="agrees", metric="psnr", losses=["a"], method="spearman", expect="agree",
                        threshold=0.0)  # fmt: skip
    short = _traj({"a": 4.0}, epochs=6)
    got = evaluate_claims([claim], short, inputs=_rmse_inputs(short, 40.0), n_resamples=50)
    assert set(got["verdict"]) == {"not tested"}
    assert got["gate"].str.contains("6 scored epochs of psnr \\(gate ≥ 10\\)").all()
    assert got["gate"].str.contains("train_loss moved 0.1\\d × its range over the last third of its 6 epochs").all()
    long = _traj({"a": 4.0}, epochs=16)
    got = evaluate_claims([claim], long, inputs=_rmse_inputs(long, 40.0), n_resamples=50)
    assert got["gate"].str.startswith("passed").all() and "not tested" not in set(got["verdict"])


def test_several_seeds_say_whether_each_seed_alone_gives_the_verdict():
    claim = BetterClaim(id="c", kind="better", a="a", b="b", metric="psnr")
    strong = _traj({"a": 3.0, "b": 0.0}, seeds=(0, 1, 2), patients=12)
    got = evaluate_claims([claim], strong, inputs=_rmse_inputs(strong, 40.0))
    assert set(got["verdict"]) == {"holds"} and set(got["stability"]) == {"stable"}
    assert set(got["seed_verdicts"]) == {"seed 0: holds; seed 1: holds; seed 2: holds"}
    # the seeds' own verdicts come from the seed's cells alone: seed 2's arm b cannot learn
    worse = strong.copy()
    stuck = (worse["seed"] == 2) & (worse["loss"] == "b") & (worse["metric"] == "rmse_hu")
    worse.loc[stuck, "value"] = 39.0
    got = evaluate_claims([claim], worse, inputs=_rmse_inputs(worse, 40.0))
    assert set(got["verdict"]) == {"holds"} and set(got["stability"]) == {"seed-dependent"}
    assert set(got["seed_verdicts"]) == {"seed 0: holds; seed 1: holds; seed 2: not tested"}
    one = evaluate_claims([claim], _traj({"a": 3.0, "b": 0.0}), inputs=_rmse_inputs(strong, 40.0))
    assert set(one["stability"]) == {"one seed"} and summarise_claims(one)["stability"].iloc[0] == "one seed"


@pytest.mark.parametrize(("arm_hu", "passes"), [(16.0, True), (16.04, False)])
def test_rmse_gate_at_its_threshold(arm_hu, passes):
    """0.8 × 20 HU = 16 HU: an arm exactly at the limit passes (≤), 0.2 % above it fails."""
    from analysis.claims import GATE_FAILED, GATE_PASSED

    claim = BetterClaim(id="c", kind="better", a="a", b="b", metric="psnr")
    traj = _traj({"a": 2.0, "b": 0.0})
    traj.loc[traj["metric"] == "rmse_hu", "value"] = arm_hu
    got = evaluate_claims([claim], traj, inputs=_rmse_inputs(traj, 20.0))
    assert got["gate"].str.startswith(GATE_PASSED if passes else GATE_FAILED).all()
    assert set(got["verdict"]) == ({"holds"} if passes else {"not tested"})
