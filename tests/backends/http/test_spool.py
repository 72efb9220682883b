"""The spool: logs a run could not send are kept on disk, retried, and delivered exactly once.

The server here runs in a thread and is stopped (connections refused) and started again on the
same port; ``test_crash.py`` does the same with ``kill -9`` of a real ``serve`` process.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from runner import Experiment
from runner.backends.base import Backend
from runner.backends.http.backend import HttpBackend
from runner.backends.http.outbox import Outbox
from runner.backends.http.spool import Spool, default_spool_dir, spool_files
from runner.backends.target import Target
from runner.cli.main import main
from runner.errors import BackendError
from runner.server import create_app
from runner.store import Store
from tests.servers import ServerHandle, log

# -- a server that can go away and come back on the same port -----------------------------------------


class _Server(uvicorn.Server):
    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter += 1
            await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_on(port: int, db: Path) -> ServerHandle:
    """The runner's server over ``db`` on ``port`` (which may have served before)."""
    import threading

    store = Store(db)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as uvicorn does on its own sockets
    sock.bind(("127.0.0.1", port))
    server = _Server(uvicorn.Config(create_app(store), log_level="critical", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.005)
    return ServerHandle(server, thread, port, store)


def stored(db: Path, experiment_uuid: str) -> tuple[int, int, int]:
    """(root traces, all traces, distinct row ids) of the experiment in the store at ``db``."""
    store = Store(db)
    try:
        rows = store.experiment_rows(experiment_uuid)
        total = store._query("SELECT count(*) FROM traces WHERE experiment_uuid=?", (experiment_uuid,))[0][0]
    finally:
        store.close()
    return len(rows), int(total), len({r["metadata"]["row_id"] for r in rows})


def _logs(exp: str, n: int, prefix: str, score: float = float("nan")) -> list[dict[str, Any]]:
    """``n`` rows: each a root (with a NaN score by default: the client drops it) and one child."""
    out = []
    for i in range(n):
        root = f"{prefix}{i}"
        meta = {"row_id": root}
        out.append(log(f"{root}-c", parent=root, experiment_uuid=exp, scores=[{"name": "ok", "score": 1}]))
        out.append(log(root, experiment_uuid=exp, metadata=meta, scores=[{"name": "n", "score": score}]))
    return out


# -- the file ---------------------------------------------------------------------------------------


def test_spool_file_round_trip_and_removal(tmp_path: Path) -> None:
    spool = Spool.for_experiment(tmp_path / "spool", "exp-1", "http://x/api/parea/v1")
    first = spool.append([{"trace_id": "a"}, {"trace_id": "b"}])
    second = spool.append([{"trace_id": "c"}])
    spool.mark(first.seq)
    spool.record_finish("completed", [{"name": "acc", "score": 0.5}])
    state = Spool(spool.path).state()
    assert (state.experiment_uuid, state.base_url) == ("exp-1", "http://x/api/parea/v1")
    assert [b.seq for b in state.pending] == [second.seq] and state.pending_logs == 1
    assert spool.read(state.pending[0]) == [{"trace_id": "c"}]
    assert state.finish == {"status": "completed", "dataset_level_stats": [{"name": "acc", "score": 0.5}]}
    assert not spool.remove_if_done()  # a batch and the finish call are still to go
    spool.mark(second.seq)
    assert not spool.remove_if_done()
    spool.mark_finished()
    assert spool.remove_if_done() and not spool.path.exists()


def test_a_line_torn_by_a_crash_is_ignored_and_the_next_append_starts_afresh(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl", experiment_uuid="e", base_url="u")
    spool.append([{"trace_id": "a"}])
    with open(spool.path, "ab") as f:
        f.write(b'{"batch":2,"n":1,"logs":[{"trace_')  # the process died mid-write
    assert [b.seq for b in Spool(spool.path).state().pending] == [1]
    again = Spool(spool.path)
    batch = again.append([{"trace_id": "b"}])
    assert batch.seq == 3  # the torn batch's number is not reused
    state = Spool(spool.path).state()
    assert [again.read(b) for b in state.pending] == [[{"trace_id": "a"}], [{"trace_id": "b"}]]


def test_the_spool_lives_next_to_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_spool_dir() == (Path(".runner") / "spool").absolute()
    monkeypatch.setenv("RUNNER_DB", str(tmp_path / "elsewhere" / "r.db"))
    assert default_spool_dir() == tmp_path / "elsewhere" / "spool"
    assert HttpBackend("http://127.0.0.1:9/api/parea/v1").spool_dir == tmp_path / "elsewhere" / "spool"


# -- the backend: away, back, exactly once --------------------------------------------------------------


async def test_logs_sent_while_the_server_is_away_are_spooled_then_delivered_once(tmp_path: Path) -> None:
    db, port = tmp_path / "r.db", free_port()
    server = serve_on(port, db)
    backend = HttpBackend(
        f"http://127.0.0.1:{port}/api/parea/v1", batch_size=10, max_retries=1, backoff=0.01, max_backoff=0.1,
        spool_dir=tmp_path / "spool", max_pending_batches=2,
    )
    exp = (await backend.create_experiment(project_name="p", name="e", run_name=None, metadata={}))["uuid"]
    await backend.log(_logs(exp, 50, "before"))
    await backend.flush()
    server.stop()  # connections refused from now on
    slowest = 0.0
    for i in range(20):  # 20 rows x 2 logs = 4 batches per step, 80 batches: most go to disk
        started = time.monotonic()
        await backend.log(_logs(exp, 20, f"away{i}-"))
        slowest = max(slowest, time.monotonic() - started)
    await asyncio.sleep(0.3)
    assert backend.outage and backend.spooled > 0
    assert slowest < 2.0, "rows must keep going while the server is away"
    [path] = spool_files(tmp_path / "spool")
    server = serve_on(port, db)
    try:
        await backend.flush()  # the replayer gets through and delivers the spool
        assert backend.spooled == 0 and not backend.outage
        await backend.finish_experiment(exp, status="completed", dataset_level_stats=[])
        await backend.aclose()
    finally:
        server.stop()
    assert not path.exists()
    assert stored(db, exp) == (50 + 400, 2 * (50 + 400), 450)  # every row once, children too


async def test_a_full_disk_is_a_clear_error_naming_the_spool(tmp_path: Path) -> None:
    db, port = tmp_path / "r.db", free_port()
    server = serve_on(port, db)
    backend = HttpBackend(
        server.base_url, batch_size=4, max_retries=0, spool_dir=tmp_path / "spool", drain_timeout=0.2
    )
    exp = (await backend.create_experiment(project_name="p", name="e", run_name=None, metadata={}))["uuid"]
    server.stop()
    (tmp_path / "spool").mkdir()
    path = tmp_path / "spool" / f"{exp}.jsonl"
    path.symlink_to("/dev/full")  # every write: ENOSPC
    await backend.log(_logs(exp, 4, "r"))
    with pytest.raises(BackendError, match=rf"8 trace log\(s\) were not stored.*cannot spool.*{exp}\.jsonl.*space"):
        await backend.flush()
    await backend.aclose()


async def test_an_unwritable_spool_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the spool folder should be")
    backend = HttpBackend(
        f"http://127.0.0.1:{free_port()}/api/parea/v1", max_retries=0, spool_dir=blocker, drain_timeout=0.1
    )
    backend.extensions = frozenset({"trace_logs_batch"})
    await backend.log(_logs("e", 2, "r"))
    with pytest.raises(BackendError, match=r"cannot spool 4 trace log\(s\) to .*not-a-folder"):
        await backend.flush()
    await backend.aclose()


def test_a_replay_after_a_partial_delivery_stores_each_log_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A batch delivered but not marked (the process died in between) is delivered again: harmless."""
    db = tmp_path / "r.db"
    with serve_on(free_port(), db) as server:

        async def partly_delivered() -> tuple[str, Spool]:
            backend = HttpBackend(server.base_url)
            exp = (await backend.create_experiment(project_name="p", name="e", run_name=None, metadata={}))["uuid"]
            spool = Spool.for_experiment(default_spool_dir(), exp, server.base_url)
            batches = [spool.append(_logs(exp, 10, f"b{i}-", score=1.0)) for i in range(3)]
            await backend.log(_logs(exp, 10, "b0-", 1.0) + _logs(exp, 10, "b1-", 1.0))  # two of them got through...
            await backend.flush()
            await backend.aclose()
            spool.mark(batches[0].seq)  # ...and only the first was marked
            spool.record_finish("completed", [])
            return exp, spool

        exp, spool = asyncio.run(partly_delivered())
        assert main(["sync", "--base-url", server.base_url]) == 0
        assert f"synced 40 trace log(s) of experiment {exp}" in capsys.readouterr().out
        assert main(["sync"]) == 0
        assert "nothing to sync" in capsys.readouterr().out
    assert not spool.path.exists()
    assert stored(db, exp) == (30, 60, 30)


async def test_reading_an_experiments_rows_delivers_what_an_earlier_process_spooled(tmp_path: Path) -> None:
    """A resumed run reads the stored rows first: a spool left by the interrupted run goes first."""
    db = tmp_path / "r.db"
    with serve_on(free_port(), db) as server:
        backend = HttpBackend(server.base_url)
        exp = (await backend.create_experiment(project_name="p", name="e", run_name=None, metadata={}))["uuid"]
        left = Spool.for_experiment(default_spool_dir(), exp, server.base_url)
        left.append(_logs(exp, 5, "left-", score=1.0))
        rows = await backend.experiment_rows(exp)
        await backend.aclose()
    assert sorted(r["trace_id"] for r in rows) == [f"left-{i}" for i in range(5)]
    assert not left.path.exists()


# -- a whole run ---------------------------------------------------------------------------------------


class _Configured(Experiment):
    """An experiment whose HTTP backend has test-sized batches, retries and waits."""

    backend_options: dict[str, Any] = {}  # noqa: RUF012 - set per test, read in _backend

    def _backend(self, target: Target) -> Backend:
        assert target.base_url is not None
        return HttpBackend(target.base_url, **self.backend_options)


@pytest.fixture
def quick_http(tmp_path: Path) -> Iterator[dict[str, Any]]:
    options: dict[str, Any] = {
        "batch_size": 10,
        "max_retries": 1,
        "backoff": 0.02,
        "max_backoff": 0.2,
        "drain_timeout": 0.5,
        "spool_dir": default_spool_dir(),
    }
    _Configured.backend_options = options
    yield options
    _Configured.backend_options = {}


def test_a_run_that_ends_while_the_server_is_away_says_so_and_sync_delivers_it(
    tmp_path: Path, quick_http: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    db, port = tmp_path / "r.db", free_port()
    box: dict[str, ServerHandle] = {"server": serve_on(port, db)}
    n = 120

    async def task(i: int) -> int:
        if i == 40:
            box["server"].stop()  # the server goes away a third of the way in, for good
        await asyncio.sleep(0.002)
        return i

    exp = _Configured(
        name="away",
        data=[{"i": i} for i in range(n)],
        func=task,
        evals=[lambda log: float(log.output % 2 == 0)],
        base_url=f"http://127.0.0.1:{port}/api/parea/v1",
        n_workers=1,
    )
    result = exp.run()
    out = capsys.readouterr().out
    assert result.status == "spooled" and result.n_total == n
    assert result.spool_path is not None and Path(result.spool_path).exists()
    assert result.spooled > 0
    assert "`python -m runner sync` delivers them" in out and result.spool_path in out
    assert result.to_dict()["spooled"] == result.spooled
    before = stored(db, result.experiment_uuid)[0]
    assert before < n and before + result.spooled == n  # what is not stored is in the spool

    server = serve_on(port, db)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "PAREA_"))}
        done = subprocess.run(
            [sys.executable, "-m", "runner", "sync", "--json"], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 0, done.stderr
        [report] = json.loads(done.stdout)["spools"]
        assert report["removed"] and report["finished"] and report["delivered"] == result.spooled
        rows = httpx.post(
            f"{server.base_url}/experiments", json={"experiment_uuids": [result.experiment_uuid]}
        ).json()
    finally:
        server.stop()
    assert not Path(result.spool_path).exists()
    assert stored(db, result.experiment_uuid) == (n, n, n)  # one log a row (no spans), each once
    assert rows[0]["status"] == "completed" and rows[0]["num_samples"] == n  # the finish call was replayed


def test_the_server_going_away_and_back_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, quick_http: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    spilled: list[int] = []
    spill = Outbox.spill

    async def counting_spill(self: Outbox, logs: list[dict[str, Any]]) -> None:
        spilled.append(len(logs))
        await spill(self, logs)

    monkeypatch.setattr(Outbox, "spill", counting_spill)
    db, port = tmp_path / "r.db", free_port()
    box: dict[str, ServerHandle] = {"server": serve_on(port, db)}
    n = 150
    quick_http["drain_timeout"] = 10.0

    async def task(i: int) -> int:
        if i == 30:
            box["server"].stop()
        if i == 90:
            box["server"] = serve_on(port, db)
        await asyncio.sleep(0.005)
        return i

    exp = _Configured(
        name="flaky", data=[{"i": i} for i in range(n)], func=task, base_url=f"http://127.0.0.1:{port}/api/parea/v1",
        n_workers=1,
    )
    try:
        result = exp.run(quiet=True)
    finally:
        box["server"].stop()
    assert result.status == "completed" and result.spooled == 0 and result.spool_path is None
    assert spool_files(default_spool_dir()) == []
    roots, total, distinct = stored(db, result.experiment_uuid)
    assert (roots, distinct) == (n, n)
    assert total == n  # a root per row (the task opens no spans), none twice
    assert sum(spilled) > 0  # the outage was real: logs went through the spool
