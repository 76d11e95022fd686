"""Paired tests, corrections, effect sizes and Friedman/Nemenyi against scipy, statsmodels, pingouin and
Demšar's published table; a planted effect is found and a null effect is not (known ground truth)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.significance import (
    bootstrap_ci,
    cohens_dz,
    compare_pair,
    demsar_critical_difference,
    friedman_nemenyi,
    holm,
    pairwise_tests,
    rank_biserial,
    unit_table,
)
from analysis.simulate import simulate_trajectories
from benchmark.core.errors import UserError

DIRS = {"psnr": True, "ssim": True, "niqe": False}


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment written from its definition (Holm 1979)."""
    m = len(p)
    order = np.argsort(p)
    adj = np.empty(m)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        adj[j] = running
    return adj


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg step-up adjustment written from its definition (1995)."""
    m = len(p)
    order = np.argsort(p)[::-1]
    adj = np.empty(m)
    running = 1.0
    for i, j in enumerate(order):
        running = min(running, p[j] * m / (m - i))
        adj[j] = running
    return adj


def test_compare_pair_matches_scipy_and_pingouin(rng):
    a = rng.normal(30, 1, 15)
    b = a - rng.normal(0.4, 0.5, 15)
    b[3] = a[3]  # a zero difference: dropped by scipy's default zero_method
    b[5] = a[5] - (a[6] - b[6])  # a tie in |d|
    wil, tt = compare_pair(a, b, n_resamples=500)
    ref_w = stats.wilcoxon(a - b)
    assert wil["statistic"] == pytest.approx(ref_w.statistic)
    assert wil["p_value"] == pytest.approx(ref_w.pvalue)
    ref_t = stats.ttest_rel(a, b)
    assert tt["statistic"] == pytest.approx(ref_t.statistic)
    assert tt["p_value"] == pytest.approx(ref_t.pvalue)
    assert tt["effect_size"] == pytest.approx(float(pg.ttest(a - b, 0)["cohen_d"].iloc[0]), rel=1e-9)
    assert wil["effect_size"] == pytest.approx(float(pg.wilcoxon(a - b)["RBC"].iloc[0]), rel=1e-9)
    assert wil["ci_low"] <= wil["effect_size"] <= wil["ci_high"]
    assert tt["ci_low"] <= tt["effect_size"] <= tt["ci_high"]
    assert wil["n"] == tt["n"] == 15


def test_rank_biserial_from_signed_rank_sums(rng):
    d = np.round(rng.normal(0.2, 1, 40), 1)  # rounding makes ties and zeros
    assert (d == 0).any()
    nz = d[d != 0]
    t_plus = stats.wilcoxon(nz, alternative="greater").statistic  # T+ with average ranks
    total = len(nz) * (len(nz) + 1) / 2
    assert rank_biserial(d) == pytest.approx((t_plus - (total - t_plus)) / total)
    batch = np.stack([d, -d, np.abs(d) + 0.1])
    np.testing.assert_allclose(rank_biserial(batch, axis=-1), [rank_biserial(d), -rank_biserial(d), 1.0])
    assert np.isnan(rank_biserial(np.zeros(5)))
    np.testing.assert_allclose(cohens_dz(batch, axis=-1)[:2], [d.mean() / d.std(ddof=1), -d.mean() / d.std(ddof=1)])


def test_bootstrap_ci_covers_and_drops_undefined(rng):
    x = rng.normal(1.0, 1.0, 200)
    lo, hi = bootstrap_ci(lambda v, axis: v.mean(axis=axis), [x], n_resamples=2000, rng=1)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert lo == pytest.approx(x.mean() - 1.96 * se, abs=0.3 * se)
    assert hi == pytest.approx(x.mean() + 1.96 * se, abs=0.3 * se)
    assert np.isnan(bootstrap_ci(lambda v, axis: v.mean(axis=axis), [x[:2]])[0])


@pytest.mark.parametrize(("k", "q"), [(2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728), (6, 2.850), (10, 3.164)])
def test_demsar_critical_difference_table(k, q):
    n = 14  # Demšar 2006, Table 5: q_0.05; CD = q sqrt(k(k+1)/(6N))
    assert demsar_critical_difference(k, n) == pytest.approx(q * np.sqrt(k * (k + 1) / (6 * n)), rel=2e-3)


def test_holm_equals_statsmodels_and_the_hand_formula():
    """analysis.significance.holm (pingouin) against the step-down formula max_{j<=i} min(1, (m - j + 1)·p_(j))
    on 300 seeded families of 1-40 p-values, a third with ties, and against statsmodels' multipletests on
    every 50th (each of its calls runs gc.collect()): equal to 1e-15, in the input order."""
    rng = np.random.default_rng(7)
    for k in range(300):
        n = int(rng.integers(1, 41))
        p = rng.uniform(0, 1, n) ** rng.uniform(0.5, 4)
        if k % 3 == 0:
            p[rng.integers(0, n, n // 2)] = p[0]
        got = holm(p)
        np.testing.assert_allclose(got, _holm(p), rtol=0, atol=1e-15)
        if k % 50 == 0:
            np.testing.assert_allclose(got, multipletests(p, method="holm")[1], rtol=0, atol=1e-15)


def test_pairwise_family_corrections_and_patient_unit():
    traj = simulate_trajectories(losses=("a", "b", "c", "d"), architectures=("redcnn", "dncnn"), epochs=2, rng=3,
                                 metrics={"psnr": (30.0, 1.0, True), "niqe": (6.0, 0.3, False)})  # fmt: skip
    out = pairwise_tests(traj, directions=DIRS, n_resamples=0)
    assert set(out["unit"]) == {"patient"} and set(out["n"]) == {6}
    fam = out[(out["metric"] == "psnr") & (out["test"] == "wilcoxon")]
    assert len(fam) == 2 * 6  # 2 architectures x 6 pairs form one family
    np.testing.assert_allclose(fam["p_holm"], _holm(fam["p_value"].to_numpy()))
    np.testing.assert_allclose(fam["p_bh"], _bh(fam["p_value"].to_numpy()))
    np.testing.assert_allclose(fam["p_holm"], multipletests(fam["p_value"], method="holm")[1])
    cond = pairwise_tests(traj, directions=DIRS, n_resamples=0, family="condition")
    sub = cond[(cond["metric"] == "psnr") & (cond["test"] == "t") & (cond["architecture"] == "dncnn")]
    np.testing.assert_allclose(sub["p_holm"], _holm(sub["p_value"].to_numpy()))
    # the patient unit is the mean over the patient's slices at the final epoch
    final = traj[(traj["epoch"] == 2) & (traj["metric"] == "psnr") & (traj["architecture"] == "redcnn")]
    per_patient = final.groupby(["loss", "patient"])["value"].mean().unstack(0)
    row = out[(out["metric"] == "psnr") & (out["architecture"] == "redcnn") & (out["loss_a"] == "a")
              & (out["loss_b"] == "c") & (out["test"] == "t")].iloc[0]  # fmt: skip
    assert row["statistic"] == pytest.approx(stats.ttest_rel(per_patient["a"], per_patient["c"]).statistic)
    assert row["better"] == "c"  # c has the larger planted effect and PSNR is higher-is-better
    niqe = out[(out["metric"] == "niqe") & (out["loss_a"] == "a") & (out["loss_b"] == "c")].iloc[0]
    assert niqe["better"] == "c" and niqe["mean_a"] > niqe["mean_b"]  # lower NIQE is better


def test_slice_unit_and_seed_averaging():
    traj = simulate_trajectories(losses=("a", "b"), seeds=(0, 1), epochs=1, rng=4)
    wide = unit_table(traj[(traj["metric"] == "psnr") & (traj["source"] == "metric")], "slice")
    assert wide.shape == (18, 2)
    manual = traj[(traj["metric"] == "psnr") & (traj["loss"] == "a")].groupby("image")["value"].mean()
    np.testing.assert_allclose(wide["a"].sort_index(), manual.sort_index())
    out = pairwise_tests(traj, directions=DIRS, unit="slice", n_resamples=0)
    assert set(out["n"]) == {18} and set(out["unit"]) == {"slice"}
    with pytest.raises(UserError, match="allowed units"):
        pairwise_tests(traj, directions=DIRS, unit="image")  # type: ignore[arg-type]


def test_best_validation_epoch_is_labelled():
    traj = simulate_trajectories(losses=("a", "b"), epochs=4, rng=5)
    hist = traj["metric"] == "val_loss"
    traj.loc[hist & (traj["epoch"] == 2), "value"] = -1.0  # epoch 2 has the best validation loss
    out = pairwise_tests(traj, directions=DIRS, epoch="best_val", n_resamples=0)
    assert set(out["epoch_choice"]) == {"best_val"}
    ep2 = traj[(traj["epoch"] == 2) & (traj["metric"] == "psnr")].groupby(["loss", "patient"])["value"].mean().unstack(0)
    row = out[(out["metric"] == "psnr") & (out["test"] == "t")].iloc[0]
    assert row["statistic"] == pytest.approx(stats.ttest_rel(ep2["a"], ep2["b"]).statistic)


def test_friedman_nemenyi_against_scipy_and_ranks():
    traj = simulate_trajectories(losses=("a", "b", "c"), patients=10, epochs=1, rng=6)
    tests, ranks = friedman_nemenyi(traj, directions=DIRS)
    wide = traj[(traj["metric"] == "niqe")].groupby(["loss", "patient"])["value"].mean().unstack(0)
    fr = tests[(tests["metric"] == "niqe") & (tests["test"] == "friedman")].iloc[0]
    ref = stats.friedmanchisquare(wide["a"], wide["b"], wide["c"])
    assert fr["statistic"] == pytest.approx(ref.statistic) and fr["p_value"] == pytest.approx(ref.pvalue)
    assert fr["effect_size"] == pytest.approx(ref.statistic / (10 * 2))
    r = ranks[ranks["metric"] == "niqe"].set_index("loss")["mean_rank"]
    np.testing.assert_allclose(r.to_numpy(), wide.rank(axis=1).mean().loc[["a", "b", "c"]].to_numpy())
    assert r["c"] < r["a"]  # c has the largest planted improvement: rank 1 is best
    rp = ranks[ranks["metric"] == "psnr"].set_index("loss")["mean_rank"]
    assert rp["c"] < rp["a"]  # oriented for higher-is-better too
    assert r.sum() == pytest.approx(6.0)


def _rejections(effect: float, n_sets: int, seed: int) -> pd.Series:
    hits = []
    for i in range(n_sets):
        traj = simulate_trajectories(losses=("a", "b"), effects={"a": 0.0, "b": effect}, patients=12,
                                     slices_per_patient=4, epochs=1, metrics={"psnr": (30.0, 1.0, True)},
                                     patient_sd=1.0, noise_sd=1.0, rng=seed + i)  # fmt: skip
        wide = unit_table(traj[traj["source"] == "metric"], "patient")  # the unit the tests use
        out = pd.DataFrame(compare_pair(wide["a"].to_numpy(), wide["b"].to_numpy(), n_resamples=0))
        hits.append(out.set_index("test")["p_value"] < 0.05)
    return pd.DataFrame(hits).mean()


@pytest.mark.slow
def test_planted_effect_is_found_and_null_is_not():
    """Per-patient differences: sd ≈ sqrt(2/4) ≈ 0.71, a planted 0.8 dB gives d_z ≈ 1.1 with 12 patients
    (power of the t-test ≈ 0.95); the null gives the nominal 5 % false-positive rate."""
    power = _rejections(0.8 / (1 - np.exp(-0.5)), 50, seed=100)
    assert power["t"] >= 0.8 and power["wilcoxon"] >= 0.75
    fpr = _rejections(0.0, 200, seed=1000)
    assert fpr["t"] <= 0.09 and fpr["wilcoxon"] <= 0.09  # binomial(200, 0.05): P(> 18) < 0.5 %
    assert fpr["t"] > 0.0  # the test is not degenerate (always "not significant")
