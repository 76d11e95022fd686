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

**Measured** (``tests/test_portable.py``: ``tests/portable_probe.py`` hashed natively and under ``qemu-x86_64
-cpu Haswell-v4``, which reports a GenuineIntel processor and computes ``rsqrtps``/``rcpps`` exactly): of
261 hashes (~70 float ops forward and backward in float32 and float64, some over magnitudes e^±5 to e^±40;
convolutions, pooling, interpolation, normalisation layers, attention, FFT, linear algebra, optimisers,
training steps, numpy and scipy), the pins alone leave 29 different: ``sqrt`` and what calls it
(``pow(x, 0.5)``, ``float_power``, ``cdist``, the gradient of ``pow(x, 1.5)``, Adam, RMSprop, training),
``log2``, ``log10``, ``atan``, and in float64 ``asin`` and ``tan`` (``acos`` and AdamW in an earlier probe).
``exp``, ``log``, ``tanh``, ``erf``, ``sin``, ``cos``, ``atan2``, ``rsqrt``, GEMM and the FFT agree bit for bit.
With the replacements all 261 agree.

**What this module does.** :func:`install` registers, for the CPU dispatch key only (autograd formulas and
every other device are untouched), replacements of those ops built from ATen ops that do not reach VML
(elementwise arithmetic, ``rsqrt``, ``nextafter``, ``atan2``, libm's ``log``/``sin``/``cos`` through
``xlogy`` and ``polar``):

* ``sqrt`` (and ``pow`` with exponent 0.5), float32: the correctly rounded square root. A first guess
  ``y = round32(x * rsqrt(x))`` (in float64) is within one float32 ulp; it is corrected by the exact
  midpoint test: with ``m`` the midpoint between ``y`` and a neighbour (25 significant bits, so ``m²`` is
  exact in float64), ``√x < m`` iff ``x < m²``. A square root of a float32 is never exactly at a midpoint, so
  this is IEEE's ``sqrt``, on every host. float64: ``x * rsqrt(x)`` and one Heron step (within an ulp, not
  correctly rounded). float16/bfloat16 go through float32; complex numbers by Kahan's formula.
* ``pow``: ATen's own special cases (exponent 0, 1, 2, 3, -1, -2 by multiplication, -0.5 as ``rsqrt``),
  0.5 as above, and any other exponent through the elementwise ``pow(Tensor, Tensor)`` kernel
  (``std::pow``) with the exponent in the result's type, as ATen's scalar-exponent kernel does.
  Negative integer powers of integers are refused, as ATen does.
* ``log2``/``log10``: ``ln(x) / ln(b)`` in float64 with libm's ``log``, rounded to the input's type; exact
  powers of ``b`` give exact integers.
* ``atan``: ``atan2(x, 1)``.
* ``asin``, ``acos``, ``tan``: ``atan2(x, √((1−x)(1+x)))``, ``atan2(√((1−x)(1+x)), x)`` and
  ``sin(x) / cos(x)`` in float64, rounded to the input's type. Complex ``atan``, ``log2``/``log10`` and
  trigonometry are refused (``NotImplementedError``) rather than computed wrongly.

This is written here because no library offers it: MKL's conditional numerical reproducibility covers
processors of one maker, and PyTorch has no switch to keep ATen off VML. The replacements run only in a
process pinned for portable kernels (:func:`benchmark.core.kernels.apply_portable` calls :func:`install`);
native runs use ATen's own kernels. They cost a few extra elementwise passes per call (Adam's ``sqrt`` in
one small-matrix cell: 0.24 s of its ~20 s of training).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

_LIBRARY: torch.library.Library | None = None
_LN = {"log2": math.log(2.0), "log10": math.log(10.0)}


