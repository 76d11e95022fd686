"""The README's findings table is the committed claims.csv files, and nothing else (analysis.findings)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.findings import END, START, findings_table, main, replace_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_table_is_what_the_committed_claims_csv_say():
    readme = (ROOT / "README.md").read_text()
    assert replace_table(readme, findings_table(ROOT / "results")) == readme, (
        "README.md's findings table is out of date: run `python -m analysis.findings`")


def _claims(rows: list[dict]) -> pd.DataFrame:
    base = {"kind": "better", "condition": "x", "estimate": 0.0, "numbers": "", "test": "", "n": 8, "p": 0.01,
            "p_holm": 0.01, "p_reverse": 0.9, "p_holm_reverse": 0.9, "result": "holds", "seed_verdicts": "",
            "stability": "one seed"}  # fmt: skip
    return pd.DataFrame([{**base, **r} for r in rows])


def test_verdicts_gates_and_seeds_come_from_claims_csv(tmp_path):
    study = tmp_path / "results" / "redcnn_wgan"
    study.mkdir(parents=True)
    _claims([
        {"id": "a", "statement": "A wins", "verdict": "holds", "gate": "passed: rmse_hu a 0.40× of the input"},
        {"id": "b", "statement": "B | wins", "verdict": "not tested", "condition": "c1", "result": "not tested",
         "gate": "failed: b · r · 25_360: rmse_hu 20 = 0.92× the LDCT input's 21.7 (gate ≤ 0.8×)",
         "stability": "seed-dependent", "seed_verdicts": "seed 0: holds; seed 1: not tested"},
        {"id": "b", "statement": "B | wins", "verdict": "not tested", "condition": "c2", "result": "not tested",
         "gate": "failed: b · r · 10_180: rmse_hu 40 = 1.64× the LDCT input's 24.4 (gate ≤ 0.8×)",
         "stability": "seed-dependent", "seed_verdicts": "seed 0: holds; seed 1: not tested"},
    ]).to_csv(study / "claims.csv", index=False)  # fmt: skip
    lines = findings_table(tmp_path / "results").splitlines()
    assert lines[2] == ("| [RED-CNN: MSE vs WGAN-GP](results/redcnn_wgan/report.md) (study 3) | `a` | A wins | **holds** | "
                        "passed | one seed |")  # fmt: skip
    assert lines[3] == ("|  | `b` | B \\| wins | **not tested** | failed: b · r · 25_360: rmse_hu 20 = 0.92× the LDCT "
                        "input's 21.7 (gate ≤ 0.8×) (+1 more) | seed-dependent (seed 0: holds; seed 1: not tested) |")  # fmt: skip
    assert any("mstlf" in line and "no claims.csv" in line for line in lines)


def test_check_fails_on_a_stale_table_and_the_rewrite_fixes_it(tmp_path):
    (tmp_path / "results").mkdir()
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{START}\n| stale |\n{END}\n\nafter\n")
    args = ["--results", str(tmp_path / "results"), "--readme", str(readme)]
    assert main([*args, "--check"]) == 1
    assert main(args) == 0 and main([*args, "--check"]) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\n") and text.endswith(f"{END}\n\nafter\n") and "| stale |" not in text
    with pytest.raises(ValueError, match="findings markers"):
        replace_table("no markers", "")
