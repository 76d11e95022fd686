"""CI reruns the small matrix and checks the committed report in results/small against it, within the
seed-to-seed spread (see :func:`test_committed_small_report_reproduces`); the
CPU mini-studies (results/<study>, 10-15 minutes each) reproduce the same way under the ``study``
marker, which the default run deselects: ``python -m pytest -m study tests/test_results.py``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.tables import INPUT_LABEL
from benchmark.layout import CORRELATIONS, FIGURES, REPORT, SIGNIFICANCE, TABLES, RunLayout

pytestmark = pytest.mark.slow

RESULTS = Path(__file__).resolve().parents[1] / "results" / "small"
STUDIES = sorted(p.name for p in RESULTS.parent.iterdir() if p.is_dir() and p.name != "small")


def _same_tables(committed_dir: Path, new_dir: Path) -> None:
    """Every committed table, the correlations and the significance tests equal the new run's."""
    committed = sorted((committed_dir / TABLES).glob("*.csv"))
    assert committed, f"no committed tables under {committed_dir}: run `bash results/regenerate.sh`"
    assert sorted(p.name for p in (new_dir / TABLES).glob("*.csv")) == [p.name for p in committed]
    for path in [*committed, committed_dir / CORRELATIONS, committed_dir / SIGNIFICANCE]:
        old = pd.read_csv(path)
        new = pd.read_csv(new_dir / path.relative_to(committed_dir))
        # same machine kind and library versions: the checkpoints are bit-identical; the tolerance
        # only absorbs float summation order in BLAS on a different CPU
        pd.testing.assert_frame_equal(old, new, check_exact=False, rtol=1e-4, atol=1e-9, obj=path.name)


SPREAD = RESULTS / "seed_spread.csv"
KEYS = ["metric", "loss", "architecture", "dose"]


def _within_seed_spread(committed_dir: Path, new_dir: Path, spread: pd.DataFrame) -> list[str]:
    """Rows of the metric tables whose mean moved by more than the cell's seed-to-seed sd (trained cells),
    or at all beyond float noise (the LDCT-input rows, which no training touches)."""
    sd = spread.set_index(KEYS)["sd"]
    problems = []
    for path in sorted((committed_dir / TABLES).glob("*.csv")):
        old = pd.read_csv(path, dtype={"dose": str})
        if not set([*KEYS, "mean"]) <= set(old.columns):
            continue  # correlation tables: checked through their claims, not here (3 epochs per cell)
        new = pd.read_csv(new_dir / TABLES / path.name, dtype={"dose": str})
        both = old.merge(new, on=KEYS, suffixes=("_old", "_new"), how="outer", indicator=True)
        assert (both["_merge"] == "both").all(), f"{path.name}: rows differ"
        for r in both.itertuples():
            key = (r.metric, r.loss, r.architecture, r.dose)
            tol = 1e-6 * abs(r.mean_old) if r.loss == INPUT_LABEL else float(sd.get(key, float("nan")))
            assert tol == tol, f"{path.name}: no seed spread for {key} in {SPREAD.name}"
            if abs(r.mean_new - r.mean_old) > tol:
                problems.append(f"{path.name} {key}: {r.mean_old:.6g} -> {r.mean_new:.6g} (tolerance {tol:.3g})")
    return problems


def test_committed_small_report_reproduces(small_run):
    """README command 1's tables equal results/small within the seed-to-seed spread, and say the same.

    The small matrix runs with portable CPU kernels, so on any x86-64 host its numbers are expected to be
    the same bytes (tests/test_portable.py shows that for two emulated instruction sets). This check does
    not rely on it: a table mean may move by at most the sd over three seeds of that cell and metric
    (results/small/seed_spread.csv, measured by `bash results/regenerate.sh small`), the LDCT-input rows by
    float noise only, and the qualitative content must hold: every cell beats the input on RMSE, and where
    a patient-level test calls a difference between two losses (Holm p < 0.05, in either run) both runs
    order them the same way."""
    new_dir = RunLayout(small_run).analysis_dir
    committed = sorted(p.name for p in (RESULTS / TABLES).glob("*.csv"))
    assert committed, f"no committed tables under {RESULTS}: run `bash results/regenerate.sh`"
    assert sorted(p.name for p in (new_dir / TABLES).glob("*.csv")) == committed
    spread = pd.read_csv(SPREAD, dtype={"dose": str})
    assert (spread["n_seeds"] >= 3).all(), "the tolerance needs the spread over >= 3 seeds"
    problems = _within_seed_spread(RESULTS, new_dir, spread)
    assert not problems, "\n".join(problems)

    rmse = pd.read_csv(new_dir / TABLES / "rmse_hu_per_dose.csv", dtype={"dose": str})
    ref = rmse[rmse["loss"] == INPUT_LABEL].set_index("dose")["mean"]
    cells = rmse[rmse["loss"] != INPUT_LABEL]
    assert len(cells) == 8 and (cells["mean"].to_numpy() < ref[cells["dose"]].to_numpy()).all(), cells

    key = ["metric", "architecture", "dose", "loss_a", "loss_b", "test"]
    old = pd.read_csv(RESULTS / SIGNIFICANCE, dtype={"dose": str})
    new = pd.read_csv(new_dir / SIGNIFICANCE, dtype={"dose": str})
    both = old.merge(new, on=key, suffixes=("_old", "_new"))
    assert len(both) == len(old) == len(new)
    called = both[(both["p_holm_old"] < 0.05) | (both["p_holm_new"] < 0.05)]
    flipped = called[called["better_old"] != called["better_new"]]
    assert flipped.empty, flipped[[*key, "better_old", "better_new", "p_holm_old", "p_holm_new"]]

    assert (RESULTS / REPORT).read_text().count(f"{FIGURES}/") >= 5
    for fig in ("training_loss.png", "trajectories_full_reference.png", "correlation_heatmap.png"):
        assert (RESULTS / FIGURES / fig).is_file()


@pytest.mark.study
@pytest.mark.parametrize("study", STUDIES)
def test_committed_ministudy_reproduces(study, tmp_path):
    """Rerun a CPU mini-study from its preset and compare its tables and claims with results/<study>."""
    from analysis.report import write_report
    from analysis.scoring import ScoreOptions
    from benchmark.config import load_matrix
    from benchmark.runner import Runner

    committed_dir = RESULTS.parent / study
    summary = Runner(load_matrix(f"{study}-cpu.yaml"), tmp_path, quiet=True).run()
    assert not summary.failed, summary.lines()
    write_report(tmp_path, ScoreOptions(progress=False))
    new_dir = RunLayout(tmp_path).analysis_dir
    _same_tables(committed_dir, new_dir)
    old, new = pd.read_csv(committed_dir / "claims.csv"), pd.read_csv(new_dir / "claims.csv")
    pd.testing.assert_frame_equal(old, new, check_exact=False, rtol=1e-4, atol=1e-9, obj="claims.csv")
