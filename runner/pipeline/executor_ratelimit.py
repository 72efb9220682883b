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
second). A worker that joins after a 429 was sent does not hear of it; its own first 429 will
be shared the same way.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from runner.ratelimit import add_rate_limit_listener, apply_shared_rate_limit

__all__ = ["share_rate_limits"]

logger = logging.getLogger("runner.pipeline.executor_ratelimit")

#: A 429 without a longer pause is sent on at most this often per key (seconds).
_RESEND_AFTER = 1.0

_lock = threading.Lock()
_shared_with: str | None = None  # the scheduler this process shares its limits with


def share_rate_limits() -> None:
    """On a Dask worker (inside a task): from now on, every 429 a limiter of this process hears
    slows the limiter of the same key in every worker process of the cluster. Idempotent."""
    global _shared_with
    from distributed import get_client

    try:
        client = get_client()
    except ValueError:  # not in a Dask task (no worker, no client): nothing to share with
        return
    address = str(getattr(client.scheduler, "address", "") or id(client))
    with _lock:
        if _shared_with == address:
            return
        _shared_with = address
    _Sharer(client).start()


class _Sharer:
    """Hears this process's 429s and sends them on to every worker, from one daemon thread."""

    def __init__(self, client: Any) -> None:
        self.client = client
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
                self.client.run(apply_shared_rate_limit, key, until, on_error="ignore")
            except Exception:  # the scheduler went away: this process still limits itself
                logger.warning("could not share a 429 on %s with the Dask cluster", key, exc_info=True)
