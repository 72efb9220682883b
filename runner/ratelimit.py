"""Adaptive rate limiting: fewer requests in flight after a 429, then back up (AIMD).

An :class:`AdaptiveLimiter` bounds how many requests to one service are in flight at once. Each
request holds a :class:`Slot` while it runs and reports how it went:

* a 429 (``slot.rate_limited(retry_after)``) halves the allowed concurrency (from what was
  actually in flight, never below 1) and, with a ``Retry-After``, pauses every new request of
  the process for that long: the whole run slows down instead of each worker hammering the limit;
* a success (``slot.succeeded()``) counts towards the next increase: after as many successes in
  a row as the current limit (one "window"), the limit grows by one, up to ``max_concurrency``.

Requests that were already in flight when the limit was halved do not halve it again: a burst of
429s answering one burst of requests is one signal, not eight.

The limiters are process-wide, one per key, shared by every thread and event loop:
:func:`limiter_for` gets (or creates) one. ``runner.backends.http.backend.HttpBackend`` uses the key
``"backend:" + base_url`` for its senders. Code that calls a model provider or a proxy should
hold a slot of :func:`limiter_for` (``DEFAULT_KEY`` unless it has a better one, e.g. per
provider) around each call, so that every row of every experiment in the process shares the
limit; where holding a slot is not possible, :func:`note_rate_limited` reports a 429 alone.

**Beyond one process.** :func:`add_rate_limit_listener` hears every 429 a limiter of this process
is told about, and :func:`apply_shared_rate_limit` applies one heard elsewhere (without telling
the listeners again). ``runner.pipeline.executor_ratelimit`` joins the two over a Dask cluster, so that a
429 seen by one worker process pauses and slows every worker of the cluster.

>>> from runner.ratelimit import limiter_for
>>> async def call(client, url):                                   # doctest: +SKIP
...     async with limiter_for("llm:openai").slot() as slot:
...         response = await client.post(url)
...         if response.status_code == 429:
...             slot.rate_limited(response.headers.get("retry-after"))
...         elif response.is_success:
...             slot.succeeded()
...         return response
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

__all__ = [
    "DEFAULT_KEY",
    "DEFAULT_MAX_CONCURRENCY",
    "AdaptiveLimiter",
    "Slot",
    "add_rate_limit_listener",
    "apply_shared_rate_limit",
    "limiter_for",
    "note_rate_limited",
    "parse_retry_after",
]

logger = logging.getLogger("runner.ratelimit")

#: The key of the limiter shared by model calls that name no key of their own.
DEFAULT_KEY = "default"
#: The ceiling of a limiter created without one.
DEFAULT_MAX_CONCURRENCY = 64
#: The longest pause a ``Retry-After`` can impose (seconds): a server asking for an hour is
#: better answered by retrying now and then than by a run that looks hung.
MAX_PAUSE = 60.0


def parse_retry_after(value: str | float | None) -> float | None:
    """Seconds from a ``Retry-After`` value (seconds or an HTTP date), or ``None``."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return max(0.0, float(value)) if math.isfinite(value) else None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        import email.utils

        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return max(0.0, seconds) if math.isfinite(seconds) else None


class _Waiter:
    """One blocked ``acquire``: an event loop's future, or a thread's event."""

    __slots__ = ("event", "future", "loop", "woken")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] | None = loop.create_future() if loop is not None else None
        self.event: threading.Event | None = None if loop is not None else threading.Event()
        self.woken = False

    def wake(self) -> None:
        self.woken = True
        if self.event is not None:
            self.event.set()
        elif self.loop is not None and self.future is not None:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(eq=False)
class Slot:
    """Permission for one request; report how it went, then :meth:`release` (the context managers
    of :meth:`AdaptiveLimiter.slot` release it for you)."""

    limiter: AdaptiveLimiter
    #: the limiter's decrease count when the slot was taken
    epoch: int
    released: bool = False

    def succeeded(self) -> None:
        """The request got a successful answer: one step towards a higher limit."""
        self.limiter._succeeded()

    def rate_limited(self, retry_after: str | float | None = None) -> None:
        """The request got a 429: halve the limit (once per burst) and pause for ``retry_after``."""
        self.limiter._rate_limited(parse_retry_after(retry_after), self.epoch)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.limiter._release()


