"""Hashes of ~70 float ops, three optimisers, three DnCNN training steps and numpy/scipy BLAS, computed in a
process pinned for portable kernels; printed as JSON. ``tests/test_portable.py`` runs it natively and under
an emulated processor of another maker and compares. ``--control`` leaves out the replacements of
:mod:`benchmark.core.portable_ops` (the pins alone), to show that the emulation can tell the difference.

Run it under ``python -m benchmark.core.kernels --threads 2``'s environment (the test does)."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import scipy.linalg
import scipy.ndimage
import torch
import torch.nn.functional as F

from benchmark.core import kernels


def _hash(t: object) -> str:
    a = t.detach().contiguous().numpy() if isinstance(t, torch.Tensor) else np.ascontiguousarray(t)
    return hashlib.sha256(a.tobytes()).hexdigest()[:16]


ELEMENTWISE = {
    "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "pow0.5": lambda x: x.pow(0.5), "pow1.5": lambda x: x.pow(1.5),
    "pow-0.5": lambda x: x.pow(-0.5), "pow2": lambda x: x.pow(2), "float_power": lambda x: x.float_power(0.5),
    "exp": torch.exp, "expm1": torch.expm1, "exp2": torch.exp2, "log": torch.log, "log2": torch.log2,
    "log10": torch.log10, "log1p": torch.log1p, "sin": torch.sin, "cos": torch.cos, "tan": torch.tan,
    "atan": torch.atan, "asin": lambda x: torch.asin(x / 5), "acos": lambda x: torch.acos(x / 5),
    "atan2": lambda x: torch.atan2(x, x.flip(0)), "sinh": torch.sinh, "cosh": torch.cosh, "tanh": torch.tanh,
    "asinh": torch.asinh, "atanh": lambda x: torch.atanh(x / 5), "erf": torch.erf, "erfc": torch.erfc,
    "erfinv": lambda x: torch.erfinv(x / 5), "lgamma": torch.lgamma, "sigmoid": torch.sigmoid,
    "reciprocal": torch.reciprocal, "hypot": lambda x: torch.hypot(x, x.flip(0)), "softplus": F.softplus,
    "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu, "mish": F.mish,
    "elu": F.elu, "logsigmoid": F.logsigmoid, "softmax": lambda x: x.view(200, 200).softmax(-1),
    "logsumexp": lambda x: x.view(200, 200).logsumexp(-1), "var": lambda x: x.view(200, 200).var(-1),
    "norm": lambda x: x.view(200, 200).norm(dim=-1), "normalize": lambda x: F.normalize(x.view(200, 200), dim=-1),
    "cdist": lambda x: torch.cdist(x.view(200, 200)[:50], x.view(200, 200)[50:100]),
    "cumsum": lambda x: x.cumsum(0), "mean": lambda x: x.mean(), "quantile": lambda x: torch.quantile(x[:9000], 0.3),
}  # fmt: skip
POSITIVE_ONLY = {"sqrt", "rsqrt", "pow0.5", "pow1.5", "pow-0.5", "float_power", "log", "log2", "log10"}
# Also probed over many magnitudes (|x| from e^-40 to e^40 for the positive-only ops, e^-5..e^5 otherwise).
WIDE = {"sqrt", "rsqrt", "pow0.5", "pow-0.5", "log", "log2", "log10", "exp", "expm1", "exp2", "log1p", "sin", "cos",
        "tan", "atan", "sinh", "cosh", "tanh", "asinh", "erf", "erfc", "sigmoid", "softplus", "gelu", "silu",
        "reciprocal", "atan2", "hypot", "lgamma"}  # fmt: skip

LAYERS = {
    "conv": lambda x, w: F.conv2d(x, w, padding=1), "conv_t": lambda x, w: F.conv_transpose2d(x, w, stride=2),
    "conv_dilated": lambda x, w: F.conv2d(x, w, padding=2, dilation=2), "avg_pool": lambda x, w: F.avg_pool2d(x, 2),
    "max_pool": lambda x, w: F.max_pool2d(x, 2), "bilinear": lambda x, w: F.interpolate(x, scale_factor=2, mode="bilinear"),
    "bicubic": lambda x, w: F.interpolate(x, size=(57, 57), mode="bicubic"), "instance_norm": lambda x, w: F.instance_norm(x),
    "layer_norm": lambda x, w: F.layer_norm(x, x.shape[1:]), "group_norm": lambda x, w: F.group_norm(x, 4),
    "batch_norm": lambda x, w: F.batch_norm(x, None, None, training=True), "unfold": lambda x, w: F.unfold(x, 3),
    "bmm": lambda x, w: torch.bmm(x.view(32, 40, 40), x.view(32, 40, 40).transpose(1, 2)),
    "attention": lambda x, w: F.scaled_dot_product_attention(*(x.view(4, 8, 40, 40),) * 3),
    "rfft2": lambda x, w: torch.fft.rfft2(x).abs(), "mse": lambda x, w: F.mse_loss(x, x.flip(-1)),
    "l1": lambda x, w: F.l1_loss(x, x.flip(-1)), "smooth_l1": lambda x, w: F.smooth_l1_loss(x, x.flip(-1)),
}  # fmt: skip


def probe(control: bool) -> dict[str, str]:
    kernels.apply_portable(2, replace_ops=not control)
    out: dict[str, str] = {}
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        positive = (torch.rand(40000, generator=g) + 0.01).to(dtype)
        real = torch.randn(40000, generator=g).to(dtype)
        scale = torch.rand(40000, generator=g, dtype=torch.float64) * 2 - 1
        wide_positive = torch.exp(40 * scale).to(dtype)
        wide_real = (torch.randn(40000, generator=g, dtype=torch.float64) * torch.exp(5 * scale)).to(dtype)
        for name, fn in ELEMENTWISE.items():
            domains = [("pos", positive), ("real", real), ("wide", wide_positive if name in POSITIVE_ONLY else wide_real)]
            for domain, x in domains:
                if (domain == "real" and name in POSITIVE_ONLY) or (domain == "wide" and name not in WIDE):
                    continue
                xx = x.clone().requires_grad_(True)
                y = fn(xx)
                (grad,) = torch.autograd.grad(y.sum(), xx)
                out[f"{name}/{domain}/{dtype}"] = _hash(y) + ":" + _hash(grad)
    image, weight = torch.randn(4, 8, 40, 40, generator=g), torch.randn(8, 8, 3, 3, generator=g) * 0.1
    for name, fn in LAYERS.items():
        xx, ww = image.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        y = fn(xx, ww)
        grads = torch.autograd.grad(y.sum(), (xx, ww), allow_unused=True)
        out[name] = _hash(y) + "".join(":" + _hash(v) for v in grads if v is not None)
    out["linalg"] = ":".join(_hash(v) for v in (torch.linalg.eigh(weight.view(8, 72) @ weight.view(8, 72).T)[0],
                                                 torch.linalg.svdvals(weight.view(8, 72)), torch.linalg.inv(weight[0, 0])))  # fmt: skip
    for opt in (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop):
        p = torch.nn.Parameter(real[:1000].float().clone())
        step = opt([p], lr=5e-4)
        for i in range(3):
            p.grad = real[1000:2000].float() * (i + 1)
            step.step()
        out[f"optim/{opt.__name__}"] = _hash(p)
    from models import build_model  # the training step the tests of results/small rely on

    torch.manual_seed(0)
    net = build_model("dncnn", {"depth": 4, "channels": 16, "batch_norm": False, "init": "he"})
    opt = torch.optim.Adam(net.parameters(), lr=5e-4)
    x = torch.rand(4, 1, 32, 32, generator=g)
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(net(x), x + 0.01).backward()
        opt.step()
    out["train/dncnn"] = _hash(torch.cat([q.detach().flatten() for q in net.parameters()]))
    a = np.random.default_rng(0).standard_normal((300, 200))
    b = a.T @ a
    out["numpy"] = ":".join(_hash(v) for v in (a @ a.T, np.linalg.inv(b), np.linalg.eigvalsh(b), np.exp(a), np.sin(a)))
    out["scipy"] = ":".join(_hash(v) for v in (scipy.linalg.inv(b), scipy.linalg.sqrtm(b[:40, :40]).real,
                                                scipy.ndimage.gaussian_filter(a, 1.5)))  # fmt: skip
    return out


if __name__ == "__main__":
    print(json.dumps(probe("--control" in sys.argv[1:]), sort_keys=True))
