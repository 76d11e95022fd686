"""Tables and figures from simulated trajectories of known structure: numbers, bold-best direction from
the metric metadata, significance markers, Markdown/LaTeX rendering, the LDCT-input reference row and
line, and every figure file written."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from analysis.correlations import correlations
from analysis.figures import (
    build_figures,
    comparison_figure,
    pick_pd_metrics,
    training_loss_figure,
    trajectory_figure,
    zoom_region,
)
from analysis.schema import BASELINE_COLUMNS, INPUT_LABEL
from analysis.significance import significance
from analysis.simulate import simulate_trajectories
from analysis.tables import (
    NO_ARCHITECTURE,
    Orders,
    build_tables,
    decimals_for,
    latex_escape,
    seed_stats,
    summary_stats,
    write_tables,
)
from benchmark.core.errors import UserError

# one xdist worker runs this module: its module-scoped fixtures are built once (--dist loadgroup)
pytestmark = pytest.mark.xdist_group(__name__)

METRICS = {"psnr": (30.0, 1.0, True), "rmse_hu": (20.0, 2.0, False), "niqe": (6.0, 0.3, False)}


@pytest.fixture(scope="module")
def sim():
    traj = simulate_trajectories(losses=("mse", "l1", "0.9mse+0.1ssim_loss"), architectures=("redcnn", "dncnn"),
                                 doses=("25_360", "10_180"), patients=10, slices_per_patient=2, epochs=3,
                                 metrics=METRICS, effects={"mse": 0.0, "l1": 0.05, "0.9mse+0.1ssim_loss": 3.0},
                                 noise_sd=0.3, rng=11)  # fmt: skip
    sig, ranks = significance(traj, n_resamples=50)
    corr = correlations(traj, n_resamples=50)
    orders = Orders(["mse", "l1", "0.9mse+0.1ssim_loss"], ["redcnn", "dncnn"], ["25_360", "10_180"])
    return traj, sig, ranks, corr, orders


def input_baseline(traj: pd.DataFrame, offsets: dict[str, float], seed: int = 5) -> pd.DataFrame:
    """An LDCT-input baseline on the trajectories' images: each metric's image value at the first epoch of
    the first cell of the dose, shifted by ``offsets[metric]``, plus noise."""
    rng = np.random.default_rng(seed)
    met = traj[(traj["source"] == "metric") & (traj["epoch"] == 1)]
    first = met.groupby("dose")["cell"].transform("first")
    rows = met[met["cell"] == first][BASELINE_COLUMNS].reset_index(drop=True)
    rows["value"] = rows["value"] + rows["metric"].map(offsets) + rng.normal(0, 0.5, len(rows))
    return rows


def test_helpers():
    assert latex_escape("0.9mse+0.1ssim_loss 10% & #") == r"0.9mse+0.1ssim\_loss 10\% \& \#"
    assert latex_escape("a ± b ↑") == r"a $\pm$ b $\uparrow$"
    assert decimals_for([0.0123, 0.02]) == 3 and decimals_for([1.5]) == 1 and decimals_for([25.0]) == 0
    assert decimals_for([np.nan]) == 2


def test_metric_table_numbers_bold_and_markers(sim, tmp_path):
    traj, sig, _, corr, orders = sim
    tables = {t.name: t for t in build_tables(traj, sig, corr, orders=orders)}
    assert set(tables) == {"metric_psnr", "metric_rmse_hu", "metric_niqe", "rmse_hu_per_dose",
                           "correlation_spearman", "correlation_rmcorr"}  # fmt: skip
    # numbers: mean and sd over images at the final epoch, seeds averaged
    last = traj[(traj["epoch"] == 3) & (traj["source"] == "metric")]
    ref = last.groupby(["metric", "loss", "architecture", "dose", "image"])["value"].mean()
    ref = ref.groupby(["metric", "loss", "architecture", "dose"]).agg(["mean", "std"])
    got = summary_stats(traj).set_index(["metric", "loss", "architecture", "dose"])
    np.testing.assert_allclose(got.loc[ref.index, "mean"], ref["mean"])
    np.testing.assert_allclose(got.loc[ref.index, "sd"], ref["std"])
    # the planted best loss is bold for PSNR (max) and NIQE (min): directions from the metadata
    best = "0.9mse+0.1ssim_loss"
    for name in ("metric_psnr", "metric_niqe", "metric_rmse_hu"):
        t = tables[name]
        assert t.bold.loc[best].all() and not t.bold.drop(index=best).to_numpy().any()
    # markers: Holm-adjusted Wilcoxon p of each loss against the baseline (first loss)
    t = tables["metric_psnr"]
    s = sig[(sig["metric"] == "psnr") & (sig["test"] == "wilcoxon") & (sig["loss_a"] == "mse")]
    for r in s.itertuples():
        expected = "**" if r.p_holm < 0.01 else "*" if r.p_holm < 0.05 else ""
        assert t.marker.loc[r.loss_b, (r.architecture, r.dose)] == expected
    assert t.marker.loc[best].ne("").all()  # a large planted effect over 10 patients (exact min p 2/2^10, Holm x12)
    assert t.marker.loc["l1"].eq("").all()  # a negligible one
    assert "mse (baseline)" in t.text.index
    paths = write_tables(tables.values(), tmp_path)
    md = (tmp_path / "metric_psnr.md").read_text()
    assert "**" in md and r"\*\*" in md and "redcnn · 25_360" in md
    tex = (tmp_path / "metric_psnr.tex").read_text()
    assert r"\toprule" in tex and r"\textbf{" in tex and r"0.9mse+0.1ssim\_loss" in tex and "25\\_360" in tex
    assert all(ord(ch) < 128 for p in paths.values() for f in p if f.suffix == ".tex" for ch in f.read_text())
    csv = pd.read_csv(tmp_path / "metric_psnr.csv")
    assert {"mean", "sd", "n", "best", "p_holm_vs_baseline"} <= set(csv.columns) and csv["best"].sum() == 4


def test_ldct_input_row_is_last_never_bold_never_marked(sim, tmp_path):
    traj, sig, _, corr, orders = sim
    # the input is far worse in PSNR and NIQE but (planted) better than every loss in RMSE: still never bold
    inputs = input_baseline(traj, {"psnr": -8.0, "niqe": 3.0, "rmse_hu": -15.0})
    tables = {t.name: t for t in build_tables(traj, sig, corr, orders=orders, inputs=inputs)}
    plain = {t.name: t for t in build_tables(traj, sig, corr, orders=orders)}
    for name in ("metric_psnr", "metric_niqe", "metric_rmse_hu"):
        t, p = tables[name], plain[name]
        assert list(t.text.index) == [*p.text.index, INPUT_LABEL]
        pd.testing.assert_frame_equal(t.text.iloc[:-1], p.text)  # the loss rows are unchanged
        pd.testing.assert_frame_equal(t.bold.iloc[:-1], p.bold)
        assert not t.bold.loc[INPUT_LABEL].any() and t.bold.sum().eq(1).all()
        assert t.marker.loc[INPUT_LABEL].eq("").all()
        # mean ± sd over the images of the dose, computed here; the same value in every architecture column
        metric = name.removeprefix("metric_")
        dec = decimals_for(summary_stats(traj).query("metric == @metric")["sd"])
        for (arch, dose), text in t.text.loc[INPUT_LABEL].items():
            v = inputs.loc[(inputs["metric"] == metric) & (inputs["dose"] == dose), "value"].to_numpy()
            assert text == f"{v.mean():.{dec}f} ± {v.std(ddof=1):.{dec}f}", (name, arch, dose)
        assert t.text.loc[INPUT_LABEL, "redcnn"].tolist() == t.text.loc[INPUT_LABEL, "dncnn"].tolist()
    num = tables["metric_rmse_hu"].numbers
    by_dose = num.groupby(["dose", num["loss"] == INPUT_LABEL])["mean"].min().unstack()
    assert (by_dose[True] < by_dose[False]).all()  # the planted case: the input beats every loss in RMSE
    rmse = tables["rmse_hu_per_dose"]
    assert rmse.text.index[-1] == (INPUT_LABEL, NO_ARCHITECTURE) and len(rmse.text) == 7
    assert not rmse.bold.iloc[-1].any() and rmse.bold.sum().eq(1).all()
    assert all(rmse.bold[d].idxmax()[0] == "0.9mse+0.1ssim_loss" for d in rmse.bold.columns)
    write_tables(tables.values(), tmp_path)
    md = (tmp_path / "metric_rmse_hu.md").read_text()
    last = [line for line in md.splitlines() if line.startswith("|")][-1]  # the table's last row
    assert last.split("|")[1].strip() == INPUT_LABEL and "**" not in last and "not ranked" in md
    assert "LDCT input" in (tmp_path / "rmse_hu_per_dose.md").read_text()
    tex = (tmp_path / "rmse_hu_per_dose.tex").read_text()
    assert "LDCT input & ---" in tex and all(ord(ch) < 128 for ch in tex)
    # CSV: same columns, one LDCT-input row per dose, architecture "—", never best, no p-value
    for name in ("metric_psnr", "rmse_hu_per_dose"):
        csv = pd.read_csv(tmp_path / f"{name}.csv", dtype={"dose": str})
        assert list(csv.columns) == list(plain[name].numbers.columns)
        rows = csv[csv["loss"] == INPUT_LABEL]
        assert sorted(rows["dose"]) == ["10_180", "25_360"] and set(rows["architecture"]) == {NO_ARCHITECTURE}
        v = inputs[(inputs["metric"] == rows["metric"].iloc[0]) & (inputs["dose"] == "10_180")]["value"]
        np.testing.assert_allclose(rows.set_index("dose").loc["10_180", ["mean", "sd", "n"]].astype(float),
                                   [v.mean(), v.std(ddof=1), len(v)])  # fmt: skip
        if "best" in csv:
            assert not rows["best"].any() and rows["p_holm_vs_baseline"].isna().all() and csv["best"].sum() == 4


def test_trajectory_figure_draws_the_ldct_input_line(sim, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    traj, _, _, _, orders = sim
    inputs = input_baseline(traj, {"psnr": -8.0, "niqe": 3.0, "rmse_hu": 15.0})
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to inspect it
    trajectory_figure(traj, orders, tmp_path, "full_reference", inputs)
    axes = figures[0].axes
    assert len(axes) == 2 * 4  # psnr, rmse_hu × 2 architectures × 2 doses
    expected = inputs.groupby(["metric", "dose"])["value"].mean()
    for ax, (metric, dose) in zip(axes, [(m, d) for m in ("psnr", "rmse_hu") for a in orders.architectures
                                         for d in orders.doses]):  # fmt: skip
        lines = [ln for ln in ax.get_lines() if ln.get_label() == INPUT_LABEL]
        assert len(lines) == 1 and lines[0].get_linestyle() == "--"
        np.testing.assert_allclose(lines[0].get_ydata(), expected[(metric, dose)])
    labels = [t.get_text() for t in axes[len(orders.doses) * len(orders.architectures) - 1].get_legend().get_texts()]
    assert labels == [*orders.losses, f"{INPUT_LABEL} (mean)"]
    plt.close("all")


def test_training_loss_panels_are_log_unless_the_loss_takes_values_at_or_below_zero(sim, tmp_path, monkeypatch):
    """A signed loss (an adversarial arm's total, e.g. with a WGAN critic term) on a log axis would lose its
    non-positive points silently: its panel is linear and says so; the others stay log."""
    import matplotlib.pyplot as plt

    traj, _, _, _, orders = sim
    traj = traj.copy()
    hist = (traj["source"] == "history") & (traj["metric"].isin(["train_loss", "val_loss"]))
    assert hist.any() and (traj.loc[hist, "value"] > 0).all()
    signed = hist & (traj["loss"] == "l1") & (traj["epoch"] == 2) & (traj["metric"] == "val_loss")
    traj.loc[signed, "value"] = -traj.loc[signed, "value"]
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    training_loss_figure(traj, orders, tmp_path)
    scales = {ax.get_title().split("\n")[0]: ax.get_yscale() for ax in figures[0].axes if ax.get_visible()}
    assert scales == {"loss: mse": "log", "loss: l1": "linear", "loss: 0.9mse+0.1ssim_loss": "log"}, scales
    l1 = next(ax for ax in figures[0].axes if ax.get_title().startswith("loss: l1"))
    assert "values ≤ 0" in l1.get_title() and "linear scale" in l1.get_ylabel()
    plt.close("all")


def test_no_trajectory_figure_from_a_single_scored_epoch(sim, tmp_path):
    """One scored epoch (evaluation.every >= epochs) is not a trajectory: nothing is drawn, and a figure of
    the same name left by an earlier analysis is removed; two epochs draw it."""
    traj, _, _, _, orders = sim
    metric = traj["source"] == "metric"
    last = traj[~metric | (traj["epoch"] == traj["epoch"].max())]
    stale = [tmp_path / "trajectories_full_reference.png", tmp_path / "trajectories_full_reference.pdf"]
    for path in stale:
        path.write_bytes(b"old")
    assert trajectory_figure(last, orders, tmp_path, "full_reference") == []
    assert not any(p.exists() for p in stale)
    two = traj[~metric | (traj["epoch"] >= traj["epoch"].max() - 1)]
    assert trajectory_figure(two, orders, tmp_path, "full_reference") == stale


def test_rmse_per_dose_and_correlation_tables(sim):
    traj, sig, _, corr, orders = sim
    tables = {t.name: t for t in build_tables(traj, sig, corr, orders=orders, baseline="l1")}
    rmse = tables["rmse_hu_per_dose"]
    assert list(rmse.text.columns) == ["25_360", "10_180"]
    assert rmse.text.index[0] == ("mse", "redcnn") and len(rmse.text) == 6
    assert rmse.bold.sum().eq(1).all()  # one best (lowest) per dose column, from the planted-best loss
    assert all(rmse.bold[d].idxmax()[0] == "0.9mse+0.1ssim_loss" for d in rmse.bold.columns)
    assert "l1 (baseline)" in tables["metric_psnr"].text.index
    spear = tables["correlation_spearman"]
    cell = corr[(corr["scope"] == "cell") & (corr["loss"] == "l1") & (corr["metric"] == "niqe") & (corr["against"] == "val_loss")]
    assert spear.text.loc["l1", ("niqe ↓", "val_loss")].startswith(f"{cell['rho'].mean():.2f}")
    with pytest.raises(UserError, match="not a loss of this run"):
        build_tables(traj, sig, corr, orders=orders, baseline="perceptual")
    # a loss × architecture that the matrix excludes (no cell) gets no row, not a row of dashes
    dropped = traj[~((traj["loss"] == "l1") & (traj["architecture"] == "dncnn"))]
    rows = {t.name: t for t in build_tables(dropped, None, None, orders=orders)}["rmse_hu_per_dose"].text.index
    assert len(rows) == 5 and ("l1", "dncnn") not in rows and ("l1", "redcnn") in rows


def test_zoom_region_finds_soft_tissue_structure():
    img = np.full((64, 64), 0.5)
    img[:, :8] = 0.0  # air: clipped
    img[40:56, 40:56] = 0.5 + 0.2 * np.sin(np.arange(16))[None, :]  # structure inside the window
    img[4:20, 20:36] = np.where(np.indices((16, 16)).sum(0) % 2, 1.0, 0.0)  # clipped bone/air checkerboard
    top, left, size = zoom_region(img)
    assert size == 16 and 36 <= top <= 44 and 36 <= left <= 44


@pytest.mark.slow
def test_every_figure_is_written(sim, tmp_path):
    traj, _, ranks, corr, orders = sim
    rng = np.random.default_rng(0)
    target = np.full((48, 48), -1000.0, dtype=np.float32)
    target[8:40, 8:40] = 40 + 30 * rng.standard_normal((32, 32))
    ex = tmp_path / "examples"
    ex.mkdir()
    for loss in orders.losses:
        np.savez(ex / f"{loss}__redcnn__25_360__s0.npz", input=target + 40 * rng.standard_normal(target.shape),
                 output=target + 5.0, target=target, image="P00/000", epoch=3, stamp="x")  # fmt: skip
    figs = build_figures(traj, corr, ranks, orders, tmp_path / "fig", examples_dir=ex)
    expected = {"training_loss", "trajectories_full_reference", "trajectories_no_reference", "correlation_heatmap",
                "perception_distortion", "cd_psnr", "cd_rmse_hu", "cd_niqe", "comparison_redcnn_25_360"}  # fmt: skip
    written = {p.stem for paths in figs.values() for p in paths}
    assert written == expected
    for stem in expected:
        assert (tmp_path / "fig" / f"{stem}.pdf").stat().st_size > 1000
        png = mpimg.imread(tmp_path / "fig" / f"{stem}.png")
        assert png.shape[0] > 200 and png.shape[1] > 200 and png.std() > 0.01  # not blank


def test_figure_metric_choice_uses_metadata(sim, tmp_path):
    assert pick_pd_metrics(["ssim", "psnr", "pique", "niqe"]) == ("psnr", "niqe")
    assert pick_pd_metrics(["ssim", "rmse_hu", "pique"]) == ("ssim", "pique")  # fallbacks by kind
    assert pick_pd_metrics(["psnr", "ssim"]) is None
    only_fr = simulate_trajectories(losses=("a", "b"), epochs=2, metrics={"psnr": (30.0, 1.0, True)})
    orders = Orders(["a", "b"], ["redcnn"], ["25_360"])
    figs = build_figures(only_fr, None, None, orders, tmp_path)
    assert figs["trajectories_no_reference"] == [] and figs["perception_distortion"] == []
    assert [p.suffix for p in figs["trajectories_full_reference"]] == [".png", ".pdf"]
    target = np.zeros((32, 32), dtype=np.float32)
    out = comparison_figure({"a": {"input": target, "output": target, "target": target, "image": "P/1", "epoch": 1}},
                            orders, tmp_path, "cmp", window="-160,240")  # fmt: skip
    assert [p.name for p in out] == ["cmp.png", "cmp.pdf"]


def test_seed_spread_is_the_sd_over_seeds_of_each_seeds_image_mean():
    """``seed_stats`` against a hand loop: per seed, the mean over images at the last epoch; then the sample
    sd over seeds. The table appears with several seeds and not with one."""
    traj = simulate_trajectories(losses=("mse", "l1"), architectures=("redcnn",), doses=("25_360",), seeds=(0, 1, 2),
                                 patients=4, slices_per_patient=2, epochs=3, metrics=METRICS, noise_sd=0.5, rng=3)  # fmt: skip
    orders = Orders(["mse", "l1"], ["redcnn"], ["25_360"])
    got = seed_stats(traj).set_index(["metric", "loss", "architecture", "dose"])
    metric_rows = traj[traj["source"] == "metric"]
    for (metric, loss), rows in metric_rows.groupby(["metric", "loss"]):
        last = rows[rows["epoch"] == rows["epoch"].max()]
        per_seed = [float(np.mean(last.loc[last["seed"] == s, "value"])) for s in sorted(last["seed"].unique())]
        row = got.loc[(metric, loss, "redcnn", "25_360")]
        assert row["n_seeds"] == 3
        assert row["mean"] == pytest.approx(np.mean(per_seed), rel=1e-12)
        assert row["sd"] == pytest.approx(np.std(per_seed, ddof=1), rel=1e-9)
        assert row["cv"] == pytest.approx(np.std(per_seed, ddof=1) / abs(np.mean(per_seed)), rel=1e-9)
    names = [t.name for t in build_tables(traj, None, None, orders=orders)]
    assert "seed_spread" in names
    one = traj[traj["seed"].astype(str) == "0"]
    assert "seed_spread" not in [t.name for t in build_tables(one, None, None, orders=orders)]
