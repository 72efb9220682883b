"""Import what the end of a run needs while its first rows run, on a background thread.

A run's summary (means with intervals, latency percentiles) needs numpy, which takes ~0.2 s to
import on a loaded machine. Every ``python -m runner experiments/x.py`` is a fresh process, so
every CLI run paid that after its last row. :func:`prefetch` starts the import when the run
starts; rows that wait on I/O (an LLM, a sleep) leave the interpreter free to do it, and the
summary finds the module loaded. If the import fails here, nothing is reported: the summary's
own import raises the real error.

Example::

    prefetch(*SUMMARY_MODULES)
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading

__all__ = ["SUMMARY_MODULES", "prefetch"]

#: What :mod:`runner.results.stats` imports to summarise a run.
SUMMARY_MODULES = ("numpy", "numpy.ma")

_started: set[str] = set()
_lock = threading.Lock()


def prefetch(*modules: str) -> threading.Thread | None:
    """Import ``modules`` on a daemon thread, once per process; the thread, or ``None`` if every
    module is loaded or already on its way."""
    with _lock:
        todo = [m for m in modules if m not in sys.modules and m not in _started]
        _started.update(todo)
    if not todo:
        return None
    thread = threading.Thread(target=_import_all, args=(todo,), name="runner-prefetch", daemon=True)
    thread.start()
    return thread


def _import_all(modules: list[str]) -> None:
    for name in modules:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
