"""The pure-PyTorch selective scan against a sequential recurrence written here, its gradients, its chunking,
the Mamba layer built on it, and (with a GPU and ``mamba_ssm``) the CUDA kernel against the reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models import selective_scan as ss
from models.mamba import Mamba
from models.selective_scan import chunking, selective_scan, selective_scan_batched


def sequential_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The recurrence one position at a time, ``(batch, d, L)`` layout (Mamba, Gu & Dao 2023, eq. 2):
    h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t u_t,  y_t = C_t h_t + D u_t,  y_t ← y_t · silu(z_t)."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = torch.log1p(torch.exp(delta))
    batch, d, length = u.shape
    h = torch.zeros(batch, d, A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]  # (batch, d, 1)
        h = torch.exp(dt * A) * h + dt * B[:, None, :, t] * u[:, :, t, None]
        y = (h * C[:, None, :, t]).sum(-1)
        if D is not None:
            y = y + D * u[:, :, t]
        if z is not None:
            y = y * z[:, :, t] * torch.sigmoid(z[:, :, t])
        ys.append(y)
    return torch.stack(ys, dim=-1)


def _inputs(length, *, batch=2, d=3, n=4, dtype=torch.float64, seed=0, gate=True):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    return {
        "u": r(batch, d, length),
        "delta": r(batch, d, length),
        "A": -torch.exp(r(d, n)),
        "B": r(batch, n, length),
        "C": r(batch, n, length),
        "D": r(d),
        "z": r(batch, d, length) if gate else None,
        "delta_bias": r(d),
        "delta_softplus": True,
    }


@pytest.mark.parametrize("length", [1, 2, 7, 64, 100, 257])
def test_scan_equals_the_sequential_recurrence(length):
    x = _inputs(length)
    expected = sequential_scan(**x)
    assert torch.allclose(selective_scan(**x, backend="torch"), expected, rtol=0, atol=1e-5)
    bare = {**x, "D": None, "z": None, "delta_bias": None, "delta_softplus": False}
    bare["delta"] = bare["delta"].abs()
    assert torch.allclose(selective_scan(**bare), sequential_scan(**bare), rtol=0, atol=1e-5)


@pytest.mark.parametrize("length", [7, 100])
def test_gradients_equal_those_of_the_sequential_recurrence(length):
    x = _inputs(length, seed=1)
    leaves = {k: v.requires_grad_() for k, v in x.items() if isinstance(v, torch.Tensor)}
    weight = torch.randn(2, 3, length, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ours = torch.autograd.grad((selective_scan(**x) * weight).sum(), list(leaves.values()))
    reference = torch.autograd.grad((sequential_scan(**x) * weight).sum(), list(leaves.values()))
    for name, a, b in zip(leaves, ours, reference, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-5), name


def test_gradcheck_on_a_tiny_float64_case():
    x = _inputs(7, batch=1, d=2, n=3, seed=3)  # 7 = 3 chunks of 3, the last one padded
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    args = tuple(x[k].requires_grad_() for k in names)

    def fn(*tensors):
        return selective_scan(*tensors, delta_softplus=True, backend="torch")

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)


def test_batched_layout_is_the_same_scan_per_sequence():
    """``(batch, L, d, p)``: each of the p inner sequences is an ordinary scan."""
    x = _inputs(50, batch=2 * 5, d=2, n=4, seed=4)

    def inner(t):  # (batch·p, f, L) → (batch, L, f, p)
        return t.view(2, 5, t.shape[1], 50).permute(0, 3, 2, 1)

    y = selective_scan_batched(inner(x["u"]), inner(x["delta"]), x["A"], inner(x["B"]), inner(x["C"]), x["D"],
                               inner(x["z"]), x["delta_bias"], True)
    assert torch.allclose(y, inner(sequential_scan(**x)), rtol=0, atol=1e-10)



@pytest.mark.parametrize("length", [7, 50])
def test_batched_layout_gradients_equal_those_of_the_sequential_recurrence(length):
    """The ``p > 1`` backward pass (its own per-step layout and order) against autograd through the recurrence;
    7 positions: 3 chunks of 3, the last one padded."""
    x = _inputs(length, batch=2 * 3, d=2, n=4, seed=8)
    leaves = {k: v.requires_grad_() for k, v in x.items() if isinstance(v, torch.Tensor)}
    weight = torch.randn(6, 2, length, dtype=torch.float64, generator=torch.Generator().manual_seed(9))

    def inner(t):  # (batch·p, f, L) → (batch, L, f, p)
        return t.view(2, 3, t.shape[1], length).permute(0, 3, 2, 1)

    y = selective_scan_batched(inner(x["u"]), inner(x["delta"]), x["A"], inner(x["B"]), inner(x["C"]), x["D"],
                               inner(x["z"]), x["delta_bias"], True)
    ours = torch.autograd.grad((y * inner(weight)).sum(), list(leaves.values()))
    reference = torch.autograd.grad((sequential_scan(**x) * weight).sum(), list(leaves.values()))
    for name, a, b in zip(leaves, ours, reference, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-5), name

def test_chunking():
    for length in [1, 2, 3, 4, 7, 48, 64, 100, 257, 1920, 4096]:
        chunk, count = chunking(length)
        assert chunk * count >= length and chunk * count - length < chunk, length
        if length >= 4:
            assert count >= 2, "never one Python step per position"
    assert chunking(4096) == (64, 64)  # √L chunks of √L: 3·64 dependent steps instead of 4096
    assert chunking(96) == (12, 8)  # an exact divisor near √96: no padding
    assert chunking(257) == (17, 16)  # a prime: the last chunk padded
    # a position with 2^19 state elements in parallel (the channel SSM: one sequence per pixel): 2 chunks
    assert chunking(96, 1 << 19) == (48, 2)


@pytest.mark.parametrize("step_elements", [64, 1 << 20])
def test_long_chunks_and_many_chunks_give_the_same_result(monkeypatch, step_elements):
    monkeypatch.setattr(ss, "STEP_ELEMENTS", step_elements)
    x = _inputs(100, seed=5)
    assert torch.allclose(selective_scan(**x), sequential_scan(**x), rtol=0, atol=1e-10)


def test_strong_decay_does_not_overflow():
    """exp(Δ·A) far below float32's range: a cumulative-product/division formulation overflows here."""
    x = _inputs(300, dtype=torch.float32, seed=6, gate=False)
    x["A"] = torch.full_like(x["A"], -60.0)
    x["delta"] = torch.full_like(x["delta"], 3.0)  # softplus(3 + bias) ≈ 3: decay exp(−180) per step
    y = selective_scan(**x)
    assert torch.isfinite(y).all()
    ref = sequential_scan(**{k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in x.items()})
    assert torch.allclose(y.double(), ref, rtol=1e-4, atol=1e-4)


