"""Vendor-independent replacements for the few ATen CPU ops whose results depend on the processor's maker
even under portable kernels (:mod:`benchmark.core.kernels`).

**Why.** Under the portable pins ATen runs its non-vectorised kernels and MKL its SSE2-compatible branch
(``MKL_CBWR=COMPATIBLE``). Yet a few float ops in ATen call MKL's vector-math library (VML) directly, and on
that branch VML's ``sqrt``, ``log2``, ``log10`` and ``atan`` (and in float64 ``asin``, ``acos``, ``tan``)
give results that differ in the last bit from one processor to another. The likely reason (not read from
MKL's code, which is closed): they start from the approximate reciprocal instructions (``rsqrtps``,
``rcpps``), the only SSE2 arithmetic whose bits IEEE does not fix and which Intel and AMD implement
differently. ``torch.optim.Adam`` takes a ``sqrt`` every step, so a training run drifts apart within one
epoch: on an AMD Zen 5 host a one-epoch retrain of a ``results/small`` cell differed by 6e-6 (relative) from
the bytes another AVX-512 host had written.

**Measured** (``tests/test_portable.py``, an op table hashed natively and under ``qemu-x86_64 -cpu
Haswell-v4``, which reports a GenuineIntel processor and emulates ``rsqrtps``/``rcpps`` exactly): of ~70 float
ops, forward and backward, in float32 and float64 (elementwise maths, activations, reductions, norms,
convolutions, pooling, interpolation, normalisation layers, attention, FFT, linear algebra, optimisers), only
``sqrt`` (and what calls it: ``pow(x, 0.5)``, ``float_power``, ``cdist``, the gradient of ``pow(x, 1.5)``,
Adam, AdamW and RMSprop), ``log2``, ``log10`` and ``atan``, and in float64 ``asin``, ``acos`` and ``tan``
differ. ``exp``, ``log``, ``tanh``, ``erf``, ``sin``, ``cos``, ``atan2``, ``rsqrt``, GEMM and the FFT agree
bit for bit.

**What this module does.** :func:`install` registers, for the CPU dispatch key only (autograd formulas and
every other device are untouched), replacements of those ops built from IEEE-exact ATen ops:

* ``sqrt`` (and ``pow`` with exponent 0.5), float32: the correctly rounded square root. A first guess
  ``y = round32(x * rsqrt(x))`` (in float64) is within one float32 ulp; it is corrected by the exact
  midpoint test: with ``m`` the midpoint between ``y`` and a neighbour (25 significant bits, so ``m²`` is
  exact in float64), ``√x < m`` iff ``x < m²``. A square root of a float32 is never exactly at a midpoint, so
  this is IEEE's ``sqrt``, on every host. float64: ``x * rsqrt(x)`` and one Heron step (within an ulp, not
  correctly rounded, but from exact operations only). float16/bfloat16 go through float32.
* ``pow`` with any other exponent: the elementwise ``pow(Tensor, Tensor)`` kernel (``std::pow``), which
  ATen's scalar-exponent kernel also uses apart from its special cases.
* ``log2``/``log10``: ``log(x) / log(b)`` in float64 (``log`` agrees across processors), rounded to the
  input's type.
* ``atan``: ``atan2(x, 1)``.
* ``asin``, ``acos``, ``tan`` (which differ in float64 only): ``atan2(x, √((1−x)(1+x)))``,
  ``atan2(√((1−x)(1+x)), x)`` and ``sin(x) / cos(x)`` in float64, rounded to the input's type.

This is written here because no library offers it: MKL's conditional numerical reproducibility covers
processors of one maker, and PyTorch has no switch to keep ATen off VML. The replacements run only in a
process pinned for portable kernels (:func:`benchmark.core.kernels.apply_portable` calls :func:`install`);
native runs use ATen's own kernels. They cost a few extra elementwise passes per call.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

_LIBRARY: torch.library.Library | None = None
_LN = {"log2": math.log(2.0), "log10": math.log(10.0)}


def exact_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``√x`` elementwise from IEEE-exact operations only (module docstring): correctly rounded for float32
    (and float16/bfloat16 via float32), within one ulp for float64; integers give the default float type,
    complex numbers ``√|z| · e^{i·arg(z)/2}``. ``sqrt(±0) = ±0``, ``sqrt(inf) = inf``, negatives and NaN
    give NaN."""
    if x.is_complex():
        return torch.polar(exact_sqrt(x.abs()), x.angle() * 0.5)
    if not x.is_floating_point():
        return exact_sqrt(x.to(torch.get_default_dtype()))
    if x.dtype in (torch.float16, torch.bfloat16):
        return exact_sqrt(x.float()).to(x.dtype)
    if x.dtype == torch.float32:
        d = x.double()
        y = (d * torch.rsqrt(d)).float()
        lo = torch.nextafter(y, torch.full_like(y, -math.inf))
        hi = torch.nextafter(y, torch.full_like(y, math.inf))
        below = (lo.double() + y.double()) * 0.5  # midpoints: 25 significant bits, squares exact in float64
        above = (y.double() + hi.double()) * 0.5
        y = torch.where(d < below * below, lo, torch.where(d > above * above, hi, y))
    else:
        y = x * torch.rsqrt(x)
        y = 0.5 * (y + x / y)
    return torch.where((x == 0) | (x == math.inf), x, y)  # 0·rsqrt(0) and inf·rsqrt(inf) are NaN


