"""Sync scorers cheap enough to call on the event loop, without a hop to a worker thread.

An async function's sync scorers normally run on a thread pool, so a scorer that blocks (a sync
HTTP call, a big model) never stalls the loop every other row is waiting on. For a scorer that
is a few string comparisons, the hop costs far more than the work: two thread switches and a
loop wake-up per row, and in a fresh process the pool's threads start inside the first wave of
rows. Issue 22's W4 (200 x ``asyncio.sleep(0.1)``, 100 workers, ``exact_match``) lost a sixth
of its ideal time that way.

:func:`inline` marks a scorer that is cheap and never blocks; the engine calls it directly on
the loop (and without the per-scorer timeout thread, since it cannot hang). Mark only scorers
whose cost is bounded by their input's length: no I/O, no locks, no user-supplied regular
expressions (which can backtrack for minutes).

Example::

    from runner.inline import inline

    @inline
    def starts_with_yes(log: Log) -> float:
        return float(str(log.output).lower().startswith("yes"))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["inline", "runs_inline"]

F = TypeVar("F", bound=Callable[..., Any])

_ATTR = "__runner_inline__"


def inline(scorer: F) -> F:
    """Mark the sync ``scorer`` as cheap and non-blocking (see the module); returns it."""
    setattr(scorer, _ATTR, True)
    return scorer


def runs_inline(scorer: Callable[..., Any]) -> bool:
    """Whether ``scorer`` was marked with :func:`inline`."""
    return getattr(scorer, _ATTR, False) is True
