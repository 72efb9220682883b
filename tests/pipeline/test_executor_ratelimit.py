"""The cluster-wide rate limit: a 429 with Retry-After seen by one Dask worker process holds back
every worker process. A real LocalCluster (2 worker processes) and a fake OpenAI-compatible
provider on a real loopback socket, which records when each request arrived and from which pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from runner import Experiment  # noqa: E402
from runner.store import Store  # noqa: E402
from tests.dask_workers import extra_worker  # noqa: E402
from tests.proxy_fakes import _answer, _openai_body, serve  # noqa: E402

pytestmark = pytest.mark.timeout(240)

RETRY_AFTER = 5.0  # what the provider asks for with its one 429
HOLD = 2.0  # the other requests in flight at the 429 are answered this long after it
IN_FLIGHT = 4  # the experiment's n_workers: how many rows (each one request) are in flight at most


class _Provider:
    """A fake OpenAI chat endpoint; ``arrivals`` is ``(time.time(), pid)`` for every request (the
    pid is the last word of the last message: see :func:`ask`). Subclasses answer in ``_handle``."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, int]] = []
        self._lock = threading.Lock()

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        raise NotImplementedError

    async def _arrived(self, request: Request) -> tuple[dict[str, Any], int]:
        """The request's body and the pid that sent it (recorded under the lock by the caller)."""
        body = json.loads(await request.body())
        return body, int(body["messages"][-1]["content"].split()[-1])


class RateLimitingProvider(_Provider):
    """Holds the first requests until every row in flight has sent one, from both worker
    processes; answers the last of them 429 (``Retry-After: 5``) and the others 200, ``HOLD``
    seconds later; every later request gets a 200 at once."""

    def __init__(self) -> None:
        super().__init__()
        self.limited: tuple[float, int] | None = None  # when the 429 was sent, and to which pid
        self._both: asyncio.Event | None = None

    async def _handle(self, request: Request) -> Response:
        body, pid = await self._arrived(request)
        with self._lock:
            self.arrivals.append((time.time(), pid))
            first_phase = self.limited is None
            pids = {p for _, p in self.arrivals}
            n_arrived = len(self.arrivals)
        if first_phase:
            if self._both is None:
                self._both = asyncio.Event()
            # every row in flight (n_workers=4) waits on the provider: no request races the 429
            if len(pids) >= 2 and n_arrived >= IN_FLIGHT and not self._both.is_set():
                self._both.set()
                self.limited = (time.time(), pid)
                error = {"error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}}
                return JSONResponse(error, 429, {"retry-after": str(int(RETRY_AFTER))})
            # after a minute without every row at the provider the test fails, saying so
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._both.wait(), timeout=60)
            if self.limited is not None:
                await asyncio.sleep(max(0.0, self.limited[0] + HOLD - time.time()))
        return JSONResponse(_openai_body(_answer(body, "openai")))


def ask(question: str) -> str:
    from runner import completion

    # the pid tells the provider which worker process sent the request
    return completion(f"{question} {os.getpid()}", model="gpt-4o-mini").content


