"""Crashes and concurrent writers, against real processes: ``kill -9`` of ``serve`` under load and
mid-run, three runner processes logging to one server, two processes on one embedded store.

Each test counts what was sent, acknowledged and stored, and checks the exact stored result:
nothing acknowledged is lost, nothing is stored twice, and the store opens cleanly afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner import Experiment, span
from runner.backends.base import Backend
from runner.backends.http.backend import HttpBackend
from runner.backends.http.outbox import Outbox
from runner.backends.http.spool import default_spool_dir, spool_files
from runner.backends.target import Target
from runner.store import Store
from tests.servers import log, start_server

API = "/api/parea/v1"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "PAREA_"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """``python -m runner serve`` as a child process on a fixed port, to kill and start again."""

    def __init__(self, db: Path, port: int) -> None:
        self.db = db
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}{API}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Serve:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "serve", "--port", str(self.port), "--db", str(self.db),
             "--log-level", "warning"],
            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, "serve exited"
            try:
                if httpx.get(self.base_url + "/", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("serve did not start")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no checkpoint, no flushing of anything."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    server = Serve(tmp_path / "served.db", free_port())
    try:
        yield server
    finally:
        server.stop()


def _integrity(db: Path) -> str:
    store = Store(db)  # opens (and would migrate) cleanly
    try:
        return str(store._query("PRAGMA integrity_check")[0][0])
    finally:
        store.close()


def _trace_ids(db: Path) -> list[str]:
    store = Store(db)
    try:
        return [r[0] for r in store._query("SELECT trace_id FROM traces")]
    finally:
        store.close()


# -- kill -9 under load ----------------------------------------------------------------------------------


def test_kill_9_under_load_loses_no_acknowledged_trace(serve: Serve) -> None:
    serve.start()
    api = httpx.Client(base_url=serve.base_url + "/", timeout=10)
    project = api.post("/project", json={"name": "p"}).json()["uuid"]
    exp = api.post("/experiment", json={"name": "load", "project_uuid": project}).json()["uuid"]
    sent: list[str] = []
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int) -> None:
        with httpx.Client(base_url=serve.base_url + "/", timeout=10) as client:
            for b in range(10_000):
                if stop.is_set():
                    return
                ids = [f"w{w}-b{b}-{i}" for i in range(50)]
                with lock:
                    sent.extend(ids)
                body = {"logs": [log(t, experiment_uuid=exp, output="x" * 200) for t in ids]}
                try:
                    response = client.post("/trace_logs/batch", json=body)
                except httpx.TransportError:
                    return  # the server is gone
                if response.status_code // 100 == 2:
                    with lock:
                        acked.extend(ids)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(acked) < 2000 and time.monotonic() < deadline:
        time.sleep(0.01)
    serve.kill()  # mid-load: requests in flight, transactions committing
    stop.set()
    for t in threads:
        t.join(timeout=20)
    api.close()

    assert _integrity(serve.db) == "ok"
    ids = _trace_ids(serve.db)
    assert len(ids) == len(set(ids))  # nothing twice
    assert set(acked) <= set(ids)  # every acknowledged trace survived
    assert set(ids) <= set(sent)
    assert len(acked) >= 2000
    print(f"\nkill -9 under load: sent {len(sent)}, acknowledged {len(acked)}, stored {len(ids)}, "
          f"duplicated 0, acknowledged but lost {len(set(acked) - set(ids))}")

    serve.start()  # the same file serves again, everything readable
    stats = httpx.get(f"{serve.base_url}/experiment/{exp}/stats", timeout=30).json()
    assert len(stats["parent_trace_stats"]) == len(ids)


# -- kill -9 and restart while a run logs to it ----------------------------------------------------------


class _Quick(Experiment):
    """Small batches and short waits, so a 300-row run spans the crash and the restart."""

    def _backend(self, target: Target) -> Backend:
        assert target.base_url is not None
        return HttpBackend(target.base_url, batch_size=20, backoff=0.05, max_backoff=0.5, drain_timeout=30)


def test_a_run_survives_its_server_killed_and_restarted(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    spilled: list[int] = []
    spill = Outbox.spill

    async def counting_spill(self: Outbox, logs: list[dict[str, Any]]) -> None:
        spilled.append(len(logs))
        await spill(self, logs)

    monkeypatch.setattr(Outbox, "spill", counting_spill)
    serve.start()
    n = 300

    async def task(i: int) -> int:
        if i == 80:
            serve.kill()
        if i == 160:
            serve.start(wait=False)  # up again ~2 s later; the run does not wait for it
        with span("step", {"i": i}):  # a child per row: ids unique per span
            await asyncio.sleep(0.004)
        return i * 2

    exp = _Quick(
        name="crash", data=[{"i": i} for i in range(n)], func=task, base_url=serve.base_url, n_workers=2,
        evals=[lambda log: float(log.output == 2 * log.inputs["i"])],
    )
    result = exp.run(quiet=True)
    assert result.status == "completed" and result.n_total == n and result.n_errors == 0
    assert result.spooled == 0 and result.spool_path is None and spool_files(default_spool_dir()) == []
    serve.stop()
    assert _integrity(serve.db) == "ok"
    store = Store(serve.db)
    try:
        rows = store.experiment_rows(result.experiment_uuid)
        n_traces = store._query(
            "SELECT count(*), count(DISTINCT trace_id) FROM traces WHERE experiment_uuid=?", (result.experiment_uuid,)
        )[0]
        finished = store.get_experiment(result.experiment_uuid)
    finally:
        store.close()
    row_ids = [r["metadata"]["row_id"] for r in rows]
    assert len(rows) == n and len(set(row_ids)) == n  # every row, once
    assert tuple(n_traces) == (2 * n, 2 * n)  # and every span
    assert all(r["scores"][0]["score"] == 1.0 for r in rows)
    assert finished["status"] == "completed" and finished["num_samples"] == n
    assert sum(spilled) > 0  # the outage was real: logs went through the spool
    print(f"\nserver killed and restarted mid-run: sent {n} rows ({2 * n} logs; {sum(spilled)} via the spool), "
          f"stored {len(rows)} rows ({n_traces[0]} logs), duplicated 0, lost {n - len(set(row_ids))}")


# -- concurrent writers ------------------------------------------------------------------------------------

_CONFIG = textwrap.dedent(
    """
    import os
    from runner import Experiment

    def double(i: int) -> int:
        return 2 * i

    experiment = Experiment(
        name="writer-" + os.environ["WRITER"],
        data=[{"i": i, "target": 2 * i} for i in range(int(os.environ["ROWS"]))],
        func=double,
        evals=[lambda log: float(log.output == log.target)],
        n_workers=4,
    )
    """
)


def _run_writers(tmp_path: Path, n_writers: int, rows: int, extra_env: dict[str, str]) -> None:
    config = tmp_path / "writer.py"
    config.write_text(_CONFIG)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "runner", str(config), "--quiet"],
            env={**_env(), **extra_env, "WRITER": str(w), "ROWS": str(rows)},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in range(n_writers)
    ]
    for p in procs:
        _, err = p.communicate(timeout=90)
        assert p.returncode == 0, err.decode()


def _per_experiment(db: Path) -> dict[str, tuple[int, int, str]]:
    """experiment name -> (root traces, distinct row ids, status)."""
    store = Store(db)
    try:
        out: dict[str, tuple[int, int, str]] = {}
        for e in store.list_experiments():
            rows = store.experiment_rows(e["uuid"])
            out[e["name"]] = (len(rows), len({r["metadata"]["row_id"] for r in rows}), e["status"])
        return out
    finally:
        store.close()


def test_three_runners_log_to_one_server_at_once(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    rows = 400
    with start_server(db) as server:
        _run_writers(tmp_path, 3, rows, {"PAREA_BASE_URL": server.base_url})
    assert _per_experiment(db) == {f"writer-{w}": (rows, rows, "completed") for w in range(3)}
    assert _integrity(db) == "ok"


def test_two_processes_write_one_embedded_store_at_once(tmp_path: Path) -> None:
    db = tmp_path / "embedded.db"
    rows = 1500
    _run_writers(tmp_path, 2, rows, {"RUNNER_DB": str(db)})
    assert _per_experiment(db) == {f"writer-{w}": (rows, rows, "completed") for w in range(2)}
    assert _integrity(db) == "ok"
