"""How many trace logs per second one ``serve`` process ingests from the runner's client.

Starts ``python -m runner.server`` in a subprocess (its own process, so it does not share this
one's GIL) over a fresh SQLite file, and times, end to end — create the experiment, ``log()``
every row as the runner does (a root and two child spans per row, scored), ``flush()``,
``finish_experiment()`` — for each of:

* ``http batch``: ``HttpBackend`` with the server's ``trace_logs_batch`` extension;
* ``http plain``: ``HttpBackend`` told the server has no extensions (one ``POST /trace_log``
  per log, ``max_concurrency`` at once), as against a plain Parea server;
* ``embedded``: the reference, ``EmbeddedBackend`` writing the same rows to a SQLite file
  from this process;
* ``experiment`` (with ``--experiment``): ``Experiment(..., base_url=...).run()`` on trivial
  rows, the whole runner over HTTP.

Each variant runs ``--repeat`` times, interleaved; the median is reported. Usage::

    python benchmarks/ingest.py [--rows 10000] [--plain-rows 1000] [--repeat 3] [--experiment]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from runner.backends.base import Backend
from runner.backends.embedded import EmbeddedBackend
from runner.backends.http.backend import HttpBackend
from runner.store import Store

ROOT = Path(__file__).resolve().parent.parent
LOGS_PER_ROW = 3


def _row(exp: str, i: int) -> list[dict[str, Any]]:
    """One row as the runner logs it: a root and two scored child spans."""
    root = str(uuid.uuid4())
    start, end = "2024-05-30T13:48:34.000000+00:00", "2024-05-30T13:48:34.120000+00:00"
    common = {"root_trace_id": root, "experiment_uuid": exp, "start_timestamp": start, "end_timestamp": end}
    children = [
        {
            **common, "trace_id": str(uuid.uuid4()), "parent_trace_id": root, "trace_name": name, "depth": 1,
            "execution_order": k + 1, "inputs": {"question": f"question {i}"}, "output": f"{name} output {i}",
            "latency": 0.05, "status": "success", "scores": [{"name": f"{name}_ok", "score": True}],
            "input_tokens": 120, "output_tokens": 30, "total_tokens": 150, "cost": 0.0002,
        }
        for k, name in enumerate(("retrieve", "generate"))
    ]
    return [
        *children,
        {
            **common, "trace_id": root, "parent_trace_id": root, "trace_name": "row", "latency": 0.12,
            "inputs": {"question": f"question {i}", "context": "some context " * 8}, "target": f"answer {i}",
            "output": f"answer {i}", "status": "success", "metadata": {"row_id": str(i), "trial": 0},
            "scores": [{"name": "exact_match", "score": 1.0, "reason": None}],
        },
    ]


async def _ingest(backend: Backend, rows: int) -> float:
    """Seconds to create an experiment, log ``rows`` rows, flush and finish."""
    started = time.perf_counter()
    exp = await backend.create_experiment(project_name="bench", name="ingest", run_name=None, metadata={})
    for i in range(rows):
        await backend.log(_row(exp["uuid"], i))
    stats = await backend.finish_experiment(exp["uuid"], status="completed", dataset_level_stats=[])
    elapsed = time.perf_counter() - started
    await backend.aclose()
    assert len(stats) == rows, f"{len(stats)} of {rows} rows stored"
    return elapsed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_serve(db: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner.server", "--port", str(port), "--db", str(db), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}/api/parea/v1"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(base_url + "/").raise_for_status()
            return proc, base_url
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("serve did not start") from None
            time.sleep(0.05)


def _experiment_run(base_url: str, rows: int) -> float:
    from runner import Experiment

    data = [{"question": f"q{i}", "target": f"a{i}"} for i in range(rows)]
    exp = Experiment(name="bench", data=data, func=lambda question: "a" + question[1:], base_url=base_url)
    started = time.perf_counter()
    exp.run(quiet=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--plain-rows", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--experiment", action="store_true", help="also time Experiment.run() over HTTP")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="runner-ingest-"))
    proc, base_url = _start_serve(tmp / "serve.db")
    reference = Store(tmp / "embedded.db")

    def plain() -> HttpBackend:
        backend = HttpBackend(base_url)
        backend.extensions = frozenset()  # as if the server were plain Parea
        return backend

    variants: dict[str, tuple[int, Callable[[], Awaitable[float]]]] = {
        "http batch": (args.rows, lambda: _ingest(HttpBackend(base_url), args.rows)),
        "http plain": (args.plain_rows, lambda: _ingest(plain(), args.plain_rows)),
        "embedded": (args.rows, lambda: _ingest(EmbeddedBackend(reference), args.rows)),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    if args.experiment:
        times["experiment"] = []
    try:
        for _ in range(args.repeat):
            for name, (_, run) in variants.items():
                times[name].append(asyncio.run(run()))
            if args.experiment:
                times["experiment"].append(_experiment_run(base_url, args.rows))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reference.close()

    print(f"{'variant':<12} {'rows':>7} {'traces':>8} {'median s':>9} {'traces/s':>10} {'rows/s':>9}")
    for name, samples in times.items():
        rows = args.rows if name == "experiment" else variants[name][0]
        traces = rows * (1 if name == "experiment" else LOGS_PER_ROW)
        med = statistics.median(samples)
        print(f"{name:<12} {rows:>7} {traces:>8} {med:>9.3f} {traces / med:>10.0f} {rows / med:>9.0f}")
    print(f"({os.cpu_count()} CPUs; {args.repeat} runs each, interleaved; serve in its own process)")


if __name__ == "__main__":
    main()
