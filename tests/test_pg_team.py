"""The team server's remaining guarantees on PostgreSQL with several ``serve`` workers: concurrent
``PUT /trace_log`` of one log loses no acknowledged update, slow clients are cut off in every
worker, and the ``/completion`` cache is shared by the workers.

Every test runs a real ``python -m runner serve --workers 2`` over a real PostgreSQL
(``tests/pg.py``) and talks to it over a loopback socket.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from runner.store import Store
from tests.pg import PgCluster
from tests.proxy_fakes import FakeProvider
from tests.serve_process import closed_by_server, serve_process, worker_pids
from tests.servers import experiment, log
from tests.test_server_completion import anthropic_server, body, fake, openai_server  # noqa: F401 - fixtures

# one writer process: PUT ``field`` of log ``t`` n times, the k-th value k; prints the last acknowledged k
_PUTTER = """
import sys, httpx
base, field, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
last = None
with httpx.Client(base_url=base, timeout=120) as api:
    for k in range(n):
        if field == "scores":
            value = [{"name": "acc", "score": float(k)}]
        elif field == "metadata":
            value = {"k": k}
        else:
            value = f"{field}-{k}"
        r = api.put("/trace_log", json={"trace_id": "t", "field_name_to_value_map": {field: value}})
        if r.status_code != 200:
            sys.exit(f"{field} {k}: {r.status_code} {r.text}")
        last = k
print(last)
"""

_FIELDS = ["scores", "metadata", "output", "target", "error", "session_id", "end_user_identifier", "trace_name"]


def test_concurrent_puts_of_one_log_through_two_workers_lose_no_acknowledged_update(
    pg: PgCluster, tmp_path: Path
) -> None:
    """Eight processes PUT different fields of one log of a finished run (its trigger marks the
    run stale on every write) through two server workers at once: at the end the log holds
    every process's last acknowledged value, and the run's pinned stats see the last score."""
    url = pg.url()
    script = tmp_path / "putter.py"
    script.write_text(_PUTTER)
    with serve_process(url, "--workers", "2") as (base, proc):
        assert len(worker_pids(proc.pid)) == 2
        with httpx.Client(base_url=base, timeout=60) as api:
            exp = experiment(api)
            assert api.post("/trace_log", json=log("t", experiment_uuid=exp["uuid"])).status_code == 200
            finished = api.post(f"/experiment/{exp['uuid']}/finished", json={"status": "completed"})
            assert finished.status_code == 200
            writers = [
                subprocess.Popen([sys.executable, str(script), base, field, "20"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
                for field in _FIELDS
            ]
            outs = [w.communicate(timeout=300) for w in writers]
            assert [w.returncode for w in writers] == [0] * len(_FIELDS), [err for _, err in outs]
            last = {field: int(out.strip()) for field, (out, _) in zip(_FIELDS, outs, strict=True)}
            got = api.get("/trace_log/t").json()
            assert [(s["name"], s["score"]) for s in got["scores"]] == [("acc", float(last["scores"]))]
            assert got["metadata"] == {"k": last["metadata"]}
            for field in _FIELDS[2:]:
                assert got[field] == f"{field}-{last[field]}", field
            (listed,) = api.post("/experiments", json={}).json()
            assert {p["var1"]: p["value"] for p in listed["pinned_stats"]}["acc"] == float(last["scores"])


# -- slow clients ------------------------------------------------------------------------------------
def _port(base: str) -> int:
    return int(base.split(":")[2].split("/")[0])


def test_a_slow_client_is_cut_off_by_a_worker_while_others_are_served(pg: PgCluster) -> None:
    """Two workers with a 1 s header timeout: a client that sends half a header, and ten that
    send nothing, are all closed by the server, and requests of other clients meanwhile are
    answered (before: nothing closed them; a worker held each one forever)."""
    with serve_process(pg.url(), "--workers", "2", "--header-timeout", "1") as (base, proc):
        assert len(worker_pids(proc.pid)) == 2
        port = _port(base)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"GET /api/parea/v1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Wait: ")
            idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
            try:
                with httpx.Client(base_url=base, timeout=30) as api:
                    for i in range(20):
                        assert api.post("/trace_log", json=log(f"other-{i}")).status_code == 200
                assert closed_by_server(slow, within=30)
                assert all(closed_by_server(s, within=30) for s in idle)
            finally:
                for s in idle:
                    s.close()
        assert httpx.get(base + "/", timeout=30).status_code == 200


def test_each_worker_closes_connections_past_its_cap_at_once(pg: PgCluster) -> None:
    """Two workers holding at most 3 connections each, with headers allowed a minute: of twelve
    silent connections at least six are closed at once (the header timeout is far off); once
    they are gone, the server answers again."""
    with serve_process(pg.url(), "--workers", "2", "--header-timeout", "60", "--max-connections", "3") as (base, _):
        port = _port(base)
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(12)]
        try:
            closed: set[socket.socket] = set()
            deadline = time.monotonic() + 30  # half the header timeout: only the cap closes these
            while len(closed) < 12 - 2 * 3 and time.monotonic() < deadline:
                ready, _, _ = select.select([s for s in idle if s not in closed], [], [], 0.5)
                closed.update(s for s in ready if closed_by_server(s, within=0.1))
            assert len(closed) >= 12 - 2 * 3
        finally:
            for s in idle:
                s.close()
        with httpx.Client(base_url=base, timeout=30) as api:
            assert api.get("/").status_code == 200


# -- the completion cache ----------------------------------------------------------------------------
def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _worker_of(conn: http.client.HTTPConnection, server_port: int, workers: list[int]) -> int:
    """The worker process that accepted ``conn``: the one holding the server's end of it (its
    inode in /proc/net/tcp, found by the client's port)."""
    client_port = conn.sock.getsockname()[1]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        inodes = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(a.split(":")[1], 16) for a in fields[1:3])
            if (local, remote) == (server_port, client_port):
                inodes.add(fields[9])
        for pid in workers:
            if inodes & _socket_inodes(pid):
                return pid
        time.sleep(0.05)  # still in the accept queue
    raise AssertionError(f"no worker holds the connection from port {client_port}")


