"""Ingest throughput and p99 latency of ``serve`` on SQLite (1 worker) and PostgreSQL (1, 2, 4).

For each server setup, ``python -m runner serve`` runs in a subprocess; then 1, 4 and 8 writer
processes (each its own interpreter, one request in flight, like runner processes logging) post
for ``--seconds`` each:

* ``batch``: ``POST /trace_logs/batch`` of ``--batch`` logs (a row is a root and two spans);
* ``single``: ``POST /trace_log``, one log per request.

Reported per cell: traces/s (logs stored per second of wall time, all writers together) and the
p99 latency of one request. PostgreSQL is a throwaway cluster made for the run (``tests/pg.py``),
fsync on, ``synchronous_commit=off`` (like SQLite's ``synchronous=NORMAL`` in WAL mode: a commit
survives the server process crashing, not the machine losing power). Usage::

    python benchmarks/ingest_pg.py [--seconds 3] [--batch 30] [--writers 1,4,8] [--pg-workers 1,2,4] [--json F]

Each cell also says where the machine's CPU went while it ran: the writers' own CPU time, the
server processes', PostgreSQL's, every other process's, and the machine's busy time (from
``/proc/stat``), each as a share of all cores' time.
On a 2-core machine that runs its writers too, a cell whose busy share is near 100 % is bound by
CPU, and the shares say who spent it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
API = "/api/parea/v1"


def _logs(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        root = str(uuid.uuid4())
        common = {"root_trace_id": root, "start_timestamp": "2024-05-30T13:48:34.000000+00:00",
                  "end_timestamp": "2024-05-30T13:48:34.120000+00:00", "status": "success"}
        out.append({**common, "trace_id": root, "parent_trace_id": root, "trace_name": "row",
                    "inputs": {"question": "what is 2+2?"}, "output": "4", "scores": [{"name": "ok", "score": 1.0}]})
        for k in range(2):
            out.append({**common, "trace_id": str(uuid.uuid4()), "parent_trace_id": root, "trace_name": f"span{k}",
                        "depth": 1, "execution_order": k + 1, "input_tokens": 120, "output_tokens": 30,
                        "total_tokens": 150, "cost": 0.0002, "output": "span output"})
    return out[:n]


def writer(base: str, mode: str, seconds: float, batch: int) -> None:
    """One writer process: say it is ready, read the start time, post until ``start + seconds``;
    print its count and latencies."""
    latencies: list[float] = []
    sent = 0
    with httpx.Client(base_url=base, timeout=60) as api:
        api.get("/")  # connect before the start
        print("ready", flush=True)
        start_at = float(sys.stdin.readline())
        time.sleep(max(0.0, start_at - time.time()))
        cpu_start = time.process_time()
        end = start_at + seconds
        while time.time() < end:
            logs = _logs(batch if mode == "batch" else 1)
            t0 = time.perf_counter()
            r = api.post("/trace_logs/batch", json={"logs": logs}) if mode == "batch" else api.post(
                "/trace_log", json=logs[0])
            latencies.append(time.perf_counter() - t0)
            r.raise_for_status()
            sent += len(logs)
        finished = time.time()
        cpu = time.process_time() - cpu_start
    print(json.dumps({"sent": sent, "latencies": latencies, "finished": finished, "cpu": cpu}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, db: str, workers: int) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}{API}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "serve", "--db", db, "--port", str(self.port), "--workers", str(workers),
             "--log-level", "warning"],
            cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.base + "/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)


def _by_kind(server_pid: int | None) -> dict[str, dict[int, float]]:
    """CPU seconds (user + system) used so far by every process on the machine, by kind: the
    server's (``server_pid`` and its children), PostgreSQL's, writers' (skipped: they count their
    own), and other."""
    import psutil

    server: set[int] = set()
    if server_pid is not None:
        root = psutil.Process(server_pid)
        server = {root.pid, *(c.pid for c in root.children(recursive=True))}
    out: dict[str, dict[int, float]] = {"server": {}, "postgres": {}, "other": {}}
    for p in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        t = p.info["cpu_times"]
        if t is None or "--writer" in (p.info["cmdline"] or []):
            continue
        kind = "server" if p.pid in server else "postgres" if p.info["name"] in ("postgres", "postmaster") else "other"
        out[kind][p.pid] = t.user + t.system
    return out


def _machine_busy() -> float:
    """CPU seconds every core of the machine has spent not idle, from /proc/stat (Linux)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cell(base: str, mode: str, n_writers: int, seconds: float, batch: int,
         server_pid: int | None = None) -> dict[str, float]:
    """One cell of the table; with ``server_pid``, also where the CPU went during it: the
    writers' own CPU, the server's processes', PostgreSQL's, and the machine's total busy time
    against the cores times the wall time."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--writer", base, mode, str(seconds), str(batch)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        for _ in range(n_writers)
    ]
    for p in procs:  # every writer started and connected before the clock starts
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    start_at = time.time() + 0.2
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(f"{start_at}\n")
        p.stdin.flush()
    time.sleep(max(0.0, start_at - time.time()))
    before, busy_before, t0 = _by_kind(server_pid), _machine_busy(), time.time()
    time.sleep(max(0.0, start_at + seconds - time.time()))
    after, busy_after, t1 = _by_kind(server_pid), _machine_busy(), time.time()
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 120)
        if p.returncode != 0:
            raise RuntimeError(f"a writer failed: {out[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    sent = sum(r["sent"] for r in results)
    wall = max(r["finished"] for r in results) - start_at
    lat = sorted(x for r in results for x in r["latencies"])
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
    cores = (os.cpu_count() or 1) * (t1 - t0)
    # a process started during the cell (a database connection the pool opened) counts from 0
    used = {kind: sum(t - before.get(kind, {}).get(pid, 0.0) for pid, t in pids.items())
            for kind, pids in after.items()}
    return {"traces_per_s": sent / wall, "p99_ms": p99 * 1000, "requests": len(lat),
            # shares of the cores' time over the timed seconds (the writers' from their own count:
            # they exit as soon as they are done)
            "cpu_writers": sum(r["cpu"] for r in results) / cores,
            "cpu_server": used.get("server", 0.0) / cores,
            "cpu_postgres": used.get("postgres", 0.0) / cores,
            "cpu_other": used.get("other", 0.0) / cores,
            "cpu_busy": (busy_after - busy_before) / cores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--writers", default="1,4,8")
    parser.add_argument("--pg-workers", default="1,2,4")
    parser.add_argument("--modes", default="batch,single")
    parser.add_argument("--json", help="also write the cells to this JSON file")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.pg import start_cluster

    cluster = start_cluster(durable=True)
    if isinstance(cluster, str):
        raise SystemExit(f"no PostgreSQL: {cluster}")
    cluster._psql("ALTER SYSTEM SET synchronous_commit = off")
    cluster._psql("SELECT pg_reload_conf()")
    writers = [int(w) for w in args.writers.split(",")]
    setups = [("sqlite", 1)] + [("postgresql", int(w)) for w in args.pg_workers.split(",")]
    rows: list[tuple[str, str, int, dict[str, float]]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for kind, workers in setups:
                db = str(Path(tmp) / f"bench-{workers}.db") if kind == "sqlite" else cluster.database()
                server = Server(db, workers)
                try:
                    for mode in args.modes.split(","):
                        for n in writers:
                            r = cell(server.base, mode, n, args.seconds, args.batch, server.proc.pid)
                            label = f"{kind} x{workers}"
                            rows.append((label, mode, n, r))
                            print(f"{label:<14} {mode:<7} writers={n}: {r['traces_per_s']:8.0f} traces/s"
                                  f"  p99 {r['p99_ms']:7.1f} ms  ({r['requests']} requests); CPU: writers"
                                  f" {r['cpu_writers']:.0%} server {r['cpu_server']:.0%} postgres"
                                  f" {r['cpu_postgres']:.0%} other {r['cpu_other']:.0%} machine busy"
                                  f" {r['cpu_busy']:.0%}", flush=True)
                finally:
                    server.stop()
    finally:
        cluster.stop()
    print("\nCPU columns: share of the machine's cores' time during the cell spent by the writer")
    print("processes, the server's processes, PostgreSQL's, all other processes, and by everything (busy).")
    print("\n| server | endpoint | writers | traces/s | p99 ms | writers CPU | server CPU | postgres CPU | other |"
          " busy |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, mode, n, r in rows:
        endpoint = "POST /trace_logs/batch" if mode == "batch" else "POST /trace_log"
        print(f"| {label} | {endpoint} | {n} | {r['traces_per_s']:.0f} | {r['p99_ms']:.1f} | {r['cpu_writers']:.0%}"
              f" | {r['cpu_server']:.0%} | {r['cpu_postgres']:.0%} | {r['cpu_other']:.0%} | {r['cpu_busy']:.0%} |")
    if args.json:
        Path(args.json).write_text(json.dumps([{"server": label, "mode": mode, "writers": n, **r}
                                               for label, mode, n, r in rows], indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--writer"]:
        base, mode, seconds, batch = sys.argv[2:6]
        writer(base, mode, float(seconds), int(batch))
    else:
        main()
