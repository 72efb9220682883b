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

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

__all__ = ["BATCH_LOGS", "MAX_DELAY", "REQUEST_LOGS", "LogBuffer", "LoopFeeder"]

#: logs per batch of the embedded store (one transaction)
BATCH_LOGS = 1000
#: logs per HTTP request of the batch extension: half a transaction's worth, so that a few
#: requests are in flight at once (and each stays well below the server's body limit)
REQUEST_LOGS = BATCH_LOGS // 2
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
        self._since = 0.0  # when the oldest waiting log arrived (monotonic seconds)
        # put() takes the plain lock (the hot path); waiting goes through the condition on it
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
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
        with self._lock:
            if block and len(self._logs) >= self.capacity:
                while len(self._logs) >= self.capacity and not self._closed:
                    self._cond.wait(0.5)
            was_empty = not self._logs
            if was_empty:
                self._since = time.monotonic()
            self._logs.extend(logs)
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
        return max(0.0, self._since + self.max_delay - time.monotonic())

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
        # what is left counts as old as what was taken: it goes with the next batch at once
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


class LoopFeeder:
    """Feeds a :class:`LogBuffer`'s batches to ``send`` (a coroutine function) on one event loop:
    a full batch at once, a partial one when its oldest log comes due. ``send`` may wait (for
    room in a queue): that is the backpressure, and a worker thread's :meth:`put_from_thread`
    blocks once the buffer is at capacity meanwhile."""

    def __init__(self, buffer: LogBuffer, send: Callable[[list[dict[str, Any]]], Awaitable[None]]) -> None:
        self.buffer = buffer
        self._send = send
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Make sure the feeding task runs on the running loop."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop, self._wake = loop, asyncio.Event()
            self._task = loop.create_task(self._feed(), name="runner-log-feeder")

    def put_from_thread(self, logs: Sequence[dict[str, Any]], loop: asyncio.AbstractEventLoop) -> bool:
        """Add logs from a worker thread; ``False`` (nothing added) when not feeding on ``loop``."""
        if self._task is None or self._task.done() or self._loop is not loop or self._wake is None:
            return False
        if self.buffer.put(logs, block=True):
            loop.call_soon_threadsafe(self._wake.set)  # a full batch: wake the feeder now
        return True

    async def put(self, logs: Sequence[dict[str, Any]]) -> None:
        """Add logs on the loop; full (or due) batches are sent from here, waiting as ``send`` does."""
        self.start()
        self.buffer.put(logs)
        await self._send_ready(force=False)

    async def drain(self) -> None:
        """Send everything waiting now, and wait until batches taken meanwhile are sent too."""
        while True:
            await self._send_ready(force=True)
            if self.buffer.idle() or self._task is None or self._task.done():
                return
            await asyncio.sleep(0.005)  # the feeder is sending a batch: wait for it

    async def _send_ready(self, *, force: bool) -> None:
        while (batch := self.buffer.take(force=force)) is not None:
            try:
                await self._send(batch)
            finally:
                self.buffer.done()

    async def _feed(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            due = self.buffer.due_in()
            if due is None or due > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.buffer.max_delay if due is None else due)
                wake.clear()
            await self._send_ready(force=False)

    def stop(self) -> asyncio.Task[None] | None:
        """Stop feeding; returns the task to cancel and await (``None`` if none ran)."""
        task, self._task, self._loop = self._task, None, None
        return task