def test_backend_argument():
    x = _inputs(5)
    with pytest.raises(ValueError, match="backend"):
        selective_scan(**x, backend="triton")
    if not ss.cuda_kernel_available():
        with pytest.raises(RuntimeError, match="mamba_ssm"):
            selective_scan(**x, backend="cuda")


def test_kernel_gets_the_callers_tensors_through_the_one_dispatch(monkeypatch):
    """``selective_scan`` dispatches through ``selective_scan_batched`` (p = 1): the kernel must still receive
    the caller's ``(batch, d, L)`` tensors as they are (same storage, shape and strides), and its output comes
    back unchanged. A stand-in kernel records its arguments (no GPU needed)."""
    x = _inputs(9, seed=10)
    seen = {}

    def fake_kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        seen.update(u=u, delta=delta, B=B, C=C, z=z, rest=(A, D, delta_bias, delta_softplus))
        return u * 2

    monkeypatch.setattr(ss, "_cuda_kernel", lambda: fake_kernel)
    y = selective_scan(**x, backend="cuda")
    for name in ("u", "delta", "B", "C", "z"):
        got, given = seen[name], x[name]
        assert (got.data_ptr(), got.shape, got.stride()) == (given.data_ptr(), given.shape, given.stride()), name
    assert seen["rest"][0] is x["A"] and seen["rest"][1] is x["D"] and seen["rest"][2] is x["delta_bias"]
    assert seen["rest"][3] is True
    assert torch.equal(y, x["u"] * 2) and y.stride() == x["u"].stride()


def test_mamba_layer_init_and_causality():
    torch.manual_seed(0)
    layer = Mamba(8, d_state=16, d_conv=4, expand=2).double()
    s4d_real = -torch.arange(1, 17, dtype=torch.float64).repeat(16, 1)  # A[d, n] = −(n + 1)
    assert torch.allclose(-torch.exp(layer.A_log), s4d_real, rtol=1e-6, atol=0)
    assert torch.equal(layer.D, torch.ones(16, dtype=torch.float64))
    dt0 = F.softplus(layer.dt_proj.bias)
    assert (dt0 >= 1e-3 * (1 - 1e-6)).all() and (dt0 <= 0.1 * (1 + 1e-6)).all()
    assert layer.dt_rank == 1 and layer.conv1d.kernel_size == (4,)
    x = torch.randn(2, 30, 8, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 20:] += 1.0
    y, y2 = layer(x), layer(x2)
    assert torch.equal(y[:, :20], y2[:, :20])  # position t sees only positions ≤ t
    assert not torch.allclose(y[:, 20:], y2[:, 20:])


@pytest.mark.parametrize("d_model", [1, 3])
def test_mamba_batched_forward_equals_forward_per_sequence(d_model):
    torch.manual_seed(0)
    layer = Mamba(d_model, d_state=4).double()
    x = torch.randn(2, 9, d_model, 5, dtype=torch.float64)
    per_sequence = layer(x.permute(0, 3, 1, 2).reshape(10, 9, d_model)).reshape(2, 5, 9, d_model)
    assert torch.allclose(layer.forward_batched(x), per_sequence.permute(0, 2, 3, 1), rtol=0, atol=1e-12)


@pytest.mark.gpu
def test_cuda_kernel_matches_the_reference():
    pytest.importorskip("mamba_ssm")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    assert ss.cuda_kernel_available()
    x = _inputs(300, batch=2, d=8, n=16, dtype=torch.float32, seed=7)
    x["delta"] = x["delta"] * 0.5
    cuda = {k: (v.cuda().requires_grad_() if isinstance(v, torch.Tensor) else v) for k, v in x.items()}
    cpu = {k: (v.clone().requires_grad_() if isinstance(v, torch.Tensor) else v) for k, v in x.items()}
    y_cuda = selective_scan(**cuda, backend="cuda")
    y_ref = selective_scan(**cpu, backend="torch")
    scale = y_ref.abs().max().item()
    assert torch.allclose(y_cuda.cpu(), y_ref, rtol=1e-3, atol=1e-3 * scale)
    weight = torch.randn_like(y_ref)
    (y_cuda * weight.cuda()).sum().backward()
    (y_ref * weight).sum().backward()
    for name in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias"):
        g_ref = cpu[name].grad
        assert torch.allclose(cuda[name].grad.cpu(), g_ref, rtol=1e-2, atol=1e-2 * g_ref.abs().max().item()), name
    assert math.isfinite(scale)
