"""Loss–metric correlations: Spearman vs scipy (with ties), rm-corr vs pingouin and its definition, and the
sign convention of ``agreement``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import stats

from analysis.correlations import correlations, paired_trajectories, rm_corr, spearman, spearman_rho
from analysis.simulate import simulate_trajectories

DIRS = {"psnr": True, "ssim": True, "niqe": False}


def test_spearman_with_ties_matches_scipy(rng):
    x = np.round(rng.normal(size=(50, 9)), 0)  # heavy ties
    y = np.round(x + rng.normal(size=(50, 9)), 0)
    ref = np.array([stats.spearmanr(a, b).statistic for a, b in zip(x, y)])
    np.testing.assert_allclose(spearman_rho(x, y, axis=-1), ref, rtol=1e-12)
    rho, p = spearman(x[0], y[0])
    assert (rho, p) == pytest.approx(tuple(stats.spearmanr(x[0], y[0])))
    assert np.isnan(spearman(np.ones(5), y[0, :5])[0])  # constant: undefined, not an error
    assert np.isnan(spearman(x[0, :2], y[0, :2])[0])


def test_within_cell_rows_use_the_per_epoch_image_means():
    traj = simulate_trajectories(losses=("a", "b"), epochs=7, rng=1)
    out = correlations(traj, directions=DIRS, n_resamples=200)
    cell = out[out["scope"] == "cell"]
    assert len(cell) == 2 * 3 * 2  # cells x metrics x {train, val}
    sel = traj[(traj["cell"] == "b__redcnn__25_360__s0")]
    means = sel[sel["metric"] == "niqe"].groupby("epoch")["value"].mean()
    loss = sel[sel["metric"] == "val_loss"].set_index("epoch")["value"]
    row = cell[(cell["cell"] == "b__redcnn__25_360__s0") & (cell["metric"] == "niqe") & (cell["against"] == "val_loss")]
    ref = stats.spearmanr(loss.loc[means.index], means)
    assert row["rho"].item() == pytest.approx(ref.statistic)
    assert row["p_value"].item() == pytest.approx(ref.pvalue)
    assert row["n"].item() == 7
    assert row["ci_low"].item() <= row["rho"].item() <= row["ci_high"].item()


def test_agreement_sign_follows_metric_metadata():
    """In the simulation every metric improves as the loss falls: PSNR rises (ρ < 0), NIQE falls (ρ > 0);
    the agreement is positive for both. Directions come from ``analysis.metrics.METRICS``."""
    traj = simulate_trajectories(losses=("b",), effects={"b": 3.0}, noise_sd=0.05, patient_sd=0.1, epochs=8, rng=2)
    out = correlations(traj, n_resamples=100).set_index(["scope", "metric", "against"])
    psnr, niqe = out.loc[("cell", "psnr", "train_loss")], out.loc[("cell", "niqe", "train_loss")]
    assert psnr["rho"] < -0.8 and niqe["rho"] > 0.8
    assert psnr["agreement"] == pytest.approx(-psnr["rho"]) and niqe["agreement"] == pytest.approx(niqe["rho"])
    assert psnr["agreement_ci_low"] == pytest.approx(-psnr["ci_high"])
    # a metric that worsens while the loss falls has negative agreement
    flipped = traj.copy()
    m = flipped["metric"] == "psnr"
    flipped.loc[m, "value"] = 60 - flipped.loc[m, "value"]
    out2 = correlations(flipped, n_resamples=0).set_index(["scope", "metric", "against"])
    assert out2.loc[("cell", "psnr", "train_loss"), "agreement"] < -0.8


def test_pooled_rm_corr_matches_pingouin_and_its_definition():
    traj = simulate_trajectories(losses=("a", "b"), architectures=("redcnn", "dncnn"), doses=("25_360", "10_180"),
                                 epochs=5, noise_sd=1.0, rng=3)  # fmt: skip
    out = correlations(traj, directions=DIRS, n_resamples=0)
    row = out[(out["scope"] == "pooled") & (out["loss"] == "b") & (out["metric"] == "psnr")
              & (out["against"] == "train_loss")].iloc[0]  # fmt: skip
    paired = paired_trajectories(traj)
    data = paired[(paired["loss"] == "b") & (paired["metric"] == "psnr")].assign(cell=lambda d: d["cell"].astype(str))
    ref = pg.rm_corr(data=data, x="train_loss", y="value", subject="cell")
    assert row["rho"] == pytest.approx(ref["r"].item()) and row["p_value"] == pytest.approx(ref["pval"].item())
    assert row["n"] == 4 * 5
    # definition (Bakdash & Marusich 2017): Pearson r of subject-centred values, dof = N - k - 1
    xc = data["train_loss"] - data.groupby("cell")["train_loss"].transform("mean")
    yc = data["value"] - data.groupby("cell")["value"].transform("mean")
    r = float((xc * yc).sum() / np.sqrt((xc**2).sum() * (yc**2).sum()))
    dof = len(data) - 4 - 1
    p = 2 * stats.t.sf(abs(r) * np.sqrt(dof / (1 - r**2)), dof)
    assert row["rho"] == pytest.approx(r) and row["p_value"] == pytest.approx(p)
    assert row["agreement"] == pytest.approx(-r)  # PSNR is higher-is-better
    assert np.isnan(rm_corr(data[data["cell"].isin(data["cell"].unique()[:2])], "train_loss", "value", "cell")[0])


def test_final_epoch_across_cells():
    traj = simulate_trajectories(losses=("a", "b"), architectures=("x1", "x2", "x3"), seeds=(0, 1), epochs=3, rng=4)
    out = correlations(traj, directions=DIRS, n_resamples=0)
    fin = out[out["scope"] == "final"]
    assert set(fin["n"]) == {6}  # 3 architectures x 2 seeds per loss and dose
    last = traj[traj["epoch"] == 3]
    a = last[last["loss"] == "a"]
    metric = a[a["metric"] == "ssim"].groupby("cell")["value"].mean()
    loss = a[a["metric"] == "train_loss"].set_index("cell")["value"].loc[metric.index]
    row = fin[(fin["loss"] == "a") & (fin["metric"] == "ssim") & (fin["against"] == "train_loss")]
    assert row["rho"].item() == pytest.approx(stats.spearmanr(loss, metric).statistic)
    assert list(out.columns[:7]) == ["scope", "cell", "loss", "architecture", "dose", "seed", "metric"]
    assert isinstance(out, pd.DataFrame) and out["against"].isin(["train_loss", "val_loss"]).all()
