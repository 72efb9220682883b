"""Where finished trace logs wait before they are written: the one place logs are batched.

Rows hand their logs over one row at a time, from the loop or from worker threads; both doors
(the embedded store's writer thread, the HTTP backend's senders) take them from a
:class:`LogBuffer` in batches. A batch goes as soon as ``batch_size`` logs wait **or** the
oldest of them has waited ``max_delay`` seconds, whichever comes first: a fast run writes big
batches (what makes 10,000 no-op rows take well under a second), and a slow run's rows reach the
store (or the HTTP client and its spool) within ``max_delay`` of finishing, not once hundreds
have piled up. Past ``capacity`` waiting logs, :meth:`LogBuffer.put` from a worker thread
blocks until the consumer catches up: the backpressure.

>>> buf = LogBuffer(batch_size=2, max_delay=60)
>>> buf.put([{"trace_id": "a"}])
False
>>> buf.take() is None  # neither full nor due yet
True
>>> buf.put([{"trace_id": "b"}])
True
>>> [log["trace_id"] for log in buf.take() or []]
['a', 'b']
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["BATCH_LOGS", "MAX_DELAY", "LogBuffer"]

#: logs per batch (one transaction, or one HTTP request of the batch extension)
BATCH_LOGS = 1000
#: the longest a finished row's logs wait before they are handed to the writer (seconds)
MAX_DELAY = 0.2


class LogBuffer:
    """A thread-safe buffer of trace logs, drained in batches bounded in size and in time."""

    def __init__(self, batch_size: int = BATCH_LOGS, max_delay: float = MAX_DELAY, capacity: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.max_delay = max_delay
        #: beyond this many waiting logs, ``put(block=True)`` waits (backpressure)
        self.capacity = capacity or 8 * batch_size
        self._logs: list[dict[str, Any]] = []
        # (arrival time, how many logs) of each put, oldest first: how long the oldest has waited
        self._arrivals: collections.deque[list[float]] = collections.deque()
        self._cond = threading.Condition()
        self._taken = 0  # batches taken and not yet reported done()
        self._urgent = False  # flush() asked: take whatever waits without waiting for it to be due
        self._closed = False

    def __len__(self) -> int:
        return len(self._logs)

    def put(self, logs: Sequence[dict[str, Any]], *, block: bool = False) -> bool:
        """Add logs; ``True`` when a full batch now waits. ``block``: wait first while the buffer
        is at capacity (worker threads only — never on an event loop)."""
        if not logs:
            return False
        with self._cond:
            if block:
                while len(self._logs) >= self.capacity and not self._closed:
                    self._cond.wait(0.5)
            was_empty = not self._logs
            self._logs.extend(logs)
            self._arrivals.append([time.monotonic(), len(logs)])
            full = len(self._logs) >= self.batch_size
            if full or was_empty:
                self._cond.notify_all()
            return full

    def due_in(self) -> float | None:
        """Seconds until a batch must go (``0``: now), ``None`` when nothing waits."""
        with self._cond:
            return self._due_in()

    def _due_in(self) -> float | None:
        if not self._logs:
            return None
        if self._urgent or self._closed or len(self._logs) >= self.batch_size:
            return 0.0
        return max(0.0, self._arrivals[0][0] + self.max_delay - time.monotonic())

    def take(self, *, force: bool = False) -> list[dict[str, Any]] | None:
        """A batch when one is full or due (any waiting logs with ``force``), else ``None``.

        Every batch taken must be reported with :meth:`done` once written."""
        with self._cond:
            return self._take(force)

    def _take(self, force: bool) -> list[dict[str, Any]] | None:
        due = self._due_in()
        if due is None or (due > 0 and not force):
            if due is None:
                self._urgent = False
            return None
        n = min(len(self._logs), self.batch_size)
        batch = self._logs[:n]
        del self._logs[:n]
        left = n
        while left and self._arrivals:
            first = self._arrivals[0]
            if first[1] <= left:
                left -= int(first[1])
                self._arrivals.popleft()
            else:
                first[1] -= left
                left = 0
        if not self._logs:
            self._urgent = False
        self._taken += 1
        self._cond.notify_all()  # room for blocked put()s
        return batch

    def wait_take(self) -> list[dict[str, Any]] | None:
        """Block until a batch is full or due, and take it; ``None`` once closed and empty
        (for a consumer thread)."""
        with self._cond:
            while True:
                due = self._due_in()
                if due == 0.0:
                    return self._take(False)
                if due is None and self._closed:
                    return None
                self._cond.wait(due)

    def done(self) -> None:
        """A batch from :meth:`take` has been written (or given up on)."""
        with self._cond:
            self._taken -= 1
            self._cond.notify_all()

    def hurry(self) -> None:
        """Make what waits now due at once (``flush()``)."""
        with self._cond:
            if self._logs:
                self._urgent = True
                self._cond.notify_all()

    def idle(self) -> bool:
        """Nothing waits and every batch taken has been written."""
        with self._cond:
            return not self._logs and not self._taken

    def wait_room(self) -> None:
        """Block while the buffer is at capacity (the backpressure of a caller on an event loop,
        run in an executor)."""
        with self._cond:
            while len(self._logs) >= self.capacity and not self._closed:
                self._cond.wait(0.5)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing waits and no batch taken is unwritten; ``False`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._logs or self._taken:
                if self._logs:
                    self._urgent = True
                    self._cond.notify_all()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.5 if remaining is None else min(0.5, remaining))
            return True

    def close(self) -> None:
        """Wake every waiter: the consumer takes what is left, then :meth:`wait_take` returns ``None``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False
