"""``ldct-bench analyze`` and ``ldct-bench report`` take the same shared options (one definition,
:class:`analysis.cli_report.SharedOptions`), with the same names, defaults and help texts, after each
command's own options; and the command functions still run from Python with plain defaults."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from analysis import cli_report
from analysis.cli_report import SharedOptions
from benchmark import cli

SHARED = [f.name for f in fields(SharedOptions)]


def _params(command: str) -> dict[str, tuple]:
    """``name -> (option strings, default, help, is_flag)`` of one command, in ``--help`` order."""
    click_command = typer.main.get_command(cli.app).commands[command]  # type: ignore[attr-defined]
    return {p.name: (tuple(p.opts), tuple(p.secondary_opts), p.default, p.help, getattr(p, "is_flag", False))
            for p in click_command.params}  # fmt: skip


def _help_rows(command: str) -> dict[str, str]:
    """The ``--help`` row of each option (whitespace collapsed), keyed by its long name."""
    res = CliRunner().invoke(cli.app, [command, "--help"], env={"COLUMNS": "300", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    rows = {}
    for line in res.output.splitlines():
        words = line.strip("│ ").replace("*", " ").split()
        if words and words[0].startswith("--"):
            rows[words[0]] = " ".join(words)
    return rows


def test_both_commands_list_the_shared_options_identically():
    analyze, report = _params("analyze"), _params("report")
    assert list(analyze) == ["out", *SHARED]
    assert list(report) == ["out", "baseline", "skip_analyze", "distortion", "perception", *SHARED]
    for name in ["out", *SHARED]:
        assert analyze[name] == report[name], name
        assert analyze[name][3], f"{name}: no help text"
    rows_a, rows_r = _help_rows("analyze"), _help_rows("report")
    for name in ["out", *SHARED]:
        flag = "--" + name.replace("_", "-")
        assert rows_a[flag] == rows_r[flag], flag


def test_the_defaults_are_the_dataclass_defaults():
    params = _params("analyze")
    for f in fields(SharedOptions):
        assert params[f.name][2] == f.default, f.name
    assert params["bootstrap"][2] == 2000 and params["unit"][2] == "patient" and params["jobs"][2] == 1


class _Stop(Exception):
    pass


def test_the_commands_gather_the_shared_options(monkeypatch, tmp_path):
    """From Python (plain defaults) and from the command line, the command gets one SharedOptions."""
    got: list[SharedOptions] = []

    def stop(self: SharedOptions):
        got.append(self)
        raise _Stop  # before anything is analysed

    monkeypatch.setattr(SharedOptions, "stats", stop)
    with pytest.raises(_Stop):
        cli_report.analyze(out=Path(tmp_path))
    assert got == [SharedOptions()]
    res = CliRunner().invoke(cli.app, ["report", "--out", str(tmp_path), "--jobs", "2", "--quiet", "--partial",
                                       "--metrics", "psnr", "--baseline", "l1"])  # fmt: skip
    assert isinstance(res.exception, _Stop), res.output
    assert got[1] == SharedOptions(jobs=2, quiet=True, partial=True, metrics="psnr")
