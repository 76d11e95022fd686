"""``ldct-bench status``: one row per cell of a run folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.layout import RunLayout


def status_table(out: Path) -> pd.DataFrame:
    """Columns: cell, loss, architecture, dose, seed, status, epochs, last val_loss, detail."""
    layout = RunLayout(out)
    try:
        planned = layout.matrix().training.epochs
    except Exception:
        planned = None
    rows = []
    for c in layout.cells():
        hist = layout.history(c.cell_id)
        last_val = float(hist["val_loss"].iloc[-1]) if len(hist) and "val_loss" in hist else None
        rows.append({
            "cell": c.cell_id,
            "loss": c.loss,
            "architecture": c.architecture,
            "dose": c.dose,
            "seed": c.seed,
            "status": c.status,
            "epochs": f"{c.epochs_done}/{planned}" if planned else str(c.epochs_done),
            "val_loss": None if last_val is None else round(last_val, 6),
            "detail": c.detail,
        })
    return pd.DataFrame(rows, columns=["cell", "loss", "architecture", "dose", "seed", "status", "epochs", "val_loss", "detail"])