def test_a_429_on_one_worker_pauses_every_worker_until_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the embedded door: the workers call the provider themselves (through a server, the server would)
    import runner.integrations.llm

    db = tmp_path / "runner.db"
    fake = RateLimitingProvider()
    with serve(fake.app()) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        # workers started now inherit the provider's address, as a real cluster's would be configured
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=IN_FLIGHT, processes=True, host="127.0.0.1", dashboard_address=":0",
            silence_logs=40,
        ) as c, distributed.Client(c) as client:
            data = [{"question": f"q{i}"} for i in range(16)]
            exp = Experiment(name="limited", data=data, func=ask, n_workers=IN_FLIGHT, db=db)
            result = exp.run(quiet=True, executor=client)
        runner.integrations.llm.close()

    assert fake.limited is not None, f"the provider never saw both worker processes at once: {fake.arrivals}"
    limited_at, limited_pid = fake.limited
    before = [(t, p) for t, p in fake.arrivals if t < limited_at]
    after = [(t, p) for t, p in fake.arrivals if t > limited_at]
    assert len(before) == IN_FLIGHT  # every row in flight had asked; the last one got the 429
    assert len({p for _, p in before} | {limited_pid}) == 2  # both processes had rows in flight
    # the behaviour: after the 429, no worker process sent anything before Retry-After had passed
    early = [(round(t - limited_at, 3), p) for t, p in after if t < limited_at + RETRY_AFTER]
    assert not early, f"requests sent {RETRY_AFTER} s Retry-After too early (seconds after the 429, pid): {early}"
    # and every row still completed: the 429'd one by its retry, the others after the pause
    assert result.n_total == 16 and result.n_errors == 0
    assert len(fake.arrivals) == 17  # 16 rows, one of them twice
    store = Store(db)
    try:
        rows = store.experiment_rows(result.experiment_uuid)
    finally:
        store.close()
    assert len(rows) == 16 and all(r["status"] == "success" for r in rows)


LATE_RETRY_AFTER = 50  # long enough for a worker process to start and join on a loaded machine


class LimitsOnce(_Provider):
    """Answers the first request 429 (``Retry-After: 50``) and every later one 200 at once."""

    def __init__(self) -> None:
        super().__init__()
        self.limited: float | None = None

    async def _handle(self, request: Request) -> Response:
        body, pid = await self._arrived(request)
        with self._lock:
            self.arrivals.append((time.time(), pid))
            first = self.limited is None
            if first:
                self.limited = time.time()
        if first:
            error = {"error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}}
            return JSONResponse(error, 429, {"retry-after": str(LATE_RETRY_AFTER)})
        return JSONResponse(_openai_body(_answer(body, "openai")))


def ask_when(question: str) -> dict[str, float]:
    started = time.time()
    return {"started": started, "pid": os.getpid(), "answer": len(ask(question))}


def test_a_worker_that_joins_after_a_429_waits_out_the_pause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runner.integrations.llm

    db = tmp_path / "runner.db"
    fake = LimitsOnce()
    box: dict[str, object] = {}
    with serve(fake.app()) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        with distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=":0",
            silence_logs=40,
        ) as c, distributed.Client(c) as client:
            # a run whose one row gets the 429 on the first worker (and waits it out there)
            first = Experiment(name="first", data=[{"question": "q"}], func=ask, n_workers=1, db=db)
            t = threading.Thread(target=lambda: box.update(first=first.run(quiet=True, executor=client)))
            t.start()
            wait = threading.Event()
            deadline = time.monotonic() + 120
            while fake.limited is None and time.monotonic() < deadline:
                wait.wait(0.05)
            assert fake.limited is not None, "the provider never got the first request"
            # give the cluster up to 10 s to keep the pause (it takes milliseconds; the old code never did)
            deadline = time.monotonic() + 10
            while not client.get_metadata(["runner-ratelimit"], default=None) and time.monotonic() < deadline:
                wait.wait(0.05)
            # a second worker process joins now; only it has the resource the next run's rows need (both at once)
            with extra_worker(c.scheduler_address, "late=2", "late"):
                client.wait_for_workers(2, timeout=120)
                data = [{"question": f"late{i}"} for i in range(2)]
                second = Experiment(name="late", data=data, func=ask_when, resources={"late": 1}, n_workers=2, db=db)
                result = second.run(quiet=True, executor=client)
                t.join(120)
        runner.integrations.llm.close()

    assert (result.n_total, result.n_errors) == (2, 0)
    store = Store(db)
    try:
        outputs = [json.loads(r["output"]) for r in store.experiment_rows(result.experiment_uuid)]
    finally:
        store.close()
    pause_end = fake.limited + LATE_RETRY_AFTER
    late_pid = {int(o["pid"]) for o in outputs}
    assert len(late_pid) == 1
    # not vacuous: the late worker's rows began while the pause was still on
    assert all(o["started"] < pause_end for o in outputs), "the late worker joined after the pause had ended"
    sent = [t for t, p in fake.arrivals if p in late_pid]
    assert len(sent) == 2
    early = [round(t - fake.limited, 3) for t in sent if t < pause_end]
    assert not early, f"the late worker called the provider {early} s after the 429 (Retry-After {LATE_RETRY_AFTER})"
    first_result = box["first"]
    assert getattr(first_result, "n_errors", None) == 0


