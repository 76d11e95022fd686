"""Task-based image quality (issue #22 §2–3): model observers, detectability and the task transfer
function, in numpy/scipy (float64).

One job per module:

* :mod:`~analysis.metrics.task.channels`: Laguerre–Gauss and Gabor channel profiles.
* :mod:`~analysis.metrics.task.observers`: signal-centred ROIs, channel outputs, Hotelling (CHO, full-rank
  HO), NPW and NPWE templates, the eye filter, known-statistics d′.
* :mod:`~analysis.metrics.task.detectability`: held-out d′ over resplits, the unbiased Hotelling SNR²
  with its interval, Mann–Whitney AUC with a bootstrap interval, and the ``MIN_REALISATIONS`` guard.
* :mod:`~analysis.metrics.task.ttf`: the TG-233 task transfer function of a rod (f50, f10, contrast).
* :mod:`~analysis.metrics.task.fourier`: TG-233 d′ (PW, NPW, NPWE) from TTF and NPS, and the check of
  image-domain against Fourier d′.

API::

    from analysis.metrics.task import laguerre_gauss, signal_rois, channel_outputs, heldout_dprime
    v_s, v_n = (channel_outputs(signal_rois(x, centre, 64), laguerre_gauss(64, a=12.0)) for x in (sp, sa))
    print(heldout_dprime(v_s, v_n))  # d′ = mean ± sd (held-out (resplit), 50 splits, ...)
"""

from __future__ import annotations

from analysis.metrics.task.channels import captured_fraction, gabor, laguerre_gauss, lg_width
from analysis.metrics.task.detectability import (
    MIN_REALISATIONS,
    AUCEstimate,
    HeldOutDprime,
    SNR2Estimate,
    auc_from_dprime,
    auc_mann_whitney,
    heldout_dprime,
    require_realisations,
    snr2_unbiased,
)
from analysis.metrics.task.fourier import Agreement, compare_dprime, disk_task, fourier_dprime, model_template
from analysis.metrics.task.observers import (
    EyeFilter,
    channel_outputs,
    decision_variables,
    eye_filter_rois,
    hotelling_dprime,
    hotelling_template,
    linear_dprime,
    npw_template,
    npwe_template,
    radial_npw_template,
    radial_profile_image,
    signal_rois,
)
from analysis.metrics.task.ttf import TTFResult, find_centre, task_transfer_function

__all__ = [
    "MIN_REALISATIONS",
    "AUCEstimate",
    "Agreement",
    "EyeFilter",
    "HeldOutDprime",
    "SNR2Estimate",
    "TTFResult",
    "auc_from_dprime",
    "auc_mann_whitney",
    "captured_fraction",
    "channel_outputs",
    "compare_dprime",
    "decision_variables",
    "disk_task",
    "eye_filter_rois",
    "find_centre",
    "fourier_dprime",
    "gabor",
    "heldout_dprime",
    "hotelling_dprime",
    "hotelling_template",
    "laguerre_gauss",
    "lg_width",
    "linear_dprime",
    "model_template",
    "npw_template",
    "npwe_template",
    "radial_npw_template",
    "radial_profile_image",
    "require_realisations",
    "signal_rois",
    "snr2_unbiased",
    "task_transfer_function",
]