def _complete(conn: http.client.HTTPConnection, request: dict[str, object]) -> dict[str, object]:
    conn.request("POST", "/api/parea/v1/completion", body=json.dumps(request),
                 headers={"content-type": "application/json"})
    response = conn.getresponse()
    text = response.read()
    assert response.status == 200, text
    answer: dict[str, object] = json.loads(text)
    return answer


def test_two_workers_share_the_completion_cache(pg: PgCluster, fake: FakeProvider) -> None:  # noqa: F811
    """One connection to each of two workers (told apart by which process holds the server's end
    of it): the same completion asked of the first and then of the second calls the provider
    once; the second answer is a cache hit (before, each worker had a cache in its memory)."""
    url = pg.url()
    with serve_process(url, "--workers", "2") as (base, proc):
        workers = worker_pids(proc.pid)
        assert len(workers) == 2
        port = _port(base)
        by_worker: dict[int, http.client.HTTPConnection] = {}
        spare = []
        for _ in range(200):  # the kernel hands each new connection to one of the workers
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.connect()
            pid = _worker_of(conn, port, workers)
            if pid in by_worker:
                spare.append(conn)
            else:
                by_worker[pid] = conn
            if len(by_worker) == 2:
                break
        assert len(by_worker) == 2, "every connection went to the same worker"
        first, second = by_worker.values()
        try:
            request = body("shared between workers")
            a = _complete(first, request)
            assert (a["cache_hit"], a["content"], fake.calls) == (False, "echo: shared between workers", 1)
            b = _complete(second, request)
            assert (b["cache_hit"], b["content"], fake.calls) == (True, "echo: shared between workers", 1)
            other = _complete(second, body("something else"))  # a miss is still a call
            assert (other["cache_hit"], fake.calls) == (False, 2)
        finally:
            for conn in [*by_worker.values(), *spare]:
                conn.close()
    store = Store(url)
    try:
        assert int(store._query("SELECT count(*) FROM completion_cache")[0][0]) == 2
    finally:
        store.close()
