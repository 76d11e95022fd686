"""``ldct-bench status``: one row per cell of a run folder."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.layout import LOCK, RUNNING, RunLayout, cell_lock


def status_table(out: Path) -> pd.DataFrame:
    """Columns: cell, loss, architecture, dose, seed, status, epochs, last val_loss, detail, worker
    (who trains the cell now: pool worker, device, pid@host; empty when no live runner holds it)."""
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
            "worker": holder_label(layout, c.cell_id),
        })
    columns = ["cell", "loss", "architecture", "dose", "seed", "status", "epochs", "val_loss", "detail", "worker"]
    return pd.DataFrame(rows, columns=columns)


def running_info(layout: RunLayout, cell_id: str) -> dict[str, Any] | None:
    """The cell's ``RUNNING`` marker if a live runner holds the cell, else None. A marker left by a
    runner that died is stale: on this host its pid is gone; on another host (a shared ``--out``) the
    cell's lock is probed without blocking (the OS frees it when its owner dies)."""
    path = layout.marker(cell_id, RUNNING)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    pid = info.get("pid")
    if info.get("host") == socket.gethostname() and isinstance(pid, int):
        return info if _pid_alive(pid) else None
    return info if _lock_held(layout.marker(cell_id, LOCK)) else None


def holder_label(layout: RunLayout, cell_id: str) -> str:
    """``w<index> <device> pid <pid>@<host>`` for a held cell (no ``w..`` for an in-process runner), else ``""``."""
    info = running_info(layout, cell_id)
    if info is None:
        return ""
    worker = info.get("worker")
    prefix = f"w{worker} " if worker is not None else ""
    return f"{prefix}{info.get('device', '?')} pid {info.get('pid', '?')}@{info.get('host', '?')}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a zombie (dead, not yet reaped by its parent) is not a live runner
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _lock_held(path: Path) -> bool:
    """Whether another process holds the lock file ``path`` (a non-blocking try, released at once)."""
    if not path.is_file():
        return False
    with cell_lock(path) as mine:
        return not mine
