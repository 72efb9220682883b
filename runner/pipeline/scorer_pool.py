"""The thread pool that scores the rows of an async run, kept between runs of the process.

An async function's sync scorers run on a pool of ``n_workers`` threads (unless every one is
marked cheap, see :mod:`runner.inline`). A new ``ThreadPoolExecutor`` per run starts its threads
lazily, inside the run's first wave of rows, and drops them at the end; a notebook or a script
that runs one experiment after another paid that every time. :func:`take` lends the idle pool
of an earlier run when it has enough threads; :func:`give_back` keeps one idle pool (the
largest) for the next run. Runs at the same moment never share a pool: one takes the idle one,
the others get new ones, so each run still has ``n_workers`` threads of its own.

Example::

    pool = take(10)
    try:
        ...  # loop.run_in_executor(pool, score, row)
    finally:
        give_back(pool, reuse=True)
"""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

__all__ = ["give_back", "take"]

_lock = threading.Lock()
_idle: tuple[int, ThreadPoolExecutor] | None = None  # (its number of threads, the pool)
_sizes: weakref.WeakKeyDictionary[ThreadPoolExecutor, int] = weakref.WeakKeyDictionary()


def take(n_workers: int) -> ThreadPoolExecutor:
    """A pool of at least ``n_workers`` threads for one run: the idle one if it is big enough."""
    global _idle
    with _lock:
        if _idle is not None and _idle[0] >= n_workers:
            pool, _idle = _idle[1], None
            return pool
    pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="runner-score")
    with _lock:
        _sizes[pool] = n_workers
    return pool


def give_back(pool: ThreadPoolExecutor, *, reuse: bool) -> None:
    """End a run's use of ``pool``: kept for the next run when ``reuse`` (the run finished and
    nothing of it is queued) and it is the largest idle pool, shut down otherwise."""
    global _idle
    drop: ThreadPoolExecutor | None = pool
    with _lock:
        size = _sizes.get(pool, 0)
        if reuse and size and (_idle is None or _idle[0] <= size):
            drop = _idle[1] if _idle is not None else None
            _idle = (size, pool)
    if drop is not None:
        drop.shutdown(wait=False, cancel_futures=True)
