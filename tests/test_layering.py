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


def _readme_section(title: str) -> str:
    """The text of the README section whose heading is ``title`` (any level), up to the next heading of
    the same or a higher level."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("#").strip() == title and line.startswith("#"))
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("#") and len(lines[i]) - len(lines[i].lstrip("#")) <= level), len(lines))  # fmt: skip
    return "\n".join(lines[start:end])


def _top_level(pkg: str) -> list[str]:
    """The modules and subpackages directly in ``pkg`` (``name.py`` / ``name/``), the package's own
    ``__init__`` excepted."""
    root = REPO / pkg
    files = [f"{p.stem}.py" for p in sorted(root.glob("*.py")) if p.stem != "__init__"]
    dirs = [f"{p.name}/" for p in sorted(root.iterdir()) if p.is_dir() and (p / "__init__.py").is_file()]
    return files + dirs


@pytest.mark.parametrize("pkg", ["benchmark", "analysis"])
def test_readme_layout_and_layers_name_every_module(pkg):
    """The README's Layout section names every module and subpackage of ``benchmark/`` and ``analysis/`` as
    `` `name.py` `` or `` `name/` ``, and its Layers section names each by its module name (`` `name` ``,
    or dotted ``pkg.name``), so a new or renamed module cannot go undocumented. ``__main__`` and ``entry`` are
    named with their package in both."""
    layout, layers = _readme_section("Layout"), _readme_section("Layers")
    missing_layout = [n for n in _top_level(pkg) if f"`{n}`" not in layout]
    assert not missing_layout, f"README 'Layout' does not name {pkg}/{missing_layout}"
    names = [n.removesuffix(".py").rstrip("/") for n in _top_level(pkg)]
    missing_layers = [n for n in names
                      if f"`{n}`" not in layers and f"`{pkg}.{n}`" not in layers and f"{pkg}.{n}`" not in layers]  # fmt: skip
    assert not missing_layers, f"README 'Layers' does not name {pkg}.{missing_layers}"
