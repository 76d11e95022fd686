"""Perceptual loss with a pretrained VGG (Johnson et al., "Perceptual losses for real-time style
transfer and super-resolution", ECCV 2016; for LDCT: Yang et al., "Low-dose CT image denoising using
a generative adversarial network with Wasserstein distance and perceptual loss" (WGAN-VGG), IEEE TMI
37(6), 2018).

::

    vgg(ŷ, y) = Σ_{l ∈ layers} mean |φ_l(u(ŷ)) − φ_l(u(y))|^p,   p = 2 (``distance="l2"``) or 1

φ_l is the activation at a named layer of torchvision's VGG16/VGG19 ``features`` (``conv{b}_{i}``,
``relu{b}_{i}``, ``pool{b}``; block b counts from 1 and restarts i at each pooling). Defaults: VGG16 at
relu1_2, relu2_2, relu3_3, relu4_3 (Johnson et al.); VGG19 at relu1_2, relu2_2, relu3_4, relu4_4;
``preset="wgan_vgg"`` = VGG19 relu5_4 with L2 (WGAN-VGG's perceptual term).

Input ``(N, 1, H, W)`` in network normalisation ``(HU + 1024)/4096``; the mapping ``u`` to what VGG
expects:

1. to [0, 1]: ``window=None`` (default) uses the network value as it is, i.e. the identity of
   [−1024, 3072] HU onto [0, 1] without clipping; a window name or "lo,hi" (:mod:`benchmark.core.conventions`)
   clips HU to that window and scales it to [0, 1] (no gradient outside the window);
2. the single channel repeated to 3 (RGB);
3. ``imagenet_norm=True`` (default): ``(u − mean)/std`` with ImageNet's mean (0.485, 0.456, 0.406)
   and std (0.229, 0.224, 0.225), the statistics torchvision's weights were trained with.

The network is frozen (``requires_grad=False``, always in eval mode) and rebuilt from its weights file
(``benchmark.core.weights``: ``vgg16-397923af.pth`` / ``vgg19-dcbb9e9d.pth`` in ``$TORCH_HOME/hub/checkpoints``;
nothing is downloaded; a missing file is a UserError naming it and ``ldct-bench weights fetch``),
so checkpoints never hold it. Value ≥ 0, 0 for identical inputs.

``backbone="random"`` (with ``init_seed``) replaces the ImageNet weights by torchvision's random
initialisation from a seeded local generator: an untrained VGG, for offline CPU runs where the ImageNet
file cannot be had. It is a different loss (an untrained perceptual loss in VGG's shape, cf. uPL), and a
report must say "random VGG"; label such cells accordingly (e.g. ``vgg_random``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from benchmark.core.compat import ensure_torchvision
from benchmark.core.conventions import net_to_hu, parse_window, window_to_unit
from benchmark.core.weights import load_state_dict
from losses.features import DISTANCES, feature_distance

DEFAULT_LAYERS = {
    "vgg16": ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
    "vgg19": ("relu1_2", "relu2_2", "relu3_4", "relu4_4"),
}
PRESETS = {"wgan_vgg": {"arch": "vgg19", "layers": ("relu5_4",), "distance": "l2"}}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layer_names(features: nn.Sequential) -> list[str]:
    """Names of the modules of a torchvision VGG ``features`` stack, in order (module docstring)."""
    names, block, conv = [], 1, 0
    for m in features:
        if isinstance(m, nn.Conv2d):
            conv += 1
            names.append(f"conv{block}_{conv}")
        elif isinstance(m, nn.ReLU):
            names.append(f"relu{block}_{conv}")
        elif isinstance(m, nn.MaxPool2d):
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:
            raise ValueError(f"unexpected module {m!r} in VGG features")
    return names


BACKBONES = ("imagenet", "random")


def build_vgg_features(arch: str, backbone: str = "imagenet", init_seed: int = 0) -> nn.Sequential:
    """torchvision ``arch`` with its ImageNet weights file loaded (``backbone="imagenet"``), or with
    torchvision's random initialisation drawn from a local generator seeded by ``init_seed``
    (``"random"``: no file, the same network in every cell; NOT pretrained); returns ``features``, frozen."""
    tv = ensure_torchvision()
    if backbone == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(init_seed))
            model = getattr(tv.models, arch)(weights=None)
    else:
        model = getattr(tv.models, arch)(weights=None)
        model.load_state_dict(load_state_dict(arch))
    features = model.features
    for m in features:
        if isinstance(m, nn.ReLU):
            m.inplace = False  # captured conv outputs must not be overwritten
    features.requires_grad_(False)
    return features.eval()


class VGGLoss(nn.Module):
    """VGG feature distance; see the module docstring."""

    def __init__(
        self,
        *,
        arch: str | None = None,
        layers: Sequence[str] | None = None,
        distance: str | None = None,
        imagenet_norm: bool = True,
        window: str | None = None,
        preset: str | None = None,
        backbone: str = "imagenet",
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
        self.backbone = backbone
        base = dict(PRESETS[preset]) if preset is not None and preset in PRESETS else {}
        if preset is not None and not base:
            raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
        arch = arch or str(base.get("arch", "vgg16"))
        if arch not in DEFAULT_LAYERS:
            raise ValueError(f"arch must be one of {', '.join(DEFAULT_LAYERS)}, got {arch!r}")
        self.distance = distance or str(base.get("distance", "l2"))
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be 'l1' or 'l2', got {self.distance!r}")
        self.window = None if window is None else parse_window(window)
        self.arch = arch
        wanted = tuple(layers) if layers is not None else tuple(base.get("layers", DEFAULT_LAYERS[arch]))
        features = build_vgg_features(arch, backbone, init_seed)
        names = layer_names(features)
        bad = [n for n in wanted if n not in names]
        if bad or not wanted:
            raise ValueError(f"{arch} has no layer(s) {bad or '(none given)'}; layers: {', '.join(names)}")
        self.layers = wanted
        self._index = {names.index(n): n for n in wanted}
        self.features = nn.Sequential(*list(features)[: max(self._index) + 1])
        self.imagenet_norm = bool(imagenet_norm)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGLoss:
        """The backbone always stays in eval mode."""
        super().train(mode)
        self.features.eval()
        return self

    def to_vgg_input(self, x: torch.Tensor) -> torch.Tensor:
        """Network space (N, 1, H, W) → VGG input (N, 3, H, W) (module docstring)."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected (N, 1, H, W), got {tuple(x.shape)}")
        u = x if self.window is None else window_to_unit(net_to_hu(x), self.window)
        u = u.expand(-1, 3, -1, -1)
        return (u - self.mean) / self.std if self.imagenet_norm else u

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations at the chosen layers."""
        out = {}
        h = self.to_vgg_input(x)
        for i, m in enumerate(self.features):
            h = m(h)
            if i in self._index:
                out[self._index[i]] = h
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fp, ft = self.feature_maps(pred), self.feature_maps(target)
        return feature_distance([fp[n] for n in self.layers], [ft[n] for n in self.layers], self.distance)
