"""CI reruns the small matrix and checks that the committed report in results/small reproduces."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmark.layout import CORRELATIONS, FIGURES, REPORT, SIGNIFICANCE, TABLES, RunLayout

pytestmark = pytest.mark.slow

RESULTS = Path(__file__).resolve().parents[1] / "results" / "small"


def test_committed_small_report_reproduces(small_run):
    from analysis.report import write_report
    from analysis.scoring import ScoreOptions

    write_report(small_run, ScoreOptions(progress=False))
    new_dir = RunLayout(small_run).analysis_dir
    committed = sorted((RESULTS / TABLES).glob("*.csv"))
    assert committed, f"no committed tables under {RESULTS}: run `bash results/regenerate.sh`"
    assert sorted(p.name for p in (new_dir / TABLES).glob("*.csv")) == [p.name for p in committed]
    for path in [*committed, RESULTS / CORRELATIONS, RESULTS / SIGNIFICANCE]:
        old = pd.read_csv(path)
        new = pd.read_csv(new_dir / path.relative_to(RESULTS))
        # same machine kind and library versions: the checkpoints are bit-identical; the tolerance
        # only absorbs float summation order in BLAS on a different CPU
        pd.testing.assert_frame_equal(old, new, check_exact=False, rtol=1e-4, atol=1e-9, obj=path.name)
    assert (RESULTS / REPORT).read_text().count(f"{FIGURES}/") >= 5
    for fig in ("training_loss.png", "trajectories_full_reference.png", "correlation_heatmap.png"):
        assert (RESULTS / FIGURES / fig).is_file()
