"""``python -m runner.server`` / ``serve_main``: arguments, the loopback rule, a real process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from runner.server import check_bind
from runner.server.__main__ import serve_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com"])
def test_refuses_a_non_loopback_host_without_a_key(
    host: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNNER_API_KEYS", raising=False)
    assert serve_main(["--host", host, "--db", os.devnull]) == 2
    err = capsys.readouterr().err
    assert "without an API key" in err and "--api-key" in err


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_hosts_need_no_key(host: str) -> None:
    check_bind(host, [])


def test_a_key_allows_any_host() -> None:
    check_bind("0.0.0.0", ["k"])


def test_empty_api_key_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_main(["--api-key", "", "--db", os.devnull]) == 2
    assert "must not be empty" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_in_a_process_with_keys_from_the_environment(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "RUNNER_API_KEYS": "k1, k2", "PYTHONPATH": str(ROOT)}
    env.pop("RUNNER_DB", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner.server", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/parea/v1/"
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(url, headers={"x-api-key": "k2"})
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        assert response.json()["status"] == "ok"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"x-api-key": "k3"}).status_code == 401
        assert (tmp_path / ".runner" / "runner.db").exists()  # the default store under cwd
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "2 API key(s)" in out
