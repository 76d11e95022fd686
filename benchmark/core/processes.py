"""Worker processes that stop with their parent: the signal conventions shared by the training pool
(:mod:`benchmark.workers`) and the analysis shards (:mod:`analysis.shards`).

* **The parent** turns ``SIGTERM`` and ``SIGHUP`` (``kill``, a closed terminal, a job scheduler's stop) into
  :class:`Stopped`, a :class:`KeyboardInterrupt`, while its workers run (:func:`stop_on_signals`), so they
  are handled as Ctrl-C is: the parent stops its workers and the command exits ``128 + signal``.
* **A worker** ignores ``SIGINT`` and ``SIGHUP`` (Ctrl-C in a terminal reaches the whole process group; the
  parent decides) and turns the parent's ``SIGTERM`` into a :class:`KeyboardInterrupt` once
  (:func:`worker_signals`), so its ``finally`` clauses run: a lock is released, a temporary file removed.
* **A parent that dies without stopping them** (``kill -9``, a crash): on Linux each worker asks the kernel
  for ``SIGTERM`` when its parent dies (:func:`die_with_parent`, ``PR_SET_PDEATHSIG``; the Python standard
  library has no wrapper of ``prctl``, hence ``ctypes``).

``PR_SET_PDEATHSIG`` fires when the *thread* that started the worker ends, so start workers from a thread
that lives as long as they do (the main thread, as both pools do).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # besides SIGINT (Ctrl-C): they stop a parent as it does
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_GRACE_S = 60.0  # how long a stopped worker may take to end its work before it is killed


class Stopped(KeyboardInterrupt):
    """``SIGTERM`` or ``SIGHUP`` reached the parent of workers: handled as Ctrl-C is (the workers are
    stopped, each ends its work cleanly); ``signum`` gives the command's exit code ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def _stop_handler(signum: int, frame: Any) -> None:
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the workers run: ``SIGTERM`` / ``SIGHUP`` raise :class:`Stopped` in this process (once; a
    repeat is ignored while the workers stop). Only the main thread can set handlers; elsewhere nothing.
    Nested, the outermost one handles the signals (and a repeat stays ignored until it ends)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(STOP_SIGNALS[0]) is _stop_handler:
        yield  # not the main thread, or inside another stop_on_signals (whose stop then stays ignored)
        return
    previous = {s: signal.signal(s, _stop_handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def parent_pid() -> int:
    """In a ``multiprocessing`` worker: the pid of the process that started it, as recorded at its start
    (still right after that parent died, when ``os.getppid()`` already names another process)."""
    parent = mp.parent_process()
    return parent.pid if parent is not None and parent.pid is not None else os.getppid()


def die_with_parent(parent: int) -> bool:
    """Linux: have the kernel send this process ``SIGTERM`` when its parent dies (``PR_SET_PDEATHSIG``).
    ``parent`` is the pid of the parent that started this process (:func:`parent_pid`); False when it is
    already gone (it died before the request could take effect: the caller stops at once). Elsewhere, or
    without ``prctl``, only that check."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    return os.getppid() == parent


def _interrupt(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the interrupted work clean up
    raise KeyboardInterrupt


def worker_signals() -> None:
    """A worker's handlers: ``SIGINT`` and ``SIGHUP`` ignored (the parent's to handle; it stops the worker
    with ``SIGTERM``), ``SIGTERM`` raises :class:`KeyboardInterrupt` once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)


def stop_processes(procs: Iterable[Any], grace_s: float = STOP_GRACE_S) -> None:
    """``SIGTERM`` every live one of ``procs`` (``multiprocessing`` processes; each ends its work as an
    interrupted run does), then wait for them; kill one that has not ended within ``grace_s``."""
    procs = list(procs)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        if p.pid is None:  # never started
            continue
        p.join(grace_s)
        if p.is_alive():
            p.kill()
            p.join()
