"""Matrix YAML parsing, validation messages and the CLI's exit code 2 for user errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from benchmark.cells import expand_cells
from benchmark.config import LossConfig, load_yaml, parse_matrix
from benchmark.core.errors import UnknownNameError, UserError
from benchmark.core.registry import lookup

BASE = {
    "dataset": {"kind": "synth", "options": {"size": "tiny"}},
    "losses": ["mse"],
    "architectures": ["dncnn"],
    "doses": ["25_360"],
}


def test_underscore_numbers_stay_strings():
    data = load_yaml("doses: [25_360, 10_180]\nlr: 1.0e-4\nn: 12\n")
    assert data == {"doses": ["25_360", "10_180"], "lr": 1e-4, "n": 12}


@pytest.mark.parametrize(
    ("entry", "label", "terms"),
    [
        ("mse", "mse", [("mse", 1.0)]),
        ("0.95 mse + 0.05 wgan_gp", "0.95mse+0.05wgan_gp", [("mse", 0.95), ("wgan_gp", 0.05)]),
        ({"mse": 0.95, "wgan_gp": 0.05}, "0.95mse+0.05wgan_gp", [("mse", 0.95), ("wgan_gp", 0.05)]),
        ({"name": "charbonnier", "kwargs": {"eps": 0.01}, "label": "charb01"}, "charb01", [("charbonnier", 1.0)]),
        ({"label": "pix", "terms": [{"name": "l1", "weight": 100}, {"name": "vanilla"}]}, "pix", [("l1", 100.0), ("vanilla", 1.0)]),
    ],
)
def test_loss_entry_forms(entry, label, terms):
    cfg = LossConfig.model_validate(entry)
    assert cfg.label == label
    assert [(t.name, t.weight) for t in cfg.terms] == terms


def test_unknown_key_is_named():
    with pytest.raises(UserError, match=r"training\.epoch: unknown key"):
        parse_matrix({**BASE, "training": {"epoch": 3}}, "m.yaml")


def test_negative_epochs_named():
    with pytest.raises(UserError, match=r"training\.epochs: Input should be greater than 0"):
        parse_matrix({**BASE, "training": {"epochs": -1}}, "m.yaml")


def test_duplicate_labels_rejected():
    with pytest.raises(UserError, match="duplicate loss label"):
        parse_matrix({**BASE, "losses": ["mse", {"name": "mse"}]}, "m.yaml")


def test_integer_dose_rejected_with_hint():
    with pytest.raises(UserError, match="condition name string"):
        parse_matrix({**BASE, "doses": [25]}, "m.yaml")


def test_exclude_and_cell_ids():
    m = parse_matrix(
        {**BASE, "losses": ["mse", "l1"], "doses": ["25_360", "10_180"], "seeds": [0, 1],
         "exclude": [{"loss": "l1", "dose": "10_180"}]},
        "m.yaml",
    )
    ids = [c.cell_id for c in expand_cells(m)]
    assert len(ids) == 2 * 2 * 2 - 2
    assert "mse__dncnn__25_360__s0" in ids
    assert not any(i.startswith("l1__") and "10_180" in i for i in ids)
    assert len(set(ids)) == len(ids)


def test_lookup_suggests_close_match():
    with pytest.raises(UnknownNameError) as info:
        lookup({"charbonnier": 1, "mse": 2}, "charbonier", "loss", field="losses[0]")
    assert info.value.close == ["charbonnier"]
    assert "Valid loss names: charbonnier, mse" in str(info.value)


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_bad_yaml_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""
        dataset: {kind: synth, options: {size: tiny}}
        losses: [mse]
        architectures: [dncnn]
        doses: ["25_360"]
        training: {epochs: -2, bogus: 1}
    """))
    r = _cli("validate", "--matrix", str(bad))
    assert r.returncode == 2
    assert "training.epochs" in r.stderr and "training.bogus: unknown key" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_unknown_loss_exits_2_with_suggestion(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text('dataset: {kind: synth, options: {size: tiny}}\nlosses: [msee]\narchitectures: [redcnn]\ndoses: ["25_360"]\n')
    r = _cli("validate", "--matrix", str(bad))
    assert r.returncode == 2, r.stderr
    assert "unknown loss 'msee'" in r.stderr and "Did you mean 'mse'?" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_missing_matrix_file_exits_2(tmp_path):
    r = _cli("validate", "--matrix", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2
    assert "nope.yaml" in r.stderr and "presets" in r.stderr
