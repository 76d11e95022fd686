"""Training schemes: the frameworks a cell trains in, selected per architecture entry of the matrix
(``architectures: [{name: resnet_gen, scheme: cyclegan, scheme_kwargs: {...}}]``; default
``supervised``). ``SCHEMES`` maps the names to frozen :class:`SchemeInfo` records, filled in this one
place; :func:`build_scheme` builds one for a cell. See :mod:`benchmark.schemes.base` for the interface
the runner uses.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from benchmark.config import TrainingConfig
from benchmark.core.errors import UserError
from benchmark.core.registry import lookup
from benchmark.schemes.base import Diverged, Pairing, Scheme, SchemeInfo
from benchmark.schemes.cyclegan import CycleGAN
from benchmark.schemes.pix2pix import Pix2Pix
from benchmark.schemes.supervised import Supervised
from benchmark.schemes.unit import UNITScheme
from losses.base import CompositeLoss

# The one place where training schemes are registered.
SCHEMES: dict[str, SchemeInfo] = {
    "supervised": SchemeInfo(Supervised, "paired denoising on the cell's loss (adversarial terms train their own D)",
                             adversarial_terms=True, needs_loss=True, dims=(2, 3)),
    "pix2pix": SchemeInfo(Pix2Pix, "conditional GAN: conditional 70x70 PatchGAN, vanilla GAN + 100 L1",
                          "Isola et al., CVPR 2017"),
    "cyclegan": SchemeInfo(CycleGAN, "two generators, two 70x70 PatchGANs, LSGAN + 10 cycle + 5 identity, 50-image pools",
                           "Zhu et al., ICCV 2017", pairing="unpaired"),
    "unit": SchemeInfo(UNITScheme, "shared-latent VAE-GANs: two encoders/decoders sharing high-level layers, two D",
                       "Liu, Breuel & Kautz, NeurIPS 2017", pairing="unpaired", needs=("encode", "decode")),
}

# Constructor arguments the runner supplies; the rest are the scheme's options (``scheme_kwargs``).
_RESERVED = ("self", "model", "loss", "training", "rng", "steps", "build_network")


def scheme_options(name: str) -> list[str]:
    """The ``scheme_kwargs`` scheme ``name`` accepts."""
    info = lookup(SCHEMES, name, "scheme")
    return [p for p in inspect.signature(info.cls).parameters if p not in _RESERVED]


def check_options(name: str, kwargs: Mapping[str, Any], *, field: str) -> None:
    """A :class:`UserError` on ``field`` naming the options scheme ``name`` does not have, and the allowed ones."""
    allowed = scheme_options(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise UserError(f"scheme {name!r} has no option(s) {', '.join(unknown)}; allowed: {', '.join(allowed) or '(none)'}",
                        field=field)  # fmt: skip


def pairing(name: str, setting: str) -> Pairing:
    """How a cell of scheme ``name`` samples training batches: ``training.pairing``, or the scheme's
    default for ``auto``."""
    if setting == "auto":
        return lookup(SCHEMES, name, "scheme").pairing
    return "paired" if setting == "paired" else "unpaired"


def build_scheme(name: str, kwargs: Mapping[str, Any] | None, *, model: nn.Module, loss: CompositeLoss,
                 training: TrainingConfig, rng: torch.Generator, steps: int = 1,
                 build_network: Callable[[], nn.Module] | None = None, field: str = "architectures.scheme") -> Scheme:  # fmt: skip
    """Build scheme ``name`` for one cell. ``build_network`` makes another instance of the cell's
    architecture (CycleGAN's F). Unknown options, or a bad value, are a :class:`UserError` naming
    ``field``'s ``scheme_kwargs``."""
    info = lookup(SCHEMES, name, "scheme", field=field)
    kwargs = dict(kwargs or {})
    check_options(name, kwargs, field=f"{field}_kwargs")
    base: dict[str, Any] = {"model": model, "loss": loss, "training": training, "rng": rng, "steps": steps}
    if "build_network" in inspect.signature(info.cls).parameters:
        if build_network is None:
            raise ValueError(f"scheme {name!r} needs build_network")
        base["build_network"] = build_network
    try:
        return info.cls(**base, **kwargs)
    except (ValueError, TypeError) as exc:
        raise UserError(f"scheme {name!r}: {exc}", field=f"{field}_kwargs") from None


__all__ = ["SCHEMES", "Diverged", "Pairing", "Scheme", "SchemeInfo", "build_scheme", "check_options", "pairing", "scheme_options"]
