"""The tidy trajectory table: its columns, keys and queries, and maps from the metric metadata.

``<out>/analysis/trajectories.parquet`` (written by :mod:`analysis.scoring`) has one row per
observation::

    cell, loss, architecture, dose, seed, epoch, patient, image, metric, value, source

* ``source == "metric"``: ``metric`` is a name in ``analysis.metrics.METRICS``, ``image`` the dataset's
  slice id (``<patient>/<slice>``), ``patient`` its patient, ``value`` the metric of the denoised slice
  against its normal-dose reference (no-reference metrics: of the denoised slice alone).
* ``source == "history"``: the runner's per-epoch losses from ``history.csv`` — ``metric`` is
  ``train_loss``, ``val_loss`` or ``train_<term>``/``val_<term>`` for each term of a weighted-sum loss;
  ``patient`` and ``image`` are empty. Keeping them in the same table lets one filter serve the curves,
  the correlations and the best-validation epoch.

The **input baseline** ``input_baseline.parquet`` (:data:`BASELINE_COLUMNS`) holds the same metrics of
the low-dose input itself; tables and figures label it :data:`INPUT_LABEL`.

Every analysis module (correlations, significance, tables, figures, report) reads the table through
this module only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

# the one look-up of the metric metadata is analysis.metrics.info; figures.py imports it from here as metric_info
from analysis.metrics import info as metric_info
from benchmark.core.errors import UserError

KEYS = ["cell", "loss", "architecture", "dose", "seed", "epoch"]
COLUMNS = [*KEYS, "patient", "image", "metric", "value", "source"]
SOURCE_METRIC = "metric"
SOURCE_HISTORY = "history"
LOSS_CURVES = ("train_loss", "val_loss")
EPOCH_CHOICES: dict[str, str] = {  # the epoch compared between losses, and what it means
    "final": "last scored epoch of each cell",
    "best_val": "the scored epoch with the lowest validation loss",
}
BASELINE_COLUMNS = ["dose", "patient", "image", "metric", "value"]
INPUT_LABEL = "LDCT input"



def metric_names(traj: pd.DataFrame) -> list[str]:
    """The metrics of the per-image rows of ``traj``, in order of first appearance (the scored metrics)."""
    return [str(m) for m in dict.fromkeys(metric_rows(traj)["metric"])]


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