class AdaptiveLimiter:
    """At most :attr:`limit` requests in flight; the limit adapts to 429s (AIMD, see the module).

    Thread-safe; async callers use :meth:`acquire` / :meth:`slot`, threads :meth:`acquire_sync` /
    :meth:`slot_sync`, and both may share one limiter."""

    def __init__(self, max_concurrency: int, *, name: str = "", cooldown: float = 1.0) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.name = name
        self._max = max_concurrency
        self._limit = max_concurrency
        self._in_flight = 0
        self._successes = 0
        self._epoch = 0
        self._paused_until = 0.0
        self._last_decrease = -math.inf
        self._cooldown = cooldown
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        #: how many times the limit was halved, and the lowest it went (for reports and tests)
        self.decreases = 0
        self.lowest = max_concurrency

    def __repr__(self) -> str:
        return f"<AdaptiveLimiter {self.name!r} limit={self._limit}/{self._max} in_flight={self._in_flight}>"

    @property
    def limit(self) -> int:
        """How many requests may be in flight now."""
        return self._limit

    @property
    def max_concurrency(self) -> int:
        return self._max

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def paused_for(self) -> float:
        """Seconds until new requests may start again after a ``Retry-After`` (0 if none)."""
        return max(0.0, self._paused_until - time.monotonic())

    def raise_ceiling(self, max_concurrency: int) -> None:
        """Allow up to ``max_concurrency`` (never lowers the ceiling)."""
        with self._lock:
            if max_concurrency > self._max:
                self._max = max_concurrency
                self._wake()

    # -- taking and giving back ---------------------------------------------------------------
    def _try_take(self) -> float | None:
        """Under the lock: take a slot (``None``), or how long to wait (``0.0``: for a release)."""
        pause = self._paused_until - time.monotonic()
        if pause > 0:
            return pause
        if self._in_flight < self._limit:
            self._in_flight += 1
            return None
        return 0.0

    async def acquire(self) -> Slot:
        """Wait for a slot on the running event loop."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                wait = self._try_take()
                if wait is None:
                    return Slot(self, self._epoch)
                waiter = _Waiter(loop)
                if wait == 0.0:
                    self._waiters.append(waiter)
            assert waiter.future is not None
            try:
                # a pause ends by itself; a full limiter wakes us, and the timeout is a safety net
                await asyncio.wait_for(asyncio.shield(waiter.future), timeout=wait or 1.0)
            except asyncio.TimeoutError:
                pass
            except BaseException:  # cancelled: pass a wake-up we took on to someone else
                self._forget(waiter)
                raise
            self._forget(waiter)

    def acquire_sync(self) -> Slot:
        """Wait for a slot, blocking this thread."""
        while True:
            with self._lock:
                wait = self._try_take()
                if wait is None:
                    return Slot(self, self._epoch)
                waiter = _Waiter(None)
                if wait == 0.0:
                    self._waiters.append(waiter)
            assert waiter.event is not None
            waiter.event.wait(wait or 1.0)
            self._forget(waiter)

    def _forget(self, waiter: _Waiter) -> None:
        with self._lock:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                if waiter.woken:  # woken but not taking the slot now: the next waiter may
                    self._wake()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """``async with limiter.slot() as slot:`` — one request, released on exit."""
        s = await self.acquire()
        try:
            yield s
        finally:
            s.release()

    @contextlib.contextmanager
    def slot_sync(self) -> Iterator[Slot]:
        """``with limiter.slot_sync() as slot:`` — the same from a thread."""
        s = self.acquire_sync()
        try:
            yield s
        finally:
            s.release()

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._wake()

    def _wake(self) -> None:
        """Under the lock: wake as many waiters as there are free slots."""
        free = self._limit - self._in_flight
        while free > 0 and self._waiters:
            self._waiters.popleft().wake()
            free -= 1

    # -- adapting -----------------------------------------------------------------------------
    def _succeeded(self) -> None:
        with self._lock:
            self._successes += 1
            if self._successes >= self._limit and self._limit < self._max:
                self._limit += 1
                self._successes = 0
                self._wake()

    def _rate_limited(self, retry_after: float | None, epoch: int | None, *, share: bool = True) -> None:
        if share and _listeners:
            _tell_listeners(self.name, retry_after)
        now = time.monotonic()
        with self._lock:
            if retry_after:
                self._paused_until = max(self._paused_until, now + min(retry_after, MAX_PAUSE))
            if epoch is not None and epoch != self._epoch:
                return  # in flight before the last decrease: the same burst, already counted
            if epoch is None and now - self._last_decrease < self._cooldown:
                return
            basis = self._in_flight if self._in_flight > 0 else self._limit
            self._limit = max(1, min(self._limit, basis) // 2)
            self._successes = 0
            self._epoch += 1
            self._last_decrease = now
            self.decreases += 1
            self.lowest = min(self.lowest, self._limit)


_limiters: dict[str, AdaptiveLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(key: str = DEFAULT_KEY, max_concurrency: int | None = None) -> AdaptiveLimiter:
    """The process-wide limiter for ``key`` (a service: ``"backend:<url>"``, ``"llm:openai"``...).

    Created on first use with ``max_concurrency`` (default :data:`DEFAULT_MAX_CONCURRENCY`); a
    later call with a larger ``max_concurrency`` raises its ceiling."""
    with _registry_lock:
        limiter = _limiters.get(key)
        if limiter is None:
            limiter = _limiters[key] = AdaptiveLimiter(max_concurrency or DEFAULT_MAX_CONCURRENCY, name=key)
            return limiter
    if max_concurrency is not None:
        limiter.raise_ceiling(max_concurrency)
    return limiter


def note_rate_limited(retry_after: str | float | None = None, key: str = DEFAULT_KEY) -> None:
    """Report a 429 seen outside a slot (e.g. a provider's, surfacing as an error after retries).

    Halves the limit of ``key`` (at most once per second) and pauses it for ``retry_after``."""
    limiter_for(key)._rate_limited(parse_retry_after(retry_after), None)


#: Told of every 429 a limiter of this process hears: ``(limiter key, Retry-After seconds or None)``.
_listeners: list[Callable[[str, float | None], None]] = []


def add_rate_limit_listener(listener: Callable[[str, float | None], None]) -> Callable[[], None]:
    """Call ``listener(key, retry_after)`` for every 429 a limiter of this process is told about
    (a slot's ``rate_limited``, :func:`note_rate_limited`), from the thread that reports it; it
    must not block. Returns a function that removes the listener.

    This is how a limit is shared beyond the process: the listener sends the 429 on, and the
    other processes :func:`apply_shared_rate_limit` it."""
    with _registry_lock:
        _listeners.append(listener)

    def remove() -> None:
        with _registry_lock, contextlib.suppress(ValueError):
            _listeners.remove(listener)

    return remove


def _tell_listeners(key: str, retry_after: float | None) -> None:
    for listener in list(_listeners):
        try:
            listener(key, retry_after)
        except Exception:  # a broken listener must not turn a 429 into a failed row
            logger.exception("a rate-limit listener failed")


def apply_shared_rate_limit(key: str, paused_until: float | None) -> None:
    """A 429 seen by another process, on the limiter ``key`` of this one: pause new requests
    until ``paused_until`` (a ``time.time()`` wall-clock instant; ``None``: no ``Retry-After``)
    and halve the limit (at most once per cooldown). Listeners are not told again."""
    retry_after = None if paused_until is None else max(0.0, paused_until - time.time())
    limiter_for(key)._rate_limited(retry_after, None, share=False)
