"""``python -m runner serve`` as a real process, for the tests of what only a whole server process
does (connection limits, ``--workers``, a worker killed): start it, find its workers, watch a
socket being closed by it.

>>> with serve_process(db, "--workers", "2") as (base, proc):  # doctest: +SKIP
...     assert len(worker_pids(proc.pid)) == 2
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

__all__ = ["closed_by_server", "free_port", "serve_process", "worker_pids"]


def free_port() -> int:
    """A loopback port free at the moment of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_process(db: str | Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m runner serve --db DB EXTRA...`` in a subprocess of its own session; its API
    root once it answers. Stopped (SIGTERM to the whole session, workers included) on exit."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "serve", "--db", str(db), "--port", str(port), "--log-level", "warning",
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=os.getcwd(), start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/api/parea/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(base + "/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield base, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck server
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def worker_pids(parent: int) -> list[int]:
    """The pids of the server's worker processes (children running multiprocessing's spawn)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"spawn_main" in cmdline:
            out.append(int(entry))
    return out


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
