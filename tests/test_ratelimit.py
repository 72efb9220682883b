"""Adaptive rate limiting: a 429 halves the requests in flight and pauses them; successes bring
them back; the backend's senders and a whole run slow down instead of hammering the limit."""

from __future__ import annotations

import asyncio
import email.utils
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from runner import Experiment
from runner.backends.base import Backend
from runner.backends.http.backend import HttpBackend
from runner.backends.target import Target
from runner.ratelimit import AdaptiveLimiter, limiter_for, note_rate_limited, parse_retry_after
from runner.server import create_app
from runner.store import Store
from tests.servers import log, start_app

# -- the limiter ----------------------------------------------------------------------------------------


async def test_a_burst_of_429s_halves_once_and_successes_bring_the_limit_back() -> None:
    limiter = AdaptiveLimiter(8)
    slots = [await limiter.acquire() for _ in range(8)]
    assert limiter.in_flight == 8
    for s in slots:  # eight answers to one burst: one signal
        s.rate_limited()
        s.release()
    assert limiter.limit == 4 and limiter.decreases == 1
    later = await limiter.acquire()
    later.rate_limited()  # sent after the decrease: a new signal, halving what is in flight (1)
    later.release()
    assert limiter.limit == 1 and limiter.lowest == 1
    for expected in (2, 3, 4):  # one more after each window of `limit` successes in a row
        for _ in range(limiter.limit):
            async with limiter.slot() as s:
                s.succeeded()
        assert limiter.limit == expected
    for _ in range(100):
        async with limiter.slot() as s:
            s.succeeded()
    assert limiter.limit == 8  # never above the ceiling


async def test_a_full_limiter_makes_callers_wait_and_cancelling_a_wait_leaks_nothing() -> None:
    limiter = AdaptiveLimiter(2)
    a, b = await limiter.acquire(), await limiter.acquire()
    waiting = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    a.release()
    c = await asyncio.wait_for(limiter.acquire(), 1)
    b.release()
    c.release()
    assert limiter.in_flight == 0


async def test_retry_after_pauses_new_requests_for_everyone() -> None:
    limiter = AdaptiveLimiter(4)
    async with limiter.slot() as s:
        s.rate_limited("0.3")
    started = time.monotonic()
    async with limiter.slot():
        pass
    assert time.monotonic() - started >= 0.25
    assert limiter.paused_for() == 0.0


