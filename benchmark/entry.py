"""The ``ldct-bench`` executable: choose the CPU kernels before torch and numpy load, then run the CLI.

Portable kernels (:mod:`benchmark.core.kernels`) are environment switches that libraries read when they
load, glibc's when the process starts. So before importing anything heavy this module decides whether the
command asks for them:

* ``run --portable`` (it sets the matrix's ``reproducibility.kernels``);
* ``run``/``validate``: the matrix's ``reproducibility: {kernels: portable}`` (``--matrix`` path or preset);
* ``analyze``/``report`` on a run folder: its ``matrix.resolved.yaml``, so a run is scored
  with the kernels it was trained with.

If so, and this process is not pinned yet, it re-executes ``python -m benchmark`` with the pinned
environment (same arguments); otherwise it runs :func:`benchmark.cli.main` directly. Anything it cannot
read here (a missing file, bad YAML) it leaves to the CLI, which reports it with exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from benchmark.core.kernels import MARKER, pinned_threads, portable_env

PRESETS = Path(__file__).resolve().parent / "presets"
_RUN_DIR_COMMANDS = ("analyze", "report")  # `status` computes nothing: no pins needed


def _option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _read_yaml(path: Path) -> dict[str, Any] | None:
    try:
        import yaml  # lazy: PyYAML loads neither torch nor numpy

        data = yaml.safe_load(path.read_text())
    except Exception:  # the CLI reports an unreadable matrix itself, with exit 2
        return None
    return data if isinstance(data, dict) else None


def _matrix_path(spec: str) -> Path:
    path = Path(spec)
    if path.is_file():
        return path
    name = spec if spec.endswith((".yaml", ".yml")) else f"{spec}.yaml"
    return PRESETS / name


def requested_threads(argv: list[str]) -> int | None:
    """The thread count of portable kernels that ``argv`` asks for, or None for native kernels."""
    command = next((a for a in argv if not a.startswith("-")), None)
    data: dict[str, Any] | None = None
    if command in ("run", "validate"):
        spec = _option(argv, "--matrix", "-m")
        data = _read_yaml(_matrix_path(spec)) if spec else None
    elif command in _RUN_DIR_COMMANDS:
        out = _option(argv, "--out", "-o")
        data = _read_yaml(Path(out) / "matrix.resolved.yaml") if out else None
    section = (data or {}).get("reproducibility")
    section = section if isinstance(section, dict) else {}
    threads = section.get("threads", 1)
    threads = threads if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1 else 1
    if (command == "run" and "--portable" in argv) or section.get("kernels") == "portable":
        return threads
    return None


def main() -> None:
    argv = sys.argv[1:]
    threads = requested_threads(argv)
    if threads is not None and pinned_threads() != threads and os.environ.get(MARKER + "_EXEC") != "1":
        env = portable_env(os.environ, threads)
        env[MARKER + "_EXEC"] = "1"  # one re-exec at most, whatever happens
        os.execve(sys.executable, [sys.executable, "-m", "benchmark", *argv], env)
    from benchmark.cli import main as cli_main  # lazy: after the kernels are chosen

    cli_main()
