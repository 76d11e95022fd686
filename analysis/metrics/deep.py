"""Deep-feature full-reference metrics: LPIPS (AlexNet / VGG16 backbones) and DISTS.

Networks come from the ``lpips`` 0.1.4 and ``DISTS_pytorch`` 0.1 packages: their small learned
layers ship in the wheels; their ImageNet backbones are torchvision files that must be present in
torchvision's cache (:mod:`benchmark.core.weights`); the engine checks that before anything is built, so
the libraries' loaders only ever read the local file and never download.

Reference-side caching. Neither library can score a prediction against *precomputed* reference
features, and scoring one reference against many checkpoints is exactly the analysis's workload, so
the scorers below split each library's ``forward`` into a reference half (:meth:`prepare_ref`,
cached by the engine) and a prediction half (:meth:`score`). The arithmetic follows the libraries'
``forward`` line by line and the tests check it equals ``lpips.LPIPS.forward`` /
``DISTS.forward`` on the same inputs.

Conventions: the gray [0, 1] image is repeated to 3 channels; LPIPS gets ``2·x − 1`` ∈ [−1, 1]
(then its own ScalingLayer); DISTS gets [0, 1] (then its ImageNet mean/std normalisation).
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import Any

import torch

from analysis.metrics.base import Scorer, gray_to_rgb
from benchmark.core import weights
from benchmark.core.compat import ensure_torchvision


class LPIPS(Scorer):
    """LPIPS v0.1 (Zhang et al., CVPR 2018): ``Σ_l mean_hw w_l · (f̂_l(x) − f̂_l(y))²`` with channel-
    normalised backbone features ``f̂_l`` and the package's learned linear weights ``w_l``."""

    def __init__(self, net: str, device: torch.device) -> None:
        super().__init__(device)
        weights.require("alexnet" if net == "alex" else "vgg16")
        ensure_torchvision()
        import lpips  # after ensure_torchvision(): it imports torchvision

        with contextlib.redirect_stdout(io.StringIO()):  # the package prints its set-up
            model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=False, verbose=False)
        self.model = model.to(device).eval()
        # CPU: 2 images per pass is fastest at 512² (batches of 8 are ~20% slower per image, 1 thread).
        cpu = torch.device(device or "cpu").type == "cpu"
        self.max_batch = 2 if cpu else (16 if net == "alex" else 4)

    def _features(self, x_unit: torch.Tensor) -> list[torch.Tensor]:
        from lpips import normalize_tensor  # after ensure_torchvision(): it imports torchvision

        x = gray_to_rgb(x_unit) * 2 - 1
        outs = self.model.net.forward(self.model.scaling_layer(x))
        return [normalize_tensor(o) for o in outs]

    def prepare_ref(self, ref: torch.Tensor) -> Any:
        with torch.no_grad():
            return self._features(ref)

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        with torch.no_grad():
            feats = self._features(pred)
            val = torch.zeros(pred.shape[0], 1, 1, 1, device=pred.device)
            for kk, (f0, f1) in enumerate(zip(feats, ref_state, strict=True)):
                val = val + self.model.lins[kk]((f0 - f1) ** 2).mean(dim=(2, 3), keepdim=True)
        return val.reshape(pred.shape[0])


def dists_alpha_beta_file() -> Path:
    """DISTS_pytorch's ``weights.pt`` (alpha, beta): in the package folder or, as the 0.1 wheel
    installs it, ``sys.prefix``."""
    import DISTS_pytorch  # after ensure_torchvision(): it imports torchvision

    for cand in (Path(DISTS_pytorch.__file__).parent / "weights.pt", Path(sys.prefix) / "weights.pt"):
        if cand.is_file():
            return cand
    raise FileNotFoundError("DISTS_pytorch's weights.pt (alpha/beta) not found; reinstall DISTS-pytorch")


class DISTS(Scorer):
    """DISTS (Ding et al., IEEE TPAMI 2020): ``1 − Σ_k Σ_c [α_kc S1_kc + β_kc S2_kc]`` over VGG16 stages,
    with structure/texture similarities S1 (means) and S2 (variances, covariance)."""

    max_batch = 4
    c1 = 1e-6
    c2 = 1e-6

    def __init__(self, device: torch.device) -> None:
        super().__init__(device)
        weights.require("vgg16")
        ensure_torchvision()
        from DISTS_pytorch import DISTS as DISTSModel  # after ensure_torchvision(): it imports torchvision

        model = DISTSModel(load_weights=False)
        ab = torch.load(dists_alpha_beta_file(), map_location="cpu", weights_only=True)
        model.alpha.data, model.beta.data = ab["alpha"], ab["beta"]
        self.model = model.to(device).eval()
        w_sum = self.model.alpha.sum() + self.model.beta.sum()
        self.alpha = torch.split(self.model.alpha / w_sum, self.model.chns, dim=1)
        self.beta = torch.split(self.model.beta / w_sum, self.model.chns, dim=1)

    def prepare_ref(self, ref: torch.Tensor) -> Any:
        with torch.no_grad():
            feats = self.model.forward_once(gray_to_rgb(ref))
            out = []
            for f in feats:
                mean = f.mean([2, 3], keepdim=True)
                var = ((f - mean) ** 2).mean([2, 3], keepdim=True)
                out.append((f, mean, var))
        return out

    def score(self, pred: torch.Tensor, ref_state: Any) -> torch.Tensor:
        with torch.no_grad():
            feats = self.model.forward_once(gray_to_rgb(pred))
            dist1 = dist2 = torch.zeros(pred.shape[0], 1, 1, 1, device=pred.device)
            for k, (x, (y, y_mean, y_var)) in enumerate(zip(feats, ref_state, strict=True)):
                x_mean = x.mean([2, 3], keepdim=True)
                s1 = (2 * x_mean * y_mean + self.c1) / (x_mean**2 + y_mean**2 + self.c1)
                dist1 = dist1 + (self.alpha[k] * s1).sum(1, keepdim=True)
                x_var = ((x - x_mean) ** 2).mean([2, 3], keepdim=True)
                xy_cov = (x * y).mean([2, 3], keepdim=True) - x_mean * y_mean
                s2 = (2 * xy_cov + self.c2) / (x_var + y_var + self.c2)
                dist2 = dist2 + (self.beta[k] * s2).sum(1, keepdim=True)
        return (1 - (dist1 + dist2)).reshape(pred.shape[0])