def exact_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``√x`` elementwise from exact operations only (module docstring): correctly rounded for float32 (and
    float16/bfloat16 via float32), within one ulp for float64; integers give the default float type, complex
    numbers the principal root by Kahan's formula. ``sqrt(±0) = ±0``, ``sqrt(inf) = inf``, negatives and NaN
    give NaN."""
    if x.is_complex():
        return _complex_sqrt(x)
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


def _complex_sqrt(z: torch.Tensor) -> torch.Tensor:
    """Principal ``√z`` (Kahan): ``t = √((|a| + |z|) / 2)``; ``a ≥ 0``: ``t + i·b/(2t)``, else
    ``|b|/(2t) + i·copysign(t, b)``. ATen's complex sqrt never reached VML; a replacement is still needed
    because the override covers every dtype of the op."""
    a, b = z.real, z.imag
    t = exact_sqrt((a.abs() + z.abs()) * 0.5)
    half = torch.where(t == 0, torch.zeros_like(t), b / (2 * t))
    re = torch.where(a >= 0, t, half.abs())
    im = torch.where(a >= 0, half, torch.copysign(t, b))
    return torch.complex(re, im)


# Exponents ATen's scalar-exponent kernel computes by multiplication (exact on every host): kept.
_BY_PRODUCT = {2: lambda x: x * x, 3: lambda x: x * x * x, -1: torch.reciprocal, -2: lambda x: (x * x).reciprocal()}


def _pow(x: torch.Tensor, exponent: Any) -> torch.Tensor:
    """``pow(x, exponent)`` with ATen's special cases (0, 1, ±2, 3, -1, -0.5 as in its kernel), 0.5 as
    :func:`exact_sqrt`, and any other exponent through the elementwise ``pow(Tensor, Tensor)`` kernel
    (``std::pow``), the exponent in the result's type."""
    dtype = torch.result_type(x, exponent)
    if not (dtype.is_floating_point or dtype.is_complex):
        if not isinstance(exponent, bool) and exponent < 0:
            raise RuntimeError("Integers to negative integer powers are not allowed.")
        return torch.pow(x, torch.tensor(exponent, dtype=dtype))
    x = x.to(dtype)
    if not isinstance(exponent, complex):
        if exponent == 0:
            return torch.ones_like(x)
        if exponent == 1:
            return x.clone()
        if exponent == 0.5 and not dtype.is_complex:
            return exact_sqrt(x)
        if exponent == -0.5 and not dtype.is_complex:
            return torch.rsqrt(x)
        if exponent in _BY_PRODUCT:
            return _BY_PRODUCT[int(exponent)](x)
    return torch.pow(x, torch.tensor(exponent, dtype=dtype))


def _log(base: str):  # type: ignore[no-untyped-def]
    """``log_b(x) = ln(x) / ln(b)`` with libm's ``log`` (``xlogy(1, x)``, not VML), in float64 and rounded to
    the input's type; a float64 result within 1e-9 of an integer ``k`` with ``b**k == x`` exactly is ``k``."""
    b = 2.0 if base == "log2" else 10.0

    def log_b(x: torch.Tensor) -> torch.Tensor:
        if x.is_complex():
            raise NotImplementedError(f"portable kernels: complex {base} is not covered")
        out = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        d = x.double()
        y = torch.special.xlogy(torch.ones((), dtype=torch.float64), d) / _LN[base]
        k = torch.round(y)
        exact = ((y - k).abs() < 1e-9) & (torch.pow(torch.full_like(k, b), k) == d)
        return torch.where(exact, k, y).to(out)

    return log_b


def _atan(x: torch.Tensor) -> torch.Tensor:
    if x.is_complex():
        raise NotImplementedError("portable kernels: complex atan is not covered")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    return torch.atan2(x, torch.ones((), dtype=x.dtype))


def _via_float64(formula):  # type: ignore[no-untyped-def]
    """``formula`` evaluated in float64 (float32 and smaller are rounded back once; integers give the
    default float type)."""

    def op(x: torch.Tensor) -> torch.Tensor:
        if x.is_complex():
            raise NotImplementedError("portable kernels: complex trigonometry is not covered")
        out = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        return formula(x.double()).to(out)

    return op


def _asin(x: torch.Tensor) -> torch.Tensor:
    return torch.atan2(x, exact_sqrt((1 - x) * (1 + x)))


def _acos(x: torch.Tensor) -> torch.Tensor:
    return torch.atan2(exact_sqrt((1 - x) * (1 + x)), x)


def _tan(x: torch.Tensor) -> torch.Tensor:
    unit = torch.polar(torch.ones_like(x), x)  # std::cos and std::sin (libm), not VML's
    return unit.imag / unit.real


def _castable(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``value``, if ATen would write it into ``target`` (its error otherwise)."""
    if not torch.can_cast(value.dtype, target.dtype):
        raise RuntimeError(f"result type {value.dtype} can't be cast to the desired output type {target.dtype}")
    return value


def _out(fn):  # type: ignore[no-untyped-def]
    def write(x: torch.Tensor, *args: Any, out: torch.Tensor) -> torch.Tensor:
        value = _castable(fn(x, *args), out)
        out.resize_(value.shape)
        return out.copy_(value)

    return write


def _inplace(fn):  # type: ignore[no-untyped-def]
    def write(x: torch.Tensor, *args: Any) -> torch.Tensor:
        return x.copy_(_castable(fn(x, *args), x))

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
