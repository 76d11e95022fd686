"""Timing helpers shared by the benchmark scripts (``bench_models.py``, ``bench_mstlf.py``).

:func:`measure` runs one variant in a fresh, spawned process, so that its peak resident memory and its
thread settings are its own; :func:`time_steps` times a step after warm-up and reports the growth of peak
RSS over the run.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from typing import Any

Worker = Callable[[str, dict[str, Any], Any], None]
"""``worker(name, args, queue)``: measures one variant and puts one result dict on ``queue``. A module-level
function of the script (the spawned process imports it by name)."""


def measure(worker: Worker, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run ``worker(name, args, queue)`` in its own spawned process and return the dict it puts on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=worker, args=(name, args, queue))
    proc.start()
    result: dict[str, Any] = queue.get()
    proc.join()
    return result


def time_steps(step: Callable[[], None], *, warmup: int, repeats: int,
               sync: Callable[[], None] = lambda: None) -> tuple[list[float], float]:
    """``warmup`` untimed calls of ``step``, then ``repeats`` timed ones (``sync`` before starting and before
    stopping the clock: a CUDA synchronisation). Returns the times in seconds and the growth of peak resident
    memory in MiB since just before the first call (``ru_maxrss`` is in KiB on Linux)."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return times, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
