"""The selective scan of Mamba (Gu & Dao, "Mamba: linear-time sequence modeling with selective state
spaces", arXiv 2312.00752, 2023, Sec. 3 and Algorithm 2), in pure PyTorch for the CPU, with the CUDA kernel
of ``mamba_ssm`` used instead when it is installed (``pip install 'ldct-bench[gpu]'``) and the tensors are
on CUDA.

Formula, per sequence, channel ``d``, state ``n`` and position ``t = 0 … L−1`` (``h_{−1} = 0``)::

    Δ_t  = softplus(δ_t + δ_bias)              (δ_t itself when ``delta_softplus`` is False)
    h_t  = exp(Δ_t · A[d, n]) · h_{t−1} + Δ_t · B_t[n] · u_t       (zero-order hold of A, Euler step of B)
    y_t  = Σ_n C_t[n] · h_t[n] + D[d] · u_t
    y_t ← y_t · silu(z_t)                        (when the gate ``z`` is given)

:func:`selective_scan` has the signature and shapes of ``mamba_ssm``'s ``selective_scan_fn`` —
``u, delta, z (batch, d, L)``, ``A (d, n)``, ``B, C (batch, n, L)``, ``D, delta_bias (d,)`` → ``(batch, d, L)``
— so the two are interchangeable. :func:`selective_scan_batched` is the same scan for ``p`` further
independent sequences per batch element stored innermost — ``u, delta, z (batch, L, d, p)``,
``B, C (batch, L, n, p)`` — the layout in which DenoMamba's channel SSM (one short sequence per pixel) runs
without transposing its large ``B``, ``C``. Values are unbounded; ``A ≤ 0`` and ``Δ ≥ 0`` keep the
recurrence stable (Mamba's ``A = −exp(A_log)`` and softplus guarantee both).

The PyTorch scan is chunked (:class:`SelectiveScan`). The sequence is cut into ``K`` chunks of ``T``
positions — ``K ≈ √L``, fewer when a single position already has ~10⁶ state elements in parallel (see
:func:`chunking`); a padded tail has ``Δ = 0``, which carries the state through unchanged — and the
recurrence runs in three phases, each a loop of whole-tensor operations over all chunks (and batch
elements, channels, states) at once: (1) the state each chunk reaches from a zero start, ``T`` steps;
(2) the chunks' start states ``s(k) = exp(A·ΣΔ over chunk k−1)·s(k−1) + end(k−1)``, ``K`` steps on one state
per chunk; (3) the exact states and outputs from those starts, ``T`` steps. So ``2T + K`` dependent steps
(``3√L`` for ``K = T``; never one step per position once ``L ≥ 4``), ``O(L·d·n)`` work, any length (no padding to a power of
two), any floating dtype, and only products of decays ``exp(Δ·A) ∈ (0, 1]``: no division and no
``exp(−cumsum)``, so nothing overflows (an underflow to 0 is the correct limit of the decay). Between the
passes only the inputs and the ``K`` chunk start states are kept — ``O(L·(d + n))`` per layer, as with the
CUDA kernel, not autograd's several ``L·d·n`` tensors per operation; the backward pass recomputes the states
chunk-parallel into a buffer reused across calls (``2·L·d·n`` elements while one layer's backward runs,
:func:`release_workspace`) and runs the adjoint recurrence ``∂h_t = C_t·∂y_t + exp(Δ_{t+1}A)·∂h_{t+1}`` with
the same phases backwards. The forward pass holds two ``(batch, K, n, d, p)`` tensors. ``exp`` is evaluated
as ``exp2(Δ·A·log₂e)``, several times faster on a CPU.

Why not ``mambapy`` (A. Torres-Leguet's pure-PyTorch Mamba, PyPI ``mambapy`` 1.2.0, downloaded and read for
this module)? Its Blelloch ``pscan`` is log-depth and numerically sound (it, too, only multiplies decays), but

* its ``selective_scan`` materialises ``exp(ΔA)``, ``ΔB·u`` and the states as ``(batch, L, d, n)`` tensors
  that autograd keeps until the backward pass: three ``L·d·n`` tensors for each of DenoMamba's 84 Mamba
  layers, ~16 GB for a batch of four 64×64 patches at the default width, where the scan here keeps
  ``O(L·(d + n))`` per layer;
* it was 4–7× slower: forward + backward of one scan on one CPU core (two runs), ``(batch 4, L 4096, d 96,
  n 16)`` 1.6–1.9 s against 0.22–0.26 s here, ``(4, 4096, 192, 16)`` 3.2–3.3 s against 0.47–0.48 s,
  ``(4, 1024, 192, 16)`` 0.63–0.71 s against 0.12–0.16 s;
* it pads every length to the next power of two: DenoMamba's channel SSM runs over 48/96/192/384
  channels → 64/128/256/512 (+33 % work at every level), a 37×45 crop over 2048 tokens instead of 1920;
* its ``MambaBlock`` selects the CUDA kernel by a config flag at construction (printing when the import
  fails) instead of by the tensors' device, casts ``A`` and ``D`` to float32 (a float64 gradcheck is not
  float64 throughout), and has no layout for many short sequences per batch element.

So the scan is written here and the Mamba layer lives in :mod:`models.mamba`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

LOG2E = 1.0 / math.log(2.0)
_CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # what the kernel is compiled for
BACKENDS = ("auto", "torch", "cuda")


@functools.cache
def _cuda_kernel() -> Callable[..., torch.Tensor] | None:
    """``mamba_ssm``'s ``selective_scan_fn``, or None when the extra ``gpu`` is not installed."""
    try:  # optional extra, imported on first use with CUDA tensors only (mamba_ssm loads triton and CUDA code)
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn  # type: ignore[no-any-return]


