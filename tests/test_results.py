"""CI reruns the small matrix and checks that the committed report in results/small reproduces; the
CPU mini-studies (results/<study>, 10-15 minutes each) reproduce the same way under the ``study``
marker, which the default run deselects: ``python -m pytest -m study tests/test_results.py``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

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


def test_committed_small_report_reproduces(small_run):
    from analysis.report import write_report
    from analysis.scoring import ScoreOptions

    write_report(small_run, ScoreOptions(progress=False))
    _same_tables(RESULTS, RunLayout(small_run).analysis_dir)
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
