"""Rows run without the garbage collector's full passes over the heap that was there before.

A driver holds a big heap (the dataset, pandas and scipy, a Dask scheduler), and so does a
Dask worker (distributed and its state): a full collection walked all of it. Measured on 2,000
rows of 50 ms on a 2-core machine, that stopped the driver for 50-65 ms once every run or two,
and a worker for 40-50 ms, with the rows' results and the next rows waiting. While rows run
(:func:`heap_frozen`, around the run on the driver and around every task on a worker), what
existed before is frozen (:func:`gc.freeze`) and only what the rows make is collected. A
process that froze its heap itself (before forking, say) is left as it is.

The cost: a cycle of objects made before the run that becomes garbage during it is freed when
the run ends, not before (what the rows make is collected as always, so a long run's memory
stays flat; see ``benchmarks/cluster.py --only memory``).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["heap_frozen"]

_frozen_runs = 0
#: reentrant: a block can end inside a garbage collection on a thread that holds the lock (a
#: coroutine that was never finished is closed by the collector, and its ``with`` ends there)
_frozen_lock = threading.RLock()


@contextlib.contextmanager
def heap_frozen() -> Iterator[None]:
    """While rows run, the objects that existed before are left out of the garbage collector's
    passes (:func:`gc.freeze`); they are put back when the last block of the process ends.
    Objects made inside are collected as always. Nests, and is safe from any thread."""
    global _frozen_runs
    with _frozen_lock:
        mine = _frozen_runs > 0 or gc.get_freeze_count() == 0
        if mine:
            if _frozen_runs == 0:
                gc.freeze()
            _frozen_runs += 1
    try:
        yield
    finally:
        if mine:
            with _frozen_lock:
                _frozen_runs -= 1
                if _frozen_runs == 0:
                    gc.unfreeze()
