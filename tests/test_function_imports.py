"""No import inside a function in ``analysis/`` (README: Developer notes > Layers): a cycle is fixed by
moving the shared piece down, never by importing inside a function. The exceptions are the README's, each
named here with its reason and the packages it may import."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from test_layering import PACKAGES, _lint  # the contract checker on a copy of the tree

REPO = Path(__file__).resolve().parents[1]
CLI_START_UP = "CLI start-up: `ldct-bench --help` must not load torch, scipy or seaborn (`# lazy: CLI start-up`)"
TORCHVISION = "imports torchvision: only after ensure_torchvision() has shimmed it (`# after ensure_torchvision()`)"

# file -> (top-level packages it may import inside a function, why)
ALLOWED: dict[str, tuple[set[str], str]] = {
    "analysis/cli.py": ({"analysis", "benchmark", "pandas", "rich"}, CLI_START_UP),
    "analysis/cli_report.py": ({"analysis"}, CLI_START_UP),
    "analysis/figures.py": ({"matplotlib", "seaborn"}, "the Agg backend must be chosen before pyplot loads"),
    "analysis/metrics/deep.py": ({"lpips", "DISTS_pytorch"}, TORCHVISION),
    "analysis/metrics/full_reference.py": ({"pyiqa"}, TORCHVISION),
    "analysis/metrics/no_reference.py": ({"pyiqa"}, TORCHVISION),
    "analysis/metrics/shift_tolerant.py": ({"stlpips_pytorch"}, TORCHVISION),
}


def _function_imports(path: Path) -> list[tuple[int, str, str]]:
    """``(line, function, imported module)`` of every import statement inside a function body of ``path``
    (nested functions and methods included; ``if TYPE_CHECKING:`` blocks at module level are not in one)."""
    found = []
    for fn in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom):
                found += [(node.lineno, fn.name, "." * node.level + (node.module or ""))]
            elif isinstance(node, ast.Import):
                found += [(node.lineno, fn.name, alias.name) for alias in node.names]
    return sorted(set(found))


def test_no_import_inside_a_function_in_analysis():
    bad = []
    for path in sorted((REPO / "analysis").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        allowed, _ = ALLOWED.get(rel, (set(), ""))
        bad += [f"{rel}:{line} in {fn}(): import {mod}" for line, fn, mod in _function_imports(path)
                if mod.split(".")[0] not in allowed]  # fmt: skip
    assert not bad, "imports inside functions (move the shared piece down instead):\n" + "\n".join(bad)


def test_the_exceptions_are_still_needed():
    """An exception that no longer has any function-level import is removed from the list."""
    unused = [rel for rel in ALLOWED if not _function_imports(REPO / rel)]
    assert not unused, f"no import inside a function any more, drop from ALLOWED: {unused}"


def test_the_check_sees_a_function_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\n\ndef f():\n    from analysis.scoring import score_run\n\n\nclass C:\n"
                      "    def g(self):\n        import json\n")  # fmt: skip
    assert _function_imports(source) == [(5, "f", "analysis.scoring"), (10, "g", "json")]


def test_the_old_scoring_cycle_breaks_the_contract(tmp_path):
    """The worker module importing the scoring back (as it once did, inside a function) breaks the
    ``scoring-one-way`` contract of pyproject's ``[tool.importlinter]``."""
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.npz"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "analysis" / "shards.py"
    target.write_text(target.read_text() + "\n\ndef _worker():\n    from analysis.scoring import score_run\n\n"
                      "    return score_run\n")  # fmt: skip
    res = _lint(tmp_path)
    assert res.returncode != 0, res.stdout
    assert "Scoring imports one way" in res.stdout and "analysis.shards -> analysis.scoring" in res.stdout