class RecordsCompletions:
    """An ASGI wrapper around the real server app: records ``(time.time(), pid)`` for every
    ``POST .../completion`` as it arrives (the pid from the prompt, as ``ask`` writes it)."""

    def __init__(self, app: object) -> None:
        self.app = app
        self.arrivals: list[tuple[float, int]] = []

    async def __call__(self, scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] == "http" and str(scope["path"]).endswith("/completion"):
            at = time.time()
            messages = []
            more = True
            while more:
                message = await receive()  # type: ignore[operator]
                messages.append(message)
                more = bool(message.get("more_body"))
            body = json.loads(b"".join(m.get("body", b"") for m in messages))
            self.arrivals.append((at, int(body["llm_configuration"]["messages"][-1]["content"].split()[-1])))
            queued = iter(messages)

            async def replay() -> object:
                return next(queued, None) or await receive()  # type: ignore[operator]

            await self.app(scope, replay, send)  # type: ignore[operator]
            return
        await self.app(scope, receive, send)  # type: ignore[operator]


def test_through_the_servers_completion_a_429_pauses_every_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the HTTP door: the workers call the server's /completion, the server calls the provider;
    # the server gives up at the provider's 429 (no retries of its own here) and says Retry-After
    import runner.integrations.llm
    from runner.proxy import Proxy, ProxySettings, SQLiteCompletionCache
    from runner.server import create_app
    from tests.servers import start_app

    fake = RateLimitingProvider()
    with serve(fake.app()) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        store = Store(tmp_path / "server.db")
        app = create_app(store)
        app.state.completion_proxy = Proxy(SQLiteCompletionCache(str(tmp_path / "server.db")),
                                           settings=ProxySettings.from_env(max_retries=0))
        door = RecordsCompletions(app)
        with start_app(door, store=store) as server, distributed.LocalCluster(
            n_workers=2, threads_per_worker=IN_FLIGHT, processes=True, host="127.0.0.1", dashboard_address=":0",
            silence_logs=40,
        ) as c, distributed.Client(c) as client:
            data = [{"question": f"q{i}"} for i in range(16)]
            # the row that got the 429 runs again (retries=1), after the pause like every other
            exp = Experiment(name="limited", data=data, func=ask, n_workers=IN_FLIGHT, retries=1, retry_backoff=0.01,
                             base_url=server.base_url)
            result = exp.run(quiet=True, executor=client)
            rows = server.store.experiment_rows(result.experiment_uuid) if server.store else []
        runner.integrations.llm.close()

    assert fake.limited is not None, f"the provider never saw both worker processes at once: {fake.arrivals}"
    limited_at, _ = fake.limited
    asked = [(t, p) for t, p in door.arrivals if t < limited_at]
    assert len(asked) == IN_FLIGHT and len({p for _, p in asked}) == 2  # both processes had rows in flight
    # the behaviour: after the 429, no worker process sent the server anything before Retry-After had passed
    later = [(t, p) for t, p in door.arrivals if t > limited_at]
    early = [(round(t - limited_at, 3), p) for t, p in later if t < limited_at + RETRY_AFTER]
    assert not early, f"requests sent to the server too early (seconds after the 429, pid): {early}"
    assert {p for _, p in later} == {p for _, p in asked}  # and both went on after the pause
    assert result.n_total == 16 and result.n_errors == 0
    assert len(rows) == 16 and all(r["status"] == "success" for r in rows)
