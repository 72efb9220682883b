"""``benchmarks/run.py`` keeps working: one tiny workload in a subprocess, its JSON checked.

No timing is asserted: the benchmark is run by hand (``python benchmarks/run.py``), this test
only makes sure the script cannot rot as the runner changes under it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
PREFIX = "BENCH-RESULT "


def test_child_w1_stores_every_row_and_score(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(RUN), "--child", "W1", "--rows", "200", "--runs", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith(PREFIX))
    result = json.loads(line.removeprefix(PREFIX))
    assert result["workload"] == "W1" and result["rows"] == 200 and len(result["times"]) == 1
    (run,) = result["detail"]
    assert run["n_total"] == run["stored_rows"] == 200
    assert run["n_scored"] == run["stored_scores"] == 200
    assert result["peak_rss_mb"] > 0


# -- issue 22: the peers harness, without installing anything or touching the network ------------------
BENCH = RUN.parent


def test_help_lists_the_peer_options_and_the_new_workloads() -> None:
    proc = subprocess.run([sys.executable, str(RUN), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--no-peers" in proc.stdout and "W10" in proc.stdout and "W11" in proc.stdout


def test_peer_child_help_runs_without_any_peer_installed() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "peer_child.py"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "braintrust" in proc.stdout and "langsmith" in proc.stdout


def test_peer_child_refuses_and_counts_every_network_attempt() -> None:
    # the guard is installed, then a non-loopback name and a loopback connection are tried:
    # both are refused before anything leaves the process, and both are counted
    code = (
        "import socket, peer_child as p\n"
        "p.stay_offline()\n"
        "for f in (lambda: socket.getaddrinfo('example.invalid', 80),\n"
        "          lambda: socket.create_connection(('127.0.0.1', 9), timeout=1)):\n"
        "    try:\n"
        "        f()\n"
        "    except OSError as e:\n"
        "        print('refused:', e)\n"
        "print(p.attempts)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("refused:") == 2, proc.stdout
    assert "'resolve': ['example.invalid']" in proc.stdout and "('127.0.0.1', 9)" in proc.stdout


def test_peers_run_with_no_credentials_and_dead_endpoints(monkeypatch: Any) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import peers
    finally:
        sys.path.remove(str(BENCH))
    monkeypatch.setenv("BRAINTRUST_API_KEY", "secret")
    monkeypatch.setenv("LANGSMITH_API_KEY", "secret")
    monkeypatch.setenv("LANGCHAIN_ENDPOINT", "https://somewhere.example")
    env = peers.offline_env()
    assert not {"BRAINTRUST_API_KEY", "LANGSMITH_API_KEY", "LANGCHAIN_ENDPOINT"} & set(env)
    for key in ("LANGSMITH_ENDPOINT", "BRAINTRUST_APP_URL", "BRAINTRUST_API_URL", "HTTP_PROXY", "HTTPS_PROXY"):
        assert env[key].startswith("http://127.0.0.1:"), key
    assert env["LANGSMITH_TRACING"] == "false"
    # peers live in their own folder, which git ignores
    ignored = subprocess.run(["git", "check-ignore", "-q", str(peers.PEER_DIR / "x" / "bin" / "python")],
                             cwd=BENCH, timeout=30)
    assert ignored.returncode == 0


def test_goals_compare_with_the_peer_per_row() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import peers
    finally:
        sys.path.remove(str(BENCH))
    ours = {"W1": {"rows": 1000, "times": [0.1, 0.2, 0.3]}}
    theirs = {"W1-braintrust": {"rows": 2000, "times": [0.5, 0.6, 0.7], "status": "ok", "network_attempts": {}}}
    text, goals = peers.render_issue22({"nproc": 2}, ours, theirs, {"braintrust": "0.48.1"})
    (w1,) = [g for g in goals if g["workload"] == "W1"]
    # ours 0.2 s / 1000 rows against theirs 0.6 s / 2000 rows: 0.67 per row, above the 0.5 goal
    assert w1["verdict"] == "FAIL" and w1["measured"] == "0.67 ×"
    assert "| W1 | 1,000 | 0.200 | 0.600 | 0.67 |" in text
