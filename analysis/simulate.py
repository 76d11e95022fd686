"""Synthetic trajectory tables of known structure, for the tests and for previewing the report
without training (:func:`simulate_trajectories`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.schema import COLUMNS, SOURCE_HISTORY, SOURCE_METRIC


def simulate_trajectories(
    *,
    losses: Sequence[str] = ("mse", "l1", "charbonnier"),
    architectures: Sequence[str] = ("redcnn",),
    doses: Sequence[str] = ("25_360",),
    seeds: Sequence[int] = (0,),
    epochs: int = 6,
    patients: int = 6,
    slices_per_patient: int = 3,
    metrics: Mapping[str, tuple[float, float, bool]] | None = None,
    effects: Mapping[str, float] | None = None,
    patient_sd: float = 1.0,
    noise_sd: float = 0.5,
    rng: np.random.Generator | int = 0,
) -> pd.DataFrame:
    """A synthetic trajectory table of known structure (tests, and previewing the report without training).

    Each image has a latent quality ``q = effect[loss] · (1 − e^{−epoch/2}) + patient effect + noise``
    (patient effects ``N(0, patient_sd²)`` shared by all losses, i.e. paired data); a metric with
    ``(centre, scale, higher_is_better)`` reads ``centre ± scale · q`` (``+`` when higher is better), so
    every metric improves as ``q`` rises. The training loss is ``e^{−epoch/2} + noise`` and the
    validation loss 1.1× that: both fall while every metric improves (positive agreement).
    """
    gen = np.random.default_rng(rng)
    metrics = dict(metrics or {"psnr": (30.0, 1.0, True), "ssim": (0.85, 0.01, True), "niqe": (6.0, 0.3, False)})
    effects = dict(effects or dict(zip(losses, np.linspace(0.0, 1.0, len(losses)), strict=False)))
    records: list[tuple[object, ...]] = []
    for arch in architectures:
        for dose in doses:
            for seed in seeds:
                pat_effect = gen.normal(0, patient_sd, patients)
                for loss in losses:
                    cell = f"{loss}__{arch}__{dose}__s{seed}"
                    for epoch in range(1, epochs + 1):
                        progress = 1 - np.exp(-epoch / 2)
                        tl = float(np.exp(-epoch / 2) + gen.normal(0, 0.01))
                        key = (cell, loss, arch, dose, seed, epoch)
                        records.append((*key, "", "", "train_loss", tl, SOURCE_HISTORY))
                        records.append((*key, "", "", "val_loss", 1.1 * tl, SOURCE_HISTORY))
                        for p in range(patients):
                            for s in range(slices_per_patient):
                                q = effects.get(loss, 0.0) * progress + pat_effect[p] + gen.normal(0, noise_sd)
                                for name, (centre, scale, higher) in metrics.items():
                                    v = centre + (scale if higher else -scale) * q
                                    records.append((*key, f"P{p:02d}", f"P{p:02d}/{s:03d}", name, float(v), SOURCE_METRIC))
    return pd.DataFrame.from_records(records, columns=COLUMNS)
