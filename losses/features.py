"""The feature-space distance shared by the perceptual losses (:mod:`losses.vgg`, :mod:`losses.upl`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

DISTANCES = ("l1", "l2")


def feature_distance(pred_feats: Sequence[torch.Tensor], target_feats: Sequence[torch.Tensor], distance: str
                     ) -> torch.Tensor:
    """``Σ_l mean |f_l − g_l|^p`` over paired feature maps, p = 1 (``"l1"``) or 2 (``"l2"``)."""
    total = pred_feats[0].new_zeros(())
    for fp, ft in zip(pred_feats, target_feats, strict=True):
        diff = fp - ft
        total = total + (diff.abs() if distance == "l1" else diff * diff).mean()
    return total
