"""The seed's curl requests, sent verbatim by ``curl`` to a real ``python -m runner serve`` process.

The seed (the product brief) logs traces the way its cookbook does: ``start_timestamp`` and
``end_timestamp`` as ``YYYY-MM-DD HH:MM:SS``, no ``latency``, no ``status`` on some, no
``total_tokens``, the project named by ``project_name`` or not at all; then it calls
``/experiment/{uuid}/finished``, which "automatically calculates the average statistics of all
logged scores as well as cost, latency, token usage". Each of those averages is checked.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
KEY = "seed-key"
CURL = shutil.which("curl")

pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("seed")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAREA_", "RUNNER_"))}
    env.update(RUNNER_API_KEYS=KEY, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "serve", "--port", str(port), "--db", str(tmp / "seed.db")],
        cwd=tmp,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/api/parea/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/", headers={"x-api-key": KEY})
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1][-2000:]
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def curl(url: str, method: str, path: str, body: str | None = None, **ids: str) -> Any:
    """``curl -X METHOD URL -H 'x-user-id: KEY' -d BODY``, as the seed writes it (``$name`` in the
    body replaced by the id of that name); the JSON answer."""
    assert CURL is not None
    cmd = [CURL, "-sS", "-X", method, url + path, "-H", f"x-user-id: {KEY}", "-H", "Content-Type: application/json"]
    if body is not None:
        cmd += ["-d", string.Template(body).substitute(ids)]
    out = subprocess.run([*cmd, "-w", "\n%{http_code}"], capture_output=True, text=True, timeout=60, check=True)
    text, status = out.stdout.rsplit("\n", 1)
    assert status == "200", f"{method} {path}: {status} {text}"
    return json.loads(text)


def test_the_seed_requests_and_the_averages_finished_computes(base_url: str) -> None:
    project = curl(base_url, "POST", "/project", '{"name": "seed-project"}')
    exp = curl(base_url, "POST", "/experiment", '{"name": "seed-experiment", "project_uuid": "$project"}',
               project=project["uuid"])
    uid = exp["uuid"]
    # the first log as the seed writes it: no latency, no tokens
    curl(base_url, "POST", "/trace_log", """{
        "trace_id": "seed-1", "root_trace_id": "seed-1", "parent_trace_id": "seed-1",
        "project_name": "seed-project", "experiment_uuid": "$uid", "trace_name": "test",
        "start_timestamp": "2024-05-30 13:48:34", "end_timestamp": "2024-05-30 13:48:35",
        "inputs": {"x": "Golang", "y": "Fiber"}, "output": "Some logged output", "status": "success",
        "metadata": {"purpose": "testing"}, "scores": [{"name": "accuracy", "score": 1}]
    }""", uid=uid)
    # an LLM call: tokens and cost, but no total_tokens, no status, ISO timestamps with an offset
    curl(base_url, "POST", "/trace_log", """{
        "trace_id": "seed-2", "root_trace_id": "seed-2", "parent_trace_id": "seed-2",
        "experiment_uuid": "$uid", "trace_name": "LLM",
        "start_timestamp": "2024-05-30T13:48:34+00:00", "end_timestamp": "2024-05-30T15:48:37+02:00",
        "configuration": {"model": "gpt-4o", "provider": "openai",
                          "messages": [{"role": "user", "content": "Some prompt"}]},
        "inputs": {"promptTemplateVar1": "value"}, "output": "LLM response",
        "input_tokens": 10, "output_tokens": 30, "cost": 0.5,
        "scores": [{"name": "accuracy", "score": 0}]
    }""", uid=uid)

    stats = curl(base_url, "POST", f"/experiment/{uid}/finished", '{"status": "completed"}')["parent_trace_stats"]
    by_id = {s["trace_id"]: s for s in stats}
    assert by_id["seed-1"]["latency"] == pytest.approx(1.0)  # naive timestamps: UTC
    assert by_id["seed-2"]["latency"] == pytest.approx(3.0)  # 15:48:37+02:00 is 13:48:37 UTC
    assert by_id["seed-2"]["total_tokens"] == 40

    (listed,) = curl(base_url, "POST", "/experiments", '{"experiment_uuids": ["$uid"]}', uid=uid)
    pinned = {s["var1"]: s["value"] for s in listed["pinned_stats"] if s["operation"] == "mean"}
    assert pinned == pytest.approx(
        {"accuracy": 0.5, "Latency": 2.0, "Input Tokens": 5.0, "Output Tokens": 15.0, "Total Tokens": 20.0,
         "Cost": 0.25}
    )
    assert (listed["status"], listed["num_samples"]) == ("completed", 2)

    first = curl(base_url, "GET", "/trace_log/seed-1")
    second = curl(base_url, "GET", "/trace_log/seed-2")
    assert (first["latency"], first["status"], first["project_name"]) == (1.0, "success", "seed-project")
    assert (second["status"], second["project_name"]) == ("success", "seed-project")  # filled in
