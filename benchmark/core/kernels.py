"""Portable CPU kernels: results that are the same bytes on every x86-64 host.

PyTorch, oneDNN, MKL, numpy and glibc's libm each pick a code path by the CPU's instruction set at run
time (AVX-512, AVX2, SSE …). The paths round differently (FMA contraction, vector width of a reduction,
a different polynomial), so the same seed trains different weights on different CPUs. Measured on one
AVX-512 host with the other paths forced by their own switches: a 10-step DnCNN / RED-CNN training gives
different weights natively, under an AVX2 cap and under an SSE4.1 cap (``tests/test_portable.py``).

**Portable mode** (matrix ``reproducibility: {kernels: portable}``, or ``--portable``) pins every family
to a path that exists on every x86-64 CPU and does not depend on its features:

=================  ===============================================  ==========================================
family             pin                                              how
=================  ===============================================  ==========================================
ATen (PyTorch)     ``ATEN_CPU_CAPABILITY=default``                  the non-vectorised build of every kernel
oneDNN             not used (``torch.backends.mkldnn.enabled``       its JIT kernels block by cache size and
                   ``= False``); ``ONEDNN_MAX_CPU_ISA=SSE41``         thread count, which an ISA cap does not
                   for anything that still reaches it                fix; convolutions go to im2col + GEMM
NNPACK             off (``torch.backends.nnpack``)                   ISA-dispatched convolutions
MKL (GEMM, FFT)    ``MKL_CBWR=COMPATIBLE``                           Intel's conditional numerical
                                                                     reproducibility, SSE2-compatible branch
MKL VML            replaced (:mod:`benchmark.core.portable_ops`)     ATen's ``sqrt``, ``log2``, ``log10``,
                                                                     ``atan`` (float64: ``asin``, ``acos``,
                                                                     ``tan``) call MKL's vector maths, whose
                                                                     compatible branch starts from the CPU's
                                                                     approximate reciprocals (maker-defined
                                                                     bits); IEEE-exact replacements
numpy              ``NPY_ENABLE_CPU_FEATURES=<baseline>``           only the build's baseline; no dispatch
OpenBLAS           ``OPENBLAS_CORETYPE=Prescott``,                   numpy's and scipy's BLAS pick kernels by
                   ``OPENBLAS_NUM_THREADS = threads``                core; pinned to the generic SSE3 one
glibc libm         ``GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX…,-FMA``     the SSE2 ``exp``/``log``/``sin`` variants
threads            ``OMP_NUM_THREADS = MKL_NUM_THREADS = threads``   one recorded thread count per cell, so a
                   and ``torch.set_num_threads(threads)``            float sum's order never depends on
                                                                     ``--jobs`` or the machine's cores
=================  ===============================================  ==========================================

Every switch but the last two ``torch.backends`` flags is read when a library loads (glibc's when the
process starts), so the mode must be chosen **before** Python imports torch or numpy. The ``ldct-bench``
command does that: :mod:`benchmark.entry` sees the mode in the matrix (or ``--portable``) and re-executes
itself with :func:`portable_env`. Worker processes (``run --jobs``, ``analyze --jobs``) inherit it; Slurm
jobs get it through their set-up lines. A process that loaded torch natively and is then asked for
portable kernels is refused by :func:`apply_portable` (it cannot be converted after the fact).

Costs and limits: on the CPU, portable training is ~4-6x slower than native (``benchmarks/bench_portable.py``
prints the ratio). On a GPU it changes only CPU-side work; a GPU result is deterministic per device model
(``deterministic: true``), not across models. Only x86-64 is covered (on other CPUs the switches do
nothing and :func:`apply_portable` says so). Identity across hosts is shown on one machine, not on a fleet
of real CPUs: by capping the instruction set, and by running a probe of ~70 ops, optimisers and training
steps under ``qemu-x86_64 -cpu Haswell-v4``, an emulated processor of another maker whose approximate
reciprocal instructions are exact (``tests/test_portable.py``). That emulation found what the caps could
not: ATen's VML-routed ``sqrt``/``log2``/``log10``/``atan``/``asin``/``acos``/``tan`` and OpenBLAS's
core dispatch, which made a
portable retrain of ``results/small`` on an AMD Zen 5 differ by 6e-6 after one epoch from the bytes another
AVX-512 host (model not recorded) had written.

This module imports nothing heavy at load time: :mod:`benchmark.entry` uses it before torch exists.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from typing import Any

from benchmark.core.errors import UserError

KERNELS = ("native", "portable")
# The marker a pinned process carries: "portable:<threads>".
MARKER = "LDCT_BENCH_KERNELS"
# glibc features whose libm variants round differently (the ``*_fma`` / AVX2 ``exp``, ``log``, ``pow``,
# ``sin`` …); masked, every host runs the SSE2 baseline variants.
GLIBC_MASK = ("AVX512F", "AVX512DQ", "AVX512BW", "AVX512VL", "AVX512CD", "AVX2", "FMA", "FMA4", "AVX")
# OpenBLAS (numpy's and scipy's, each bundled) picks its kernels by core (Haswell kernels on an AMD Zen,
# SkylakeX on an AVX-512 Intel); pinned to its generic SSE3 core, which every x86-64 CPU runs.
OPENBLAS_CORE = "Prescott"
# Variables that would override a pin (an instruction cap of the user's, numpy's own switch): removed.
UNPINNED = ("MKL_ENABLE_INSTRUCTIONS", "NPY_DISABLE_CPU_FEATURES", "MKL_DYNAMIC", "OMP_DYNAMIC")


def numpy_baseline() -> str:
    """The CPU features numpy was built for (always on) as ``NPY_ENABLE_CPU_FEATURES`` wants them.
    Imports numpy: call it in the launching process, never in the pinned one before the pins."""
    import numpy._core._multiarray_umath as umath  # lazy: the launcher has no numpy otherwise

    return ",".join(umath.__cpu_baseline__)


def portable_env(environ: Mapping[str, str], threads: int, *, baseline: str | None = None) -> dict[str, str]:
    """``environ`` with the portable pins (module docstring) for ``threads`` intra-op threads.

    ``baseline`` is numpy's baseline feature list (:func:`numpy_baseline`, computed when None). Existing
    ``GLIBC_TUNABLES`` entries are kept; instruction caps that would fight a pin are removed."""
    if threads < 1:
        raise UserError(f"{threads}: give at least 1 thread", field="reproducibility.threads")
    env = {k: v for k, v in environ.items() if k not in UNPINNED}
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and not t.startswith("glibc.cpu.hwcaps=")]
    tunables.append("glibc.cpu.hwcaps=" + ",".join(f"-{f}" for f in GLIBC_MASK))
    env.update({
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_CBWR": "COMPATIBLE",
        "NPY_ENABLE_CPU_FEATURES": baseline if baseline is not None else numpy_baseline(),
        "GLIBC_TUNABLES": ":".join(tunables),
        "OPENBLAS_CORETYPE": OPENBLAS_CORE,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        MARKER: f"portable:{threads}",
    })  # fmt: skip
    return env


def pinned_threads(environ: Mapping[str, str] | None = None) -> int | None:
    """The thread count this process was pinned for, or None when it runs native kernels."""
    mark = (os.environ if environ is None else environ).get(MARKER, "")
    kind, _, n = mark.partition(":")
    return int(n) if kind == "portable" and n.isdigit() else None


def shell_exports(threads: int) -> list[str]:
    """``export NAME=value`` lines that pin a shell's processes (a Slurm job's set-up)."""
    env = portable_env({}, threads)
    return [f"export {k}='{v}'" for k, v in sorted(env.items())] + [f"unset {k}" for k in UNPINNED]


def _numpy_dispatch_on() -> list[str]:
    import numpy._core._multiarray_umath as umath  # lazy: see the module docstring

    return [f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f)]


def apply_portable(threads: int, *, field: str = "reproducibility.kernels", replace_ops: bool = True) -> None:
    """Finish the pins that can be set at run time (oneDNN and NNPACK off, ``threads`` intra-op threads)
    after checking that this process started pinned; else a :class:`UserError` saying how to start it."""
    import torch  # lazy: see the module docstring

    how = ("start it with the `ldct-bench` command (it re-executes itself with the pins), or run Python "
           "under the environment `python -m benchmark.core.kernels --threads N` prints")  # fmt: skip
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise UserError(f"portable kernels are defined for x86-64 only, this is {platform.machine()}", field=field)
    problems = []
    if pinned_threads() != threads:
        problems.append(f"{MARKER}={os.environ.get(MARKER)!r} (want 'portable:{threads}')")
    if torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        problems.append(f"torch uses {torch.backends.cpu.get_cpu_capability()} kernels")
    if on := _numpy_dispatch_on():
        problems.append(f"numpy dispatches {', '.join(on)}")
    if problems:
        raise UserError("portable CPU kernels were asked for, but this process loaded torch/numpy with native "
                        f"ones ({'; '.join(problems)}): {how}", field=field)  # fmt: skip
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
    torch.backends.nnpack.set_flags(False)
    torch.set_num_threads(threads)
    if replace_ops:  # False only to measure what the replacements change (tests/portable_probe.py)
        from benchmark.core import portable_ops  # lazy: it imports torch

        portable_ops.install()


def apply_kernels(kernels: str, threads: int | None, *, field: str = "reproducibility.kernels") -> None:
    """This process's kernels and threads for a matrix's ``reproducibility``, in every process that
    trains or scores: portable kernels → :func:`apply_portable`; native with ``threads`` → that many
    intra-op threads (``torch.set_num_threads``, which also sets OpenMP's and MKL's), so the cell's float
    sums have one order whatever ``--jobs``; native without → the process's threads are left alone."""
    if kernels == "portable":
        apply_portable(threads or 1, field=field)
    elif threads is not None:
        import torch  # lazy: see the module docstring

        torch.set_num_threads(threads)


def describe() -> dict[str, Any]:
    """The kernel facts of this process, for a cell's ``environment.json`` and the benchmark."""
    import torch  # lazy: see the module docstring

    return {
        "kernels": "portable" if pinned_threads() is not None else "native",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": bool(torch.backends.mkldnn.enabled),
        "threads": torch.get_num_threads(),
        "numpy_dispatch": _numpy_dispatch_on(),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmark.core.kernels --threads N``: print the portable environment as shell exports."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmark.core.kernels", description=main.__doc__)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    print("\n".join(shell_exports(args.threads)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