def cuda_kernel_available() -> bool:
    """Whether ``mamba_ssm``'s ``selective_scan_fn`` can be imported."""
    return _cuda_kernel() is not None


STEP_ELEMENTS = 1 << 20
"""The chunked scan keeps each step's tensors near this many elements (4 MB in float32): about √L chunks,
but fewer, longer ones when one position already has this many state elements in parallel."""


def chunking(length: int, width: int = 1) -> tuple[int, int]:
    """``(T, K)``: chunk length and number of chunks for a sequence of ``L = length`` positions with ``width``
    state elements each (``batch · d · n · p``). ``K ≈ √L``, but at most ``STEP_ELEMENTS / width`` and at
    least 2 (``L ≥ 4``: never one step per position); an exact divisor of ``L`` down to ``K/2`` is preferred
    (no padding), else the last chunk is padded."""
    floor = 2 if length >= 4 else 1
    target = max(floor, min(round(math.sqrt(length)), STEP_ELEMENTS // max(1, width)))
    for count in range(target, max(floor, target // 2) - 1, -1):
        if length % count == 0:
            return length // count, count
    chunk = -(-length // target)
    return chunk, -(-length // chunk)


_WORKSPACE: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def _workspace(like: torch.Tensor, numel: int) -> torch.Tensor:
    """A flat buffer of ``numel`` elements for the per-step decays and states of a backward pass, reused across
    calls (one per device and dtype, grown to the largest request): a fresh ``2·L·d·n`` allocation per call
    costs about as much as the scan in first-touch page faults. Each backward pass writes what it reads, and
    backward passes of one process run one at a time; :func:`release_workspace` frees it. The forward pass
    needs only two ``(batch, K, n, d, p)`` tensors, so inference on large images stays small."""
    key = (like.device, like.dtype)
    buffer = _WORKSPACE.get(key)
    if buffer is None or buffer.numel() < numel:
        _WORKSPACE.pop(key, None)
        buffer = _WORKSPACE[key] = like.new_empty(numel)
    return buffer[:numel]


def release_workspace() -> None:
    """Free the buffers kept by the PyTorch scan."""
    _WORKSPACE.clear()


def _split(x: torch.Tensor, chunk: int, count: int) -> torch.Tensor:
    """``(batch, L, f, p)`` → ``(batch, K, T, f, p)``, zero-padded at the end to ``K·T`` positions."""
    b, length, f, p = x.shape
    if count * chunk != length:
        x = F.pad(x, (0, 0, 0, 0, 0, count * chunk - length))
    return x.contiguous().view(b, count, chunk, f, p)


def _sum_n(h: torch.Tensor, v: torch.Tensor, out: torch.Tensor, tmp: torch.Tensor) -> None:
    """``out[b,k,d,p] = Σ_n h[b,k,n,d,p] · v[b,k,n,p]`` (a batched matrix product when ``p = 1``)."""
    b, k, n, d, p = h.shape
    if p == 1:
        out.copy_(torch.bmm(v.reshape(b * k, 1, n), h.view(b * k, n, d)).view(b, k, d, 1))
    else:
        torch.sum(torch.mul(h, v.unsqueeze(3), out=tmp), dim=2, out=out)


def _sum_d(h: torch.Tensor, v: torch.Tensor, out: torch.Tensor, tmp: torch.Tensor) -> None:
    """``out[b,k,n,p] = Σ_d h[b,k,n,d,p] · v[b,k,d,p]`` (a product and a sum: as matrix-vector products,
    slower)."""
    torch.sum(torch.mul(h, v.unsqueeze(2), out=tmp), dim=3, out=out)


class SelectiveScan(torch.autograd.Function):
    """``y_t = Σ_n C_t[n] h_t[n]``, ``h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t u_t`` — the chunked core of the
    PyTorch scan, on ``u, delta (batch, L, d, p)``, ``A (d, n)``, ``B, C (batch, L, n, p)`` → ``y (batch, L, d, p)``.
    The state of step ``t`` is a ``(batch, K, n, d, p)`` tensor — ``d, p`` innermost, so that every broadcast
    in the loops runs along a contiguous axis; see the module docstring for the phases."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor) -> torch.Tensor:
        batch, length, d, p = u.shape
        n = A.shape[1]
        chunk, count = chunking(length, batch * d * n * p)
        A2 = (A.t() * LOG2E).unsqueeze(-1)  # (n, d, 1): exp(Δ·A) = exp2(Δ·A·log2 e)
        dt, du = _split(delta, chunk, count), _split(delta * u, chunk, count)
        Bs, Cs = _split(B, chunk, count), _split(C, chunk, count)
        decay, tmp = u.new_empty(batch, count, n, d, p), u.new_empty(batch, count, n, d, p)

        def step(t: int, h: torch.Tensor) -> None:  # h ← exp(Δ_t A) h + Δ_t u_t B_t, in place
            torch.mul(dt[:, :, t].unsqueeze(2), A2, out=decay).exp2_()
            h.mul_(decay).addcmul_(du[:, :, t].unsqueeze(2), Bs[:, :, t].unsqueeze(3))

        start = u.new_zeros(batch, count, n, d, p)  # state entering each chunk
        if count > 1:
            h = u.new_zeros(batch, count, n, d, p)
            for t in range(chunk):  # phase 1: each chunk from a zero state
                step(t, h)
            through = torch.exp2(dt.sum(2).unsqueeze(2) * A2)  # a chunk's total decay exp(A·ΣΔ)
            for k in range(1, count):  # phase 2: chunk start states
                torch.addcmul(h[:, k - 1], through[:, k - 1], start[:, k - 1], out=start[:, k])
        h = start.clone()
        y = u.new_empty(batch, count, chunk, d, p)
        for t in range(chunk):  # phase 3: exact states and outputs
            step(t, h)
            _sum_n(h, Cs[:, :, t], y[:, :, t], tmp)
        ctx.save_for_backward(u, delta, A, B, C, start)
        return y.view(batch, count * chunk, d, p)[:, :length]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        u, delta, A, B, C, start = ctx.saved_tensors
        batch, length, d, p = u.shape
        n = A.shape[1]
        chunk, count = chunking(length, batch * d * n * p)
        A1 = A.t().unsqueeze(-1)  # (n, d, 1)
        A2 = A1 * LOG2E
        dt, du = _split(delta, chunk, count), _split(delta * u, chunk, count)
        Bs, Cs, gy = _split(B, chunk, count), _split(C, chunk, count), _split(grad_y, chunk, count)
        # the states and decays of every step, recomputed chunk-parallel from the saved chunk starts
        hs, decays = _workspace(u, 2 * chunk * count * batch * n * d * p).view(
            2, chunk, batch, count, n, d, p)
        h = start
        for t in range(chunk):
            torch.mul(dt[:, :, t].unsqueeze(2), A2, out=decays[t]).exp2_()
            torch.mul(h, decays[t], out=hs[t]).addcmul_(du[:, :, t].unsqueeze(2), Bs[:, :, t].unsqueeze(3))
            h = hs[t]
        # adjoint g_t = ∂L/∂h_t = C_t ∂y_t + exp(Δ_{t+1} A) g_{t+1}: the same three phases, backwards
        g = torch.zeros_like(start)
        if count > 1:
            for t in reversed(range(chunk)):  # what each chunk passes to the previous one, from zero
                g.addcmul_(gy[:, :, t].unsqueeze(2), Cs[:, :, t].unsqueeze(3)).mul_(decays[t])
            through = torch.exp2(dt.sum(2).unsqueeze(2) * A2)
            end = torch.zeros_like(start)  # adjoint entering each chunk from its end
            for k in reversed(range(count - 1)):
                torch.addcmul(g[:, k + 1], through[:, k + 1], end[:, k + 1], out=end[:, k])
            g = end
        grad_dt = u.new_empty(batch, count, chunk, d, p)
        grad_du = u.new_empty(batch, count, chunk, d, p)
        grad_B = u.new_empty(batch, count, chunk, n, p)
        grad_C = u.new_empty(batch, count, chunk, n, p)
        grad_A = torch.zeros_like(start)
        x, tmp = torch.empty_like(start), torch.empty_like(start)
        for t in reversed(range(chunk)):
            g.addcmul_(gy[:, :, t].unsqueeze(2), Cs[:, :, t].unsqueeze(3))  # g = ∂L/∂h_t
            torch.mul(g, hs[t - 1] if t else start, out=x).mul_(decays[t])  # ∂L/∂(Δ_t A)
            grad_A.addcmul_(x, dt[:, :, t].unsqueeze(2))
            torch.sum(x.mul_(A1), dim=2, out=grad_dt[:, :, t])
            _sum_n(g, Bs[:, :, t], grad_du[:, :, t], tmp)  # ∂L/∂(Δ_t u_t)
            _sum_d(g, du[:, :, t], grad_B[:, :, t], tmp)
            _sum_d(hs[t], gy[:, :, t], grad_C[:, :, t], tmp)
            g.mul_(decays[t])

        def whole(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, count * chunk, *x.shape[3:])[:, :length]

        grad_du_ = whole(grad_du)
        return (grad_du_ * delta, whole(grad_dt) + grad_du_ * u, grad_A.sum((0, 1, 4)).t(), whole(grad_B),
                whole(grad_C))


def _use_cuda(u: torch.Tensor, backend: str) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cuda" and _cuda_kernel() is None:
        raise RuntimeError("backend='cuda' needs mamba_ssm: pip install 'ldct-bench[gpu]'")
    return backend == "cuda" or (
        backend == "auto" and u.is_cuda and u.dtype in _CUDA_DTYPES and _cuda_kernel() is not None
    )


def selective_scan_batched(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """The selective scan of ``batch · p`` sequences stored ``(batch, L, d, p)`` (``B, C (batch, L, n, p)``),
    → ``(batch, L, d, p)``; the formula, ``A``, ``D``, ``delta_bias`` and ``backend`` as in :func:`selective_scan`."""
    if _use_cuda(u, backend):
        batch, length, d, p = u.shape

        def seq(x: torch.Tensor) -> torch.Tensor:  # (batch, L, f, p) → (batch·p, f, L)
            return x.permute(0, 3, 2, 1).reshape(batch * p, x.shape[2], length)

        kernel = _cuda_kernel()
        assert kernel is not None
        y = kernel(seq(u), seq(delta), A, seq(B), seq(C), D, None if z is None else seq(z), delta_bias,
                   delta_softplus)
        return y.reshape(batch, p, d, length).permute(0, 3, 2, 1)
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    y = SelectiveScan.apply(u, delta, A, B, C)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Mamba's selective scan, ``(batch, d, L)`` → ``(batch, d, L)`` (formula and shapes in the module docstring).

    ``backend``: ``"auto"`` uses the ``mamba_ssm`` CUDA kernel when it is installed, the tensors are on CUDA
    and in a dtype it is compiled for (float32/16, bfloat16), else the PyTorch scan; ``"torch"`` forces the
    PyTorch scan (the reference); ``"cuda"`` forces the kernel (``RuntimeError`` when it is not installed).
    """

    def seq(x: torch.Tensor) -> torch.Tensor:  # (batch, f, L) → (batch, L, f, 1): views, no copy
        return x.transpose(1, 2).unsqueeze(-1)

    # One dispatch and one PyTorch path, those of the batched layout (p = 1). On the kernel's side its
    # (batch, L, f, 1) → (batch, f, L) reshape gives back the caller's own tensors as views.
    y = selective_scan_batched(seq(u), seq(delta), A, seq(B), seq(C), D, None if z is None else seq(z), delta_bias,
                               delta_softplus, backend=backend)
    return y.squeeze(-1).transpose(1, 2)


__all__ = ["SelectiveScan", "chunking", "cuda_kernel_available", "release_workspace", "selective_scan",
           "selective_scan_batched"]
