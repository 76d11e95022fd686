"""ST-LPIPS, the shift-tolerant LPIPS of Ghildyal & Liu, "Shift-tolerant Perceptual Similarity
Metric", ECCV 2022, from the ``stlpips-pytorch`` 0.0.2 wheel.

The distance is LPIPS's, ``Σ_l mean_hw w_l · (f̂_l(x) − f̂_l(y))²`` with channel-normalised features
``f̂_l``, but the backbone is the paper's anti-aliased network (first convolution at stride 1, every
downsampling a reflection-padded [1 2 1]² blur pool, ``variant="shift_tolerant"``), trained with its
linear layers on BAPPS. The wheel ships the *complete* network (backbone, blur filters, scaling layer
and linear layers) in ``stlpips_pytorch/weights/vST0.0/{alex,vgg}_shift_tolerant.pth``, so these
metrics need no ImageNet file and never touch torch hub (``MetricInfo.weights == ()``).

The library's own loader uses ``load_state_dict(strict=False)``, which would silently leave random
layers if a file were incomplete; :func:`load_shipped_state` instead checks that the file names every
parameter and buffer of the network before loading it.

Conventions are LPIPS's (:class:`analysis.metrics.deep.LPIPS`, whose reference-cached
``prepare_ref``/``score`` split this scorer inherits: ``stlpips.LPIPS`` has the same
``scaling_layer``/``net``/``lins`` structure and the same ``normalize_tensor``): the gray [0, 1]
image is repeated to 3 channels and mapped to ``2·x − 1`` ∈ [−1, 1] (the library's
``normalize=True``), then the package's ScalingLayer.

Cost (2 CPU threads, 16 images of 256², reference and prediction, ``compute_metrics``): AlexNet
≈ 6 s (LPIPS-alex ≈ 1.1 s: the stride-1 first layer makes it ≈ 5× dearer), VGG16 ≈ 21 s; with the
reference features cached, 3.4 s and 12 s. Cached reference features per 512² image: AlexNet ≈ 43 MB,
VGG16 ≈ 130 MB (float32).
"""

from __future__ import annotations

import contextlib
import io
from itertools import chain
from pathlib import Path
from typing import Literal

import torch

from analysis.metrics.base import Scorer
from analysis.metrics.deep import LPIPS
from benchmark.core.compat import ensure_torchvision

Backbone = Literal["alex", "vgg"]


def shipped_weight_file(net: Backbone) -> Path:
    """The complete shift-tolerant network shipped in the ``stlpips-pytorch`` wheel."""
    import stlpips_pytorch  # after ensure_torchvision(): it imports torchvision

    path = Path(stlpips_pytorch.__file__).parent / "weights" / "vST0.0" / f"{net}_shift_tolerant.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; reinstall stlpips-pytorch==0.0.2")
    return path


def load_shipped_state(model: torch.nn.Module, path: Path) -> None:
    """Load ``path`` into ``model`` after checking it names every parameter and buffer.

    The file stores each linear layer once, as ``lin{k}``; the module also exposes the same layers as
    ``lins.{k}`` (aliases, hence ``strict=False``). ``named_parameters`` lists each shared tensor once,
    under its first name, so the check covers every distinct tensor.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    names = {n for n, _ in chain(model.named_parameters(), model.named_buffers())}
    missing = sorted(names - state.keys())
    unexpected = sorted(k for k in state.keys() - names if not k.startswith("lins."))
    if missing or unexpected:
        raise RuntimeError(f"{path} does not match the network: missing {missing}, unexpected {unexpected}")
    model.load_state_dict(state, strict=False)


class STLPIPS(LPIPS):
    """ST-LPIPS (Ghildyal & Liu, ECCV 2022) with the AlexNet (paper default) or VGG16 backbone.

    Input ``(B, 1, H, W)`` in [0, 1], ``H, W ≥ 32``; output ``(B,)`` ≥ 0, lower is better, 0 for
    identical images. Reference features are cached exactly as for LPIPS.
    """

    def __init__(self, net: Backbone, device: torch.device) -> None:
        Scorer.__init__(self, device)  # not LPIPS.__init__: that one builds the lpips-package network
        ensure_torchvision()
        from stlpips_pytorch import stlpips  # after ensure_torchvision(): it imports torchvision

        with contextlib.redirect_stdout(io.StringIO()):
            model = stlpips.LPIPS(pretrained=False, net=net, variant="shift_tolerant", verbose=False)
        load_shipped_state(model, shipped_weight_file(net))
        self.model = model.to(device).eval()  # eval: the linear layers' dropout is off
        self.model.requires_grad_(False)
        # CPU: batches of 4 are ~10% faster per image than 1-2 at 256² (stride-1 first layer).
        cpu = torch.device(device or "cpu").type == "cpu"
        self.max_batch = 4 if cpu else (16 if net == "alex" else 4)
