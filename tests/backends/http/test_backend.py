"""``HttpBackend`` and the dataset helpers against a real server (sometimes wrapped to misbehave)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from runner.backends.base import Backend
from runner.backends.http.api import fetch_experiment_rows
from runner.backends.http.backend import HttpBackend, retry_delay
from runner.cli.datasets import list_datasets, upload_dataset
from runner.errors import BackendError, DatasetError, NotFoundError, RunNameError
from runner.server import create_app
from runner.store import Store
from tests.servers import ServerHandle, log, start_app, start_server

# -- servers, plain and misbehaving --------------------------------------------------------------


class Recorder:
    """Passes requests through, recording them and how many were in flight at once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls: list[tuple[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def paths(self, path: str) -> int:
        return sum(1 for _, p in self.calls if p.endswith(path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.calls.append((scope["method"], scope["path"]))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class PlainParea(Recorder):
    """A server without the runner's extensions, as the Parea API is."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/api/parea/v1/"):
            await _respond(send, 200, {"status": "ok"})
            return
        if scope["type"] == "http" and scope["path"].endswith(("/trace_logs/batch", "/collections")):
            await _respond(send, 404, {"detail": "Not Found"})
            return
        await super().__call__(scope, receive, send)


class Flaky(Recorder):
    """Fails the first requests to ``path`` with the given statuses, then behaves."""

    def __init__(self, app: ASGIApp, path: str, failures: list[tuple[int, dict[str, str]]], delay: float = 0) -> None:
        super().__init__(app)
        self.path = path
        self.failures = list(failures)
        self.delay = delay
        self.times: list[float] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith(self.path):
            self.times.append(time.monotonic())
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.failures:
                status, headers = self.failures.pop(0)
                self.calls.append((scope["method"], scope["path"]))
                await _respond(send, status, {"detail": "try again"}, headers)
                return
        await super().__call__(scope, receive, send)


async def _respond(send: Send, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    raw = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    head += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": raw})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "runner.db")
    yield s
    s.close()


def _serve(wrapper: Recorder) -> ServerHandle:
    return start_app(wrapper)


def _rows(exp: str, n: int, prefix: str = "r") -> list[dict[str, Any]]:
    """``n`` root logs, each with one child scored ``True``."""
    out = []
    for i in range(n):
        out.append(
            log(f"{prefix}{i}-c", parent=f"{prefix}{i}", experiment_uuid=exp, scores=[{"name": "ok", "score": True}])
        )
        out.append(log(f"{prefix}{i}", experiment_uuid=exp, latency=1.0, scores=[{"name": "n", "score": i}]))
    return out


async def _experiment(backend: HttpBackend, run_name: str | None = None) -> str:
    exp = await backend.create_experiment(project_name="p", name="e", run_name=run_name, metadata={"k": "v"})
    return str(exp["uuid"])


# -- the batch extension and the plain fallback ---------------------------------------------------------


async def test_logs_go_out_in_batches_when_the_server_offers_them(store: Store) -> None:
    rec = Recorder(create_app(store))
    with _serve(rec) as server:
        backend = HttpBackend(server.base_url, batch_size=100)
        assert isinstance(backend, Backend) and backend.location == server.base_url
        exp = await _experiment(backend)
        for i in range(0, 1000, 10):  # 500 rows = 1000 logs, handed over 10 at a time
            await backend.log(_rows(exp, 5, prefix=f"b{i}-"))
        stats = await backend.finish_experiment(
            exp, status="completed", dataset_level_stats=[{"name": "d", "score": 1}]
        )
        rows = await backend.experiment_rows(exp)
        await backend.aclose()
    assert len(stats) == 500 and len(rows) == 500
    assert {s["name"] for s in stats[0]["scores"]} == {"n", "ok"}
    # batches of up to 100 logs: 10 when every batch fills; on a loaded machine the sender's timer
    # may send a part-filled one first (once seen: 11), but never one POST per log or per hand-over
    assert 10 <= rec.paths("/trace_logs/batch") < 100 and rec.paths("/trace_log") == 0
    assert rec.paths("/api/parea/v1/") == 1  # health is asked once
    assert "children_logs" not in rows[0]
    (listed,) = store.list_experiments(experiment_uuids=[exp])
    assert listed["status"] == "completed" and listed["metadata"] == {"k": "v"}


async def test_huge_batches_are_split_by_size(store: Store) -> None:
    rec = Recorder(create_app(store))
    with _serve(rec) as server:
        backend = HttpBackend(server.base_url)
        exp = await _experiment(backend)
        await backend.log([log(f"big{i}", experiment_uuid=exp, output="x" * 3_000_000) for i in range(4)])
        stats = await backend.finish_experiment(exp, status="completed", dataset_level_stats=[])
        await backend.aclose()
    assert len(stats) == 4
    assert rec.paths("/trace_logs/batch") == 2  # 12 MB in one batch: halved until under 8 MB each


async def test_without_the_extension_it_posts_each_log_concurrently(store: Store) -> None:
    rec = PlainParea(create_app(store))
    with _serve(rec) as server:
        backend = HttpBackend(server.base_url, max_concurrency=3)
        exp = await _experiment(backend)
        await backend.log(_rows(exp, 30))
        await backend.flush()
        stats = await backend.finish_experiment(exp, status="completed", dataset_level_stats=[])
        await backend.aclose()
    assert len(stats) == 30
    assert rec.paths("/trace_log") == 60 and rec.paths("/trace_logs/batch") == 0
    assert 1 < rec.max_in_flight <= 3


async def test_create_experiment_retry_is_safe_with_the_uuid_extension(store: Store) -> None:
    # the first POST /experiment is stored but answered with a 502, as a proxy might
    app = create_app(store)

    class LoseFirstAnswer(Recorder):
        lost = False

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"].endswith("/experiment") and not self.lost:
                self.lost = True

                async def swallow(message: Any) -> None:
                    if message["type"] == "http.response.body":
                        await _respond(send, 502, {"detail": "bad gateway"})

                await self.app(scope, receive, swallow)
                return
            await super().__call__(scope, receive, send)

    with _serve(LoseFirstAnswer(app)) as server:
        backend = HttpBackend(server.base_url, backoff=0.01)
        exp = await backend.create_experiment(project_name="p", name="e", run_name="once", metadata={})
        await backend.aclose()
    assert [e["uuid"] for e in store.list_experiments()] == [exp["uuid"]]


async def test_a_taken_run_name_is_a_run_name_error(store: Store) -> None:
    with start_app(create_app(store)) as server:
        backend = HttpBackend(server.base_url)
        await _experiment(backend, run_name="r1")
        with pytest.raises(RunNameError, match="already used"):
            await _experiment(backend, run_name="r1")
        with pytest.raises(RunNameError, match="invalid run name"):
            await _experiment(backend, run_name="no spaces")
        await backend.aclose()


async def test_find_run_and_delete_traces_for_resumed_runs(store: Store) -> None:
    with start_app(create_app(store)) as server:
        backend = HttpBackend(server.base_url)
        exp = await _experiment(backend, run_name="resume-me")
        await backend.log(_rows(exp, 3))
        found = await backend.find_run("p", "resume-me")
        assert found is not None and found["uuid"] == exp
        assert await backend.find_run("p", "resume") is None  # the filter matches parts; the run, whole names
        assert await backend.find_run("other", "resume-me") is None
        await backend.delete_traces(exp, ["r0", "r2"])
        assert [r["trace_id"] for r in await backend.experiment_rows(exp)] == ["r1"]
        await backend.aclose()


async def test_delete_traces_needs_the_extension(store: Store) -> None:
    with _serve(PlainParea(create_app(store))) as server:
        backend = HttpBackend(server.base_url)
        with pytest.raises(BackendError, match="cannot be resumed"):
            await backend.delete_traces("x", ["r0"])
        await backend.aclose()


# -- retries and errors ------------------------------------------------------------------------------------


async def test_transient_failures_are_retried_honouring_retry_after(store: Store) -> None:
    failures = [(503, {"Retry-After": "0.3"}), (429, {}), (500, {})]
    flaky = Flaky(create_app(store), "/trace_logs/batch", failures)
    with _serve(flaky) as server:
        backend = HttpBackend(server.base_url, backoff=0.01)
        exp = await _experiment(backend)
        await backend.log(_rows(exp, 3))
        await backend.flush()
        await backend.aclose()
    assert len(store.experiment_stats(exp)) == 3
    assert len(flaky.times) == 4
    assert flaky.times[1] - flaky.times[0] >= 0.29  # waited as long as Retry-After asked


async def test_a_client_error_is_not_retried_and_is_raised_by_flush(store: Store) -> None:
    rec = Recorder(create_app(store))
    with _serve(rec) as server:
        backend = HttpBackend(server.base_url, backoff=0.01)
        exp = await _experiment(backend)
        await backend.log([log("bad", experiment_uuid="no-such-experiment")])
        with pytest.raises(BackendError, match=r"1 trace log.*not stored.*no-such-experiment"):
            await backend.flush()
        # a refused log does not cost the others of its batch: the batch is halved until the
        # bad log is alone, and that one is stored as an error log naming the server's reason
        await backend.log([{"trace_id": "t", "start_timestamp": "x", "latency": "slow"}, *_rows(exp, 1)])
        await backend.flush()
        await backend.log(_rows(exp, 1, prefix="ok"))
        await backend.flush()  # the failures were reported once; what follows is stored
        await backend.aclose()
    # each refusal is sent once more as an error log, never retried as it is:
    # 1 + 1 (first), 1 + (1 + 1) + 1 (second: both halves), 1 (third)
    assert rec.paths("/trace_logs/batch") == 7
    assert sorted(s["trace_id"] for s in store.experiment_stats(exp)) == ["ok0", "r0"]
    bad = store.get_trace_tree("t")
    assert bad["status"] == "error" and "422" in bad["error"] and "latency" in bad["error"]


async def test_an_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once it is closed
    backend = HttpBackend(f"http://127.0.0.1:{port}/api/parea/v1", max_retries=2, backoff=0.01)
    with pytest.raises(BackendError, match=r"after 3 attempt\(s\).*is the server running"):
        await _experiment(backend)
    await backend.aclose()


async def test_a_wrong_key_is_a_clear_error(tmp_path: Path) -> None:
    with start_server(tmp_path / "k.db", api_keys=["right"]) as server:
        backend = HttpBackend(server.base_url, api_key="wrong")
        with pytest.raises(BackendError, match=r"401.*check the API key"):
            await _experiment(backend)
        await backend.aclose()


def test_retry_delay_honours_retry_after_in_seconds_and_as_a_date() -> None:
    request = httpx.Request("GET", "http://x")
    assert (
        retry_delay(0, httpx.Response(429, headers={"Retry-After": "2"}, request=request), backoff=0.1, max_backoff=1)
        >= 2
    )
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    delay = retry_delay(
        0, httpx.Response(503, headers={"Retry-After": when}, request=request), backoff=0.1, max_backoff=1
    )
    assert 3 <= delay <= 5
    delays = [retry_delay(a, None, backoff=0.1, max_backoff=1.0) for a in range(10) for _ in range(20)]
    assert min(delays) >= 0 and max(delays) <= 1.0  # full jitter, capped


async def test_logging_waits_when_the_server_falls_behind(store: Store) -> None:
    slow = Flaky(create_app(store), "/trace_logs/batch", [], delay=0.1)
    with _serve(slow) as server:
        backend = HttpBackend(server.base_url, batch_size=2, max_concurrency=1, max_pending_batches=1)
        exp = await _experiment(backend)
        started = time.monotonic()
        for i in range(6):  # 12 logs: 6 batches, only 2 of which fit in flight + queue
            await backend.log(_rows(exp, 1, prefix=f"s{i}-"))
        waited = time.monotonic() - started
        await backend.flush()
        await backend.aclose()
    assert waited >= 0.3
    assert len(store.experiment_stats(exp)) == 6


async def test_log_from_worker_threads(store: Store) -> None:
    with start_app(create_app(store)) as server:
        backend = HttpBackend(server.base_url, batch_size=7)
        exp = await _experiment(backend)
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(
                loop.run_in_executor(None, backend.log_from_thread, _rows(exp, 1, prefix=f"t{i}-"), loop)
                for i in range(40)
            )
        )
        stats = await backend.finish_experiment(exp, status="completed", dataset_level_stats=[])
        await backend.aclose()
    assert len(stats) == 40


async def test_nan_scores_are_dropped_as_the_store_does(store: Store) -> None:
    with start_app(create_app(store)) as server:
        backend = HttpBackend(server.base_url)
        exp = await _experiment(backend)
        await backend.log(
            [log("r", experiment_uuid=exp, scores=[{"name": "a", "score": float("nan")}, {"name": "b", "score": 1}])]
        )
        stats = await backend.finish_experiment(exp, status="completed", dataset_level_stats=[])
        await backend.aclose()
    assert stats[0]["scores"] == [{"name": "b", "score": 1.0, "evaluation_metric_id": None, "reason": None}]


# -- datasets -------------------------------------------------------------------------------------------------


def _qa_file(tmp_path: Path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "2+2", "target": 4, "tags": ["math"]}\n{"question": "1+1", "target": "2"}\n')
    return path


async def test_upload_list_and_load_a_dataset_over_http(tmp_path: Path, store: Store) -> None:
    with start_app(create_app(store)) as server:
        uploaded = await asyncio.to_thread(
            upload_dataset, _qa_file(tmp_path), "qa", base_url=server.base_url, chunk_size=1
        )
        assert uploaded == {"id": 1, "name": "qa", "num_rows": 2, "location": server.base_url}
        listed = await asyncio.to_thread(list_datasets, base_url=server.base_url)
        assert [(d["name"], d["num_rows"], d["column_names"]) for d in listed] == [("qa", 2, ["question"])]
        with pytest.raises(DatasetError, match="already exists"):
            await asyncio.to_thread(upload_dataset, _qa_file(tmp_path), "qa", base_url=server.base_url)

        backend = HttpBackend(server.base_url)
        by_name, by_id = await backend.load_dataset("qa"), await backend.load_dataset(1)
        assert by_name == by_id
        cases = list(by_name["test_cases"].values())
        assert [(c["inputs"], c["target"], c["tags"]) for c in cases] == [
            ({"question": "2+2"}, "4", ["math"]),
            ({"question": "1+1"}, "2", []),
        ]
        with pytest.raises(NotFoundError, match="datasets list"):
            await backend.load_dataset("nope")
        await backend.aclose()


def test_upload_and_list_in_the_embedded_store(tmp_path: Path) -> None:
    db = tmp_path / "embedded.db"
    uploaded = upload_dataset([{"q": "a", "target": "b"}], "tiny", db=db)
    assert uploaded["num_rows"] == 1 and uploaded["location"] == str(db)
    assert [d["name"] for d in list_datasets(db=db)] == ["tiny"]
    assert "owner" not in list_datasets(db=db)[0]


def test_upload_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with start_server(tmp_path / "env.db", api_keys=["k"]) as server:
        monkeypatch.setenv("PAREA_BASE_URL", server.base_url)
        monkeypatch.setenv("PAREA_API_KEY", "k")
        upload_dataset([{"q": "a"}], "from-env")
        assert [d["name"] for d in list_datasets()] == ["from-env"]


def test_a_bad_file_uploads_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "a"}\n{not json\n')
    db = tmp_path / "embedded.db"
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2"):
        upload_dataset(bad, "bad", db=db)
    assert list_datasets(db=db) == []
    with pytest.raises(DatasetError, match="no rows"):
        upload_dataset([], "empty", db=db)


def test_listing_needs_the_collections_extension(store: Store) -> None:
    with _serve(PlainParea(create_app(store))) as server, pytest.raises(BackendError, match="cannot list datasets"):
        list_datasets(base_url=server.base_url)


def test_fetch_experiment_rows(store: Store) -> None:
    with start_app(create_app(store)) as server:

        async def run() -> str:
            backend = HttpBackend(server.base_url)
            exp = await _experiment(backend)
            await backend.log(_rows(exp, 2))
            await backend.aclose()
            return exp

        exp = asyncio.run(run())
        rows = fetch_experiment_rows(server.base_url, None, exp)
    assert [r["trace_id"] for r in rows] == ["r0", "r1"]
    assert {s["name"] for s in rows[0]["scores"]} == {"n", "ok"}  # children's scores rolled up
