"""The Mamba layer (Gu & Dao, "Mamba: linear-time sequence modeling with selective state spaces",
arXiv 2312.00752, 2023, Fig. 3 and Sec. 3.4), the sequence mixer of DenoMamba's FuseSSM blocks.

``(batch, L, d_model)`` → ``(batch, L, d_model)``, causal along ``L``::

    x, z = split(in_proj(u))                         two branches of d_inner = expand · d_model
    x    = silu(causal depthwise conv1d_{d_conv}(x))
    Δ, B, C = split(x_proj(x))                       Δ of rank dt_rank = ceil(d_model / 16), B, C of d_state
    Δ    = softplus(dt_proj(Δ))                      (the bias of dt_proj is added inside the scan)
    y    = selective_scan(x, Δ, A = −exp(A_log), B, C, D) · silu(z)
    out  = out_proj(y)

Initialisation as in the paper: ``A[d, n] = −(n + 1)`` (S4D-real), ``D = 1``, ``dt_proj`` weight uniform in
``±dt_rank^−½`` and bias the inverse softplus of ``Δ₀`` drawn log-uniformly in ``[dt_min, dt_max]``.
The scan is :func:`models.selective_scan.selective_scan_batched`: the CUDA kernel of ``mamba_ssm`` for CUDA
tensors when it is installed, otherwise the pure-PyTorch scan (both train). Values are unbounded; the
layer works in any floating dtype (float64 for gradient checks).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.selective_scan import selective_scan_batched


class Mamba(nn.Module):
    """One Mamba mixer. ``d_model`` features per token; ``d_state`` N, ``d_conv`` kernel, ``expand`` E."""

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv), ("expand", expand)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1,
                                bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        with torch.no_grad():
            std = self.dt_rank**-0.5
            self.dt_proj.weight.uniform_(-std, std)
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``u (batch, L, d_model)`` → ``(batch, L, d_model)``. Kept in the ``(batch, L, features)`` layout
        throughout (the PyTorch scan's layout); the CUDA kernel gets ``(batch, features, L)`` copies."""
        length = u.shape[1]
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (batch, L, d_inner) each
        x = self.conv1d(x.transpose(1, 2))[..., :length]  # causal: the left padding only, the tail cut
        x = F.silu(x.transpose(1, 2).contiguous())
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = dt @ self.dt_proj.weight.t()  # (batch, L, d_inner); the bias is added in the scan
        y = selective_scan_batched(x.unsqueeze(-1), delta.unsqueeze(-1), -torch.exp(self.A_log), B.unsqueeze(-1),
                                   C.unsqueeze(-1), self.D, z=z.unsqueeze(-1), delta_bias=self.dt_proj.bias,
                                   delta_softplus=True)
        return self.out_proj(y.squeeze(-1))

    def forward_batched(self, u: torch.Tensor) -> torch.Tensor:
        """The same layer on ``p`` independent sequences per batch element stored innermost:
        ``u (batch, L, d_model, p)`` → ``(batch, L, d_model, p)``, equal to :meth:`forward` on each ``u[..., i]``.
        Projections act on axis 2 and the causal convolution is a sum of shifted copies, so nothing is
        transposed (DenoMamba's channel SSM: one short sequence per pixel, pixels innermost)."""
        length = u.shape[1]
        x = _project(u, self.in_proj.weight[: self.d_inner])
        z = _project(u, self.in_proj.weight[self.d_inner:])
        if self.in_proj.bias is not None:
            x = x + self.in_proj.bias[: self.d_inner, None]
            z = z + self.in_proj.bias[self.d_inner:, None]
        weight = self.conv1d.weight[:, 0, :, None]  # (d_inner, d_conv, 1)
        xp = F.pad(x, (0, 0, 0, 0, self.d_conv - 1, 0))
        conv = weight[:, 0] * xp[:, :length]
        for j in range(1, self.d_conv):
            conv = torch.addcmul(conv, weight[:, j], xp[:, j:j + length])
        if self.conv1d.bias is not None:
            conv = conv + self.conv1d.bias[:, None]
        x = F.silu(conv)
        w_dt, w_B, w_C = self.x_proj.weight.split([self.dt_rank, self.d_state, self.d_state])
        delta = _project(_project(x, w_dt), self.dt_proj.weight)
        y = selective_scan_batched(x, delta, -torch.exp(self.A_log), _project(x, w_B), _project(x, w_C), self.D,
                                   z=z, delta_bias=self.dt_proj.bias, delta_softplus=True)
        out = _project(y, self.out_proj.weight)
        return out if self.out_proj.bias is None else out + self.out_proj.bias[:, None]


def _project(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``Σ_f weight[o, f] · x[:, :, f, :]``: a linear map over axis 2 of ``(batch, L, f, p)`` → ``(batch, L, o, p)``,
    as one batched matrix product (no transposition of ``x``, unlike ``weight @ x``)."""
    b, length, f, p = x.shape
    return torch.bmm(weight.expand(b * length, *weight.shape), x.reshape(b * length, f, p)).view(b, length, -1, p)


__all__ = ["Mamba"]