def test_threads_and_event_loops_share_one_limit() -> None:
    limiter = AdaptiveLimiter(3)
    now = {"in": 0, "peak": 0}
    lock = threading.Lock()

    def hold() -> None:
        with lock:
            now["in"] += 1
            now["peak"] = max(now["peak"], now["in"])
        time.sleep(0.02)
        with lock:
            now["in"] -= 1

    def thread_worker() -> None:
        for _ in range(5):
            with limiter.slot_sync():
                hold()

    async def loop_worker() -> None:
        for _ in range(5):
            async with limiter.slot():
                await asyncio.to_thread(hold)

    def loop_thread() -> None:
        async def main() -> None:
            await asyncio.gather(*(loop_worker() for _ in range(4)))

        asyncio.run(main())

    threads = [threading.Thread(target=thread_worker) for _ in range(4)] + [threading.Thread(target=loop_thread)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert now["peak"] == 3 and limiter.in_flight == 0


def test_the_process_wide_limiters_and_note_rate_limited() -> None:
    key = f"test-{time.monotonic_ns()}"
    limiter = limiter_for(key, 10)
    assert limiter_for(key) is limiter and limiter.limit == 10
    limiter_for(key, 20)
    assert limiter.max_concurrency == 20  # a larger ceiling is taken, a smaller one ignored
    note_rate_limited("0.2", key=key)
    note_rate_limited(None, key=key)  # within the cooldown: the same episode
    assert limiter.limit == 5 and 0.1 < limiter.paused_for() <= 0.2


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("2") == 2.0 and parse_retry_after(1.5) == 1.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None and parse_retry_after("nan") is None
    when = parse_retry_after(email.utils.formatdate(time.time() + 5, usegmt=True))
    assert when is not None and 3 <= when <= 5


# -- a server answering 429 for a while ---------------------------------------------------------------------


class RateLimitedFor:
    """Answers 429 (``Retry-After``) to ``path`` for ``seconds`` after its first request there,
    then passes through; each request takes ``delay``. Records every request's start and the
    number then in flight, and (``window``: a callable reading a client's limiter) the client's
    concurrency window as each request arrived."""

    def __init__(self, app: ASGIApp, path: str, seconds: float, retry_after: str = "0.2", delay: float = 0.03) -> None:
        self.app = app
        self.path = path
        self.seconds = seconds
        self.retry_after = retry_after
        self.delay = delay
        self.first: float | None = None
        self.in_flight = 0
        self.starts: list[tuple[float, int]] = []
        self.limited = 0
        self.window: Callable[[], int] | None = None
        self.windows: list[int] = []

    @property
    def ends(self) -> float:
        assert self.first is not None
        return self.first + self.seconds

    def peak(self, since: float, until: float) -> int:
        return max((n for t, n in self.starts if since <= t < until), default=0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith(self.path):
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.in_flight += 1
        self.starts.append((now, self.in_flight))
        if self.window is not None:
            self.windows.append(self.window())
        try:
            await asyncio.sleep(self.delay)
            if now < self.ends:
                self.limited += 1
                body = json.dumps({"detail": "slow down"}).encode()
                headers = [(b"content-type", b"application/json"), (b"retry-after", self.retry_after.encode())]
                await send({"type": "http.response.start", "status": 429, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def _rows(exp: str, n: int) -> list[dict[str, Any]]:
    return [log(f"r{i}", experiment_uuid=exp) for i in range(n)]


async def test_429s_slow_the_senders_down_then_they_speed_up_again(tmp_path: Path) -> None:
    # Asserts the limiter's window (its state, changed only by 429s and successes), never how
    # many requests happened to be in flight at some instant: that depends on the machine's load.
    store = Store(tmp_path / "r.db")
    limited = RateLimitedFor(create_app(store), "/trace_logs/batch", seconds=1.0)
    with start_app(limited, store=store) as server:
        backend = HttpBackend(server.base_url, max_concurrency=8, batch_size=5, max_retries=20, backoff=0.05)
        limited.window = lambda: backend.limiter.limit
        exp = (await backend.create_experiment(project_name="p", name="e", run_name=None, metadata={}))["uuid"]
        await backend.log(_rows(exp, 500))  # 100 batches
        await backend.flush()
        await backend.aclose()
        assert len(store.experiment_stats(exp)) == 500  # each log once
        assert store.count_traces() == 500
    windows = limited.windows
    lowest_at = windows.index(min(windows))
    assert windows[0] == 8  # the first requests go out with the full window...
    assert min(windows) <= 4 and backend.limiter.decreases >= 1  # ...the 429s halve it at least once...
    assert backend.limiter.lowest == min(windows)
    # ...and the successes after the 429s widen it again
    assert max([*windows[lowest_at:], backend.limiter.limit]) > min(windows)
    # paused by Retry-After and halved: a few 429s a second, not every sender retrying on its own
    assert limited.limited <= 30
    print(f"\n429 for 1 s (backend): {limited.limited} requests refused; window 8 -> lowest {min(windows)} -> "
          f"{backend.limiter.limit} at the end; 500 logs sent, 500 stored")


class _Batches(Experiment):
    def _backend(self, target: Target) -> Backend:
        assert target.base_url is not None
        return HttpBackend(target.base_url, batch_size=10, max_retries=20, backoff=0.05)


def test_a_run_against_a_server_answering_429_for_a_while_stores_every_row_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    limited = RateLimitedFor(create_app(store), "/trace_logs/batch", seconds=1.0, retry_after="0.25")
    n = 400

    async def task(i: int) -> int:
        await asyncio.sleep(0.003)
        return i

    with start_app(limited, store=store) as server:
        exp = _Batches(name="limited", data=[{"i": i} for i in range(n)], func=task, base_url=server.base_url)
        result = exp.run(quiet=True)
        rows = store.experiment_rows(result.experiment_uuid)
        total = store._query("SELECT count(*) FROM traces WHERE experiment_uuid=?", (result.experiment_uuid,))[0][0]
    assert result.status == "completed" and result.spooled == 0 and limited.limited > 0
    assert len(rows) == total == len({r["metadata"]["row_id"] for r in rows}) == n
    print(f"\n429 for 1 s (whole run): {n} rows sent, {len(rows)} stored, 0 duplicated, {n - len(rows)} lost; "
          f"{limited.limited} requests refused")


# -- beyond one process: listeners and shared 429s ------------------------------------------------


def test_listeners_hear_local_429s_and_a_shared_one_pauses_without_echo() -> None:
    from runner.ratelimit import MAX_PAUSE, add_rate_limit_listener, apply_shared_rate_limit

    heard: list[tuple[str, float | None]] = []
    remove = add_rate_limit_listener(lambda key, after: heard.append((key, after)))
    try:
        note_rate_limited("30", key="test:listened")
        assert heard == [("test:listened", 30.0)]
        shared = limiter_for("test:shared", 8)
        apply_shared_rate_limit("test:shared", time.time() + MAX_PAUSE)  # heard by another process
        assert shared.paused_for() > MAX_PAUSE / 2 and shared.limit == 4
        apply_shared_rate_limit("test:shared", None)  # a second one within the cooldown: no new halving
        assert shared.limit == 4
        assert heard == [("test:listened", 30.0)]  # not told again: no echo between processes
    finally:
        remove()
    note_rate_limited(None, key="test:listened")
    assert len(heard) == 1
