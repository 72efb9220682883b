"""The cluster-wide rate limit: a 429 seen by one Dask worker process slows every worker.

Every process keeps its own adaptive limiters (:mod:`runner.ratelimit`, one per provider, key
``"llm:<provider>"``): they decide without a round trip whether a request may start, and the
proxy waits out their ``Retry-After`` pause before every attempt. On a Dask cluster the
limiters of all worker processes are joined into one: the first task a worker process runs
calls :func:`share_rate_limits`, which listens to the limiters of that process. When one of
them hears a 429, the listener sends it to every worker of the cluster with ``Client.run``
(Dask's own way of running a function on every worker, through the scheduler), and each worker
applies it to its limiter of the same key: no new request to that provider starts anywhere
before the ``Retry-After`` instant (a wall-clock time, so the same for every process) and each
process halves how many it lets through at once, then grows back as successes come in.

The 429'd call does not wait for the others to hear: the sending happens on a thread of its
own, and a burst of 429s is sent once (a later one only when it pauses longer, or after a
second).

A pause is also kept as state on the scheduler (its metadata, under ``runner-ratelimit``: for
each limiter key, each worker's latest ``Retry-After`` instant), written before the broadcast.
A worker process that joins the cluster later reads it before its first row
(:func:`catch_up_rate_limits`) and waits out what is left of the pause, as the others do.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any

from runner.ratelimit import add_rate_limit_listener, apply_shared_rate_limit

__all__ = ["catch_up_rate_limits", "caught_up", "share_rate_limits"]

logger = logging.getLogger("runner.pipeline.executor_ratelimit")

#: A 429 without a longer pause is sent on at most this often per key (seconds).
_RESEND_AFTER = 1.0

#: Where the pauses are kept on the scheduler (``Client.set_metadata``).
METADATA_KEY = "runner-ratelimit"

_lock = threading.Lock()
_shared_with: str | None = None  # the scheduler this process shares its limits with
_caught_up: str | None = None  # the scheduler whose kept pauses this process has applied
_client: Any = None


def share_rate_limits() -> None:
    """On a Dask worker (inside a task): from now on, every 429 a limiter of this process hears
    slows the limiter of the same key in every worker process of the cluster. Idempotent."""
    global _shared_with, _client
    from distributed import get_client, get_worker

    try:
        client = get_client()
    except ValueError:  # not in a Dask task (no worker, no client): nothing to share with
        return
    address = str(getattr(client.scheduler, "address", "") or id(client))
    with _lock:
        if _shared_with == address:
            return
        _shared_with, _client = address, client
    try:
        me = str(get_worker().address)
    except ValueError:
        me = f"pid-{os.getpid()}"
    _Sharer(client, me).start()


def caught_up() -> bool:
    """Whether this process has applied the pauses kept on its scheduler (see :func:`catch_up_rate_limits`)."""
    return _shared_with is None or _caught_up == _shared_with


def catch_up_rate_limits() -> None:
    """Once per worker process, after :func:`share_rate_limits` and before its first row: apply
    the pauses the cluster heard before this process joined. Blocks for a scheduler round trip:
    call it from a thread, never on the worker's event loop."""
    global _caught_up
    with _lock:
        client, address = _client, _shared_with
    if client is None or _caught_up == address:
        return
    try:
        kept = client.get_metadata([METADATA_KEY], default={}) or {}
    except Exception:  # the scheduler went away: this process still limits itself
        logger.warning("could not read the cluster's rate-limit pauses", exc_info=True)
        kept = {}
    now = time.time()
    for key, by_worker in dict(kept).items():
        until = max((float(u) for u in dict(by_worker).values() if u is not None), default=0.0)
        if until > now:
            apply_shared_rate_limit(str(key), until)
    _caught_up = address


class _Sharer:
    """Hears this process's 429s and sends them on to every worker, from one daemon thread."""

    def __init__(self, client: Any, me: str) -> None:
        self.client = client
        self.me = me  # this worker's address: its entry in the kept pauses
        self.queue: queue.SimpleQueue[tuple[str, float | None]] = queue.SimpleQueue()
        self.sent: dict[str, tuple[float, float]] = {}  # key -> (paused until, when sent)

    def start(self) -> None:
        threading.Thread(target=self._send_forever, name="runner-ratelimit-share", daemon=True).start()
        add_rate_limit_listener(self._heard)

    def _heard(self, key: str, retry_after: float | None) -> None:
        # called on the thread that saw the 429 (the completion loop): never block it
        until = None if not retry_after else time.time() + retry_after
        self.queue.put((key, until))

    def _send_forever(self) -> None:
        while True:
            key, until = self.queue.get()
            now = time.time()
            last_until, last_sent = self.sent.get(key, (0.0, -1e9))
            longer = until is not None and until > last_until + 0.05
            if not longer and now - last_sent < _RESEND_AFTER:
                continue  # the same burst: the cluster has heard it
            self.sent[key] = (max(last_until, until or 0.0), now)
            try:
                if until is not None:  # kept first, so a worker joining from now on reads it
                    self.client.set_metadata([METADATA_KEY, key, self.me], self.sent[key][0])
                self.client.run(apply_shared_rate_limit, key, until, on_error="ignore")
            except Exception:  # the scheduler went away: this process still limits itself
                logger.warning("could not share a 429 on %s with the Dask cluster", key, exc_info=True)
