"""The server against slow clients, foreign hosts and origins, and guessed keys: a real
``python -m runner serve`` process on loopback for the connection limits, a server in a thread
for the rest."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runner.server.browser import LoginThrottle, Sessions
from tests.serve_process import closed_by_server, free_port
from tests.servers import ServerHandle, start_server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``python -m runner serve`` with short limits, on a free loopback port, over SQLite only:
    these limits are uvicorn's and the HTTP layer's, the same code whatever the store (the
    store is never read); ``serve --workers`` on PostgreSQL has them tested in test_pg_team.py."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("RUNNER_DB", "RUNNER_API_KEYS", "RUNNER_ALLOWED_HOSTS"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--db",
            str(tmp_path_factory.mktemp("hardening") / "runner.db"),
            "--header-timeout",
            "1",
            "--body-timeout",
            "1",
            "--max-connections",
            "20",
            "--allowed-host",
            "dash.example",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/parea/v1/", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_silent_connections_are_closed_and_the_server_stays_reachable(served: int) -> None:
    idle = [socket.create_connection(("127.0.0.1", served), timeout=10) for _ in range(60)]
    try:
        # every silent connection is closed: the ones past the cap at once, the others after 1 s
        assert all(closed_by_server(s, within=20) for s in idle)
    finally:
        for s in idle:
            s.close()
    assert httpx.get(f"http://127.0.0.1:{served}/api/parea/v1/", timeout=10).status_code == 200


def test_a_header_sent_a_byte_at_a_time_is_cut_off(served: int) -> None:
    with socket.create_connection(("127.0.0.1", served), timeout=10) as s:
        s.sendall(b"GET /api/parea/v1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                s.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_server(s, within=0.2):
                closed = True
                break
        assert closed


def test_a_body_trickling_in_is_answered_408(served: int) -> None:
    with socket.create_connection(("127.0.0.1", served), timeout=10) as s:
        s.sendall(
            b"POST /api/parea/v1/project HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        answer = b""
        deadline = time.monotonic() + 20
        s.settimeout(0.2)
        while time.monotonic() < deadline and b"\r\n\r\n" not in answer:
            try:
                s.sendall(b" ")
                answer += s.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_only_its_own_host_names_are_answered(served: int) -> None:
    url = f"http://127.0.0.1:{served}/api/parea/v1/"
    assert httpx.get(url, headers={"host": f"dash.example:{served}"}).status_code == 200  # --allowed-host
    assert httpx.get(url, headers={"host": f"localhost:{served}"}).status_code == 200
    refused = httpx.get(url, headers={"host": f"evil.example:{served}"})
    assert refused.status_code == 400 and "Invalid host header" in refused.text
    assert httpx.get(f"http://127.0.0.1:{served}/", headers={"host": "evil.example"}).status_code == 400


# -- in a thread ----------------------------------------------------------------------------------


@pytest.fixture
def server(db: str | Path) -> Iterator[ServerHandle]:
    """A server over each store (``db``: SQLite, then PostgreSQL)."""
    with start_server(db) as handle:
        yield handle


def test_api_writes_must_be_json_and_not_from_another_site(server: ServerHandle) -> None:
    url = server.base_url + "/project"
    assert httpx.post(url, content=b'{"name": "p"}', headers={"content-type": "text/plain"}).status_code == 415
    form = httpx.post(url, data={"name": "p"})
    assert form.status_code == 415 and "application/json" in form.json()["detail"]
    foreign = httpx.post(url, json={"name": "p"}, headers={"origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert httpx.post(url, json={"name": "p"}, headers={"sec-fetch-site": "cross-site"}).status_code == 403
    assert httpx.post(url, json={"name": "p"}, headers={"origin": server.url}).status_code == 200
    charset = httpx.post(url, content=b'{"name": "q"}', headers={"content-type": "application/json; charset=utf-8"})
    assert charset.status_code == 200
    assert httpx.post(url, json={"name": "r"}).status_code == 200  # SDKs send no Origin


def test_no_api_docs_from_a_cdn(server: ServerHandle) -> None:
    assert httpx.get(server.base_url + "/docs").status_code == 404
    assert httpx.get(server.base_url + "/openapi.json").status_code == 200


def test_wrong_keys_are_throttled(tmp_path: Path) -> None:
    with (
        start_server(tmp_path / "runner.db", api_keys=["key-a"]) as server,
        httpx.Client(base_url=server.url, headers={"origin": server.url}) as web,
    ):
        statuses = [web.post("/login", data={"key": f"guess-{i}"}) for i in range(30)]
        assert {r.status_code for r in statuses} <= {401, 429}
        throttled = [r for r in statuses if r.status_code == 429]
        assert throttled and all(int(r.headers["retry-after"]) >= 1 for r in throttled)
        assert "Too many wrong keys" in throttled[0].text


def test_the_throttle_lets_a_burst_through_then_one_try_per_interval() -> None:
    throttle = LoginThrottle(burst=5, interval=2.0)
    for _ in range(5):
        assert throttle.wait("1.2.3.4", now=100.0) == 0
        throttle.failed("1.2.3.4", now=100.0)
    assert throttle.wait("1.2.3.4", now=100.0) == pytest.approx(2.0)
    assert throttle.wait("5.6.7.8", now=100.0) == 0  # another address is not slowed down
    assert throttle.wait("1.2.3.4", now=102.0) == 0  # one more try after the interval
    throttle.failed("1.2.3.4", now=102.0)
    assert throttle.wait("1.2.3.4", now=102.5) > 0


def test_sessions_are_signed_expire_and_die_with_their_key() -> None:
    sessions = Sessions(["key-a", "key-b"], seconds=60)
    token = sessions.issue("key:aaa", now=1000.0)
    assert sessions.owner(token, now=1010.0) == "key:aaa"
    assert sessions.owner(token, now=1061.0) is None  # expired
    head, mac = token.split(".")
    assert sessions.owner(head + "." + mac[:-1] + ("A" if mac[-1] != "A" else "B"), now=1010.0) is None
    forged = Sessions(["key-a"]).issue("key:aaa", now=1000.0)  # signed without all the keys
    assert sessions.owner(forged, now=1010.0) is None
    assert "key-a" not in token


def test_a_session_cookie_from_another_server_is_not_accepted(tmp_path: Path) -> None:
    with (
        start_server(tmp_path / "a.db", api_keys=["key-a"]) as first,
        httpx.Client(base_url=first.url, headers={"origin": first.url}) as web,
    ):
        assert web.post("/login", data={"key": "key-a"}).status_code == 303
        cookie = web.cookies["runner_session"]
    with start_server(tmp_path / "b.db", api_keys=["key-z"]) as other:
        page = httpx.get(other.url + "/", cookies={"runner_session": cookie})
        assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_dataset_names_never_read_as_ids(server: ServerHandle) -> None:
    with httpx.Client(base_url=server.base_url + "/", timeout=30) as api:
        first = api.post(
            "/collection", json={"name": "qa", "column_names": ["q"], "test_cases": [{"inputs": {"q": "a"}}]}
        )
        assert first.status_code == 200
        refused = api.post("/collection", json={"name": "1", "column_names": ["q"], "test_cases": []})
        assert refused.status_code == 400 and "digits only" in refused.json()["detail"]
        assert api.post("/testcases", json={"name": "1", "test_cases": [{"inputs": {"q": "z"}}]}).status_code == 400
        assert len(api.get("/collection/1").json()["test_cases"]) == 1  # dataset id 1 is untouched
        for name in ("²", "١", "1.0", " 1"):
            made = api.post(
                "/collection", json={"name": name, "column_names": ["q"], "test_cases": [{"inputs": {"q": name}}]}
            )
            assert made.status_code == 200, (name, made.text)
            got = api.get(f"/collection/{httpx.URL(path=name).raw_path.decode()}")
            assert got.status_code == 200, (name, got.text)
            assert got.json()["name"] == name and got.json()["id"] == made.json()["id"]
        assert api.get("/collection/1").json()["name"] == "qa"
        huge = api.get("/collection/" + "9" * 30)  # no such id (past 64 bits): not found, as Parea answers
        assert huge.status_code == 200 and huge.json() is None