def _pow(x: torch.Tensor, exponent: Any) -> torch.Tensor:
    if not isinstance(exponent, complex) and exponent == 0.5 and (x.is_floating_point() or x.is_complex()):
        return exact_sqrt(x)
    return torch.pow(x, torch.tensor(exponent))  # pow(Tensor, Tensor): std::pow, no VML special case


def _log(base: str):  # type: ignore[no-untyped-def]
    def log_b(x: torch.Tensor) -> torch.Tensor:
        if x.is_complex() or x.dtype == torch.float64:
            return torch.log(x) / _LN[base]
        out = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        return (torch.log(x.double()) / _LN[base]).to(out)

    return log_b


def _atan(x: torch.Tensor) -> torch.Tensor:
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    return torch.atan2(x, torch.ones((), dtype=x.dtype))


def _via_float64(formula):  # type: ignore[no-untyped-def]
    """``formula`` evaluated in float64 (float32 and smaller are rounded back once; integers give the
    default float type)."""

    def op(x: torch.Tensor) -> torch.Tensor:
        if x.is_complex():
            raise NotImplementedError("portable kernels: complex inverse trigonometry is not covered")
        out = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        return formula(x.double()).to(out)

    return op


def _asin(x: torch.Tensor) -> torch.Tensor:
    return torch.atan2(x, exact_sqrt((1 - x) * (1 + x)))


def _acos(x: torch.Tensor) -> torch.Tensor:
    return torch.atan2(exact_sqrt((1 - x) * (1 + x)), x)


def _tan(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) / torch.cos(x)


def _out(fn):  # type: ignore[no-untyped-def]
    def write(x: torch.Tensor, *args: Any, out: torch.Tensor) -> torch.Tensor:
        value = fn(x, *args)
        out.resize_(value.shape)
        return out.copy_(value)

    return write


def _inplace(fn):  # type: ignore[no-untyped-def]
    def write(x: torch.Tensor, *args: Any) -> torch.Tensor:
        value = fn(x, *args)
        if not torch.can_cast(value.dtype, x.dtype):
            raise RuntimeError(f"result type {value.dtype} can't be cast to the desired output type {x.dtype}")
        return x.copy_(value)

    return write


def replacements() -> dict[str, Any]:
    """ATen overload name → the CPU kernel :func:`install` registers for it."""
    table: dict[str, Any] = {}
    for name, fn in (("sqrt", exact_sqrt), ("log2", _log("log2")), ("log10", _log("log10")), ("atan", _atan),
                     ("asin", _via_float64(_asin)), ("acos", _via_float64(_acos)), ("tan", _via_float64(_tan))):
        table.update({name: fn, f"{name}_": _inplace(fn), f"{name}.out": _out(fn)})
    table.update({"pow.Tensor_Scalar": _pow, "pow_.Scalar": _inplace(_pow), "pow.Tensor_Scalar_out": _out(_pow)})
    return table


def install() -> None:
    """Register :func:`replacements` for ATen's CPU dispatch key in this process (idempotent). PyTorch
    warns when an existing kernel is overridden; that is the intent here, so the warning is silenced."""
    global _LIBRARY
    if _LIBRARY is not None:
        return
    library = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn in replacements().items():
            library.impl(name, fn, "CPU")
    _LIBRARY = library


def installed() -> bool:
    """Whether this process runs the replacements."""
    return _LIBRARY is not None
