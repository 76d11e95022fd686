"""The layering contract (pyproject ``[tool.importlinter]``, README: Developer notes > Layers): it holds
on the tree, it covers every module, and it fails when a lower layer imports a higher one."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "losses", "models", "analysis")
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def _config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]


def _layer_modules() -> list[str]:
    layers = next(c for c in _config()["contracts"] if c["type"] == "layers")["layers"]
    return [m.strip() for layer in layers for m in layer.replace("|", ":").split(":")]


def _modules(root: Path) -> list[str]:
    """Every module of the four packages, dotted (packages by their ``__init__``)."""
    out = []
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = f.relative_to(root).with_suffix("").parts
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([*LINT, str(cwd / "pyproject.toml"), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_every_module_is_in_a_layer():
    """A new module must be placed in the contract, or nothing constrains it. The package roots
    themselves (``benchmark/__init__.py`` with the version, ``analysis/__init__.py``) hold no imports."""
    layered = _layer_modules()
    roots = set(PACKAGES)
    missing = [m for m in _modules(REPO) if m not in roots and not any(m == x or m.startswith(x + ".") for x in layered)]
    assert not missing, f"modules in no layer of pyproject's [tool.importlinter]: {missing}"


def test_the_contract_holds_on_the_tree():
    res = _lint(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


@pytest.mark.parametrize(("module", "back_import", "contract"), [
    ("losses/l1.py", "import benchmark.runner", "Layers"),
    ("models/dncnn.py", "import analysis.metrics", "Layers"),
    ("benchmark/core/io.py", "import benchmark.layout", "Layers"),
    ("analysis/scoring.py", "import benchmark.train", "does not import the training side"),
])  # fmt: skip
def test_a_back_import_breaks_the_contract(tmp_path, module, back_import, contract):
    """A copy of the tree with one upward import added: ``lint-imports`` fails, naming it."""
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.npz"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{back_import}  # noqa: E402 - the deliberate back-import\n")
    res = _lint(tmp_path)
    assert res.returncode != 0, res.stdout
    importer, imported = module[:-3].replace("/", "."), back_import.split()[-1]
    assert f"{importer} -> {imported}" in res.stdout, res.stdout
    assert f"{contract}" in res.stdout and "BROKEN" in res.stdout
