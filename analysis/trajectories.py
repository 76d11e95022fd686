"""Metric trajectories: every selected metric on every evaluation image at every scored epoch of every cell.

The tidy long table ``<out>/analysis/trajectories.parquet`` has one row per observation::

    cell, loss, architecture, dose, seed, epoch, patient, image, metric, value, source

* ``source == "metric"``: ``metric`` is a name in ``analysis.metrics.METRICS``, ``image`` the dataset's
  slice id (``<patient>/<slice>``), ``patient`` its patient, ``value`` the metric of the denoised slice
  against its normal-dose reference (no-reference metrics: of the denoised slice alone).
* ``source == "history"``: the runner's per-epoch losses from ``history.csv`` — ``metric`` is
  ``train_loss``, ``val_loss`` or ``train_<term>``/``val_<term>`` for each term of a weighted-sum loss;
  ``patient`` and ``image`` are empty. Keeping them in the same table lets one filter serve the curves,
  the correlations and the best-validation epoch.

Scoring (:func:`score_run`) is incremental: each (cell, checkpoint) has a cache file
``<out>/analysis/cache/<cell>/epoch_<NNN>.parquet`` holding its per-image values of every metric scored so
far, stamped with the checkpoint's size and modification time and the evaluation settings (split,
window, image selection); a rerun computes only the (checkpoint, metric) pairs not in a valid cache.
Each checkpoint is denoised once for all its missing metrics, reference-side work is shared across the
epochs of a cell (the metrics' ``ref_cache``), images go through in chunks of ``chunk`` slices to bound
memory, on the GPU when there is one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from benchmark.errors import UserError

KEYS = ["cell", "loss", "architecture", "dose", "seed", "epoch"]
COLUMNS = [*KEYS, "patient", "image", "metric", "value", "source"]
SOURCE_METRIC = "metric"
SOURCE_HISTORY = "history"
LOSS_CURVES = ("train_loss", "val_loss")
EPOCH_CHOICES = ("final", "best_val")


# ------------------------------------------------------------------------------------------- schema


def metric_info(name: str):  # -> analysis.metrics.MetricInfo
    """The fixed metadata of a metric (``analysis.metrics.METRICS``), with the registry's error if unknown."""
    from analysis.metrics import METRICS
    from benchmark.registry import lookup

    return lookup(METRICS, name, "metric", field="evaluation.metrics")


def higher_is_better_map(metrics: Iterable[str]) -> dict[str, bool]:
    """``metric -> higher_is_better`` from the metric metadata."""
    return {str(m): bool(metric_info(str(m)).higher_is_better) for m in metrics}


def kind_map(metrics: Iterable[str]) -> dict[str, str]:
    """``metric -> "full_reference" | "no_reference"`` from the metric metadata."""
    return {str(m): str(metric_info(str(m)).kind) for m in metrics}


def check_columns(traj: pd.DataFrame, where: str = "trajectories") -> pd.DataFrame:
    """Raise a :class:`UserError` naming the missing columns; return ``traj``."""
    missing = [c for c in COLUMNS if c not in traj.columns]
    if missing:
        raise UserError(f"missing columns {missing}; expected {COLUMNS}", field=where)
    return traj


def metric_rows(traj: pd.DataFrame) -> pd.DataFrame:
    """The per-image metric rows (``source == "metric"``)."""
    return traj[traj["source"] == SOURCE_METRIC]


def history_rows(traj: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch loss rows from ``history.csv`` (``source == "history"``)."""
    return traj[traj["source"] == SOURCE_HISTORY]


def epoch_means(traj: pd.DataFrame) -> pd.DataFrame:
    """Per cell × metric × epoch: the mean of the metric over the evaluation images (column ``value``)."""
    rows = metric_rows(traj)
    return rows.groupby([*KEYS, "metric"], observed=True, sort=False)["value"].mean().reset_index()


def loss_curves(traj: pd.DataFrame) -> pd.DataFrame:
    """Per cell × epoch: ``train_loss`` and ``val_loss`` as columns (NaN where the history lacks one)."""
    rows = history_rows(traj)
    rows = rows[rows["metric"].isin(LOSS_CURVES)]
    wide = rows.pivot_table(index=KEYS, columns="metric", values="value", aggfunc="mean", observed=True)
    wide = wide.reindex(columns=list(LOSS_CURVES))
    wide.columns.name = None
    return wide.reset_index()


def select_epoch(rows: pd.DataFrame, which: str = "final", *, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of one epoch per cell: the last scored epoch (``"final"``) or, among the scored epochs,
    the one with the lowest validation loss (``"best_val"``; needs the history rows in ``history``).
    Adds the column ``epoch_choice``."""
    if which not in EPOCH_CHOICES:
        raise UserError(f"{which!r}: allowed are {', '.join(EPOCH_CHOICES)}", field="epoch")
    scored = rows[["cell", "epoch"]].drop_duplicates()
    if which == "final":
        chosen = scored.groupby("cell", observed=True)["epoch"].max()
    else:
        if history is None:
            raise UserError("the best-validation epoch needs the history rows (val_loss)", field="epoch")
        val = loss_curves(history)[["cell", "epoch", "val_loss"]].dropna()
        val = val.merge(scored, on=["cell", "epoch"])
        if val.empty:
            raise UserError("no validation loss recorded at any scored epoch; use epoch 'final'", field="epoch")
        chosen = val.loc[val.groupby("cell", observed=True)["val_loss"].idxmin()].set_index("cell")["epoch"]
    keep = rows.merge(chosen.rename("epoch").reset_index(), on=["cell", "epoch"])
    return keep.assign(epoch_choice=which)


def level_order(traj: pd.DataFrame, column: str, preferred: Sequence[str] | None = None) -> list[str]:
    """The levels of ``column`` in ``preferred`` order (e.g. the matrix's), then order of appearance."""
    seen = [str(x) for x in dict.fromkeys(traj[column].astype(str))]
    head = [str(x) for x in (preferred or []) if str(x) in seen]
    return head + [x for x in seen if x not in head]


# ------------------------------------------------------------------------------------- simulation


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
