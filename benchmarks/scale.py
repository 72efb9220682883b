"""The two workloads of a big run (issue 22), run in a benchmark child like the others.

* **W10** (the issue's W8; ``W8`` is already the hanging-rows workload): 10,000 rows of
  ``await asyncio.sleep(1.0)``, 1,000 workers, embedded store. Ideal: 10 rounds of 1 s = 10 s.
  After the runs, in the same process, a bare ``asyncio.gather`` of the same sleeps behind a
  1,000-slot semaphore (the floor of the event loop alone), and the runner's CPU time per row
  (``time.process_time()`` over the run, every thread of the process, divided by the rows).
* **W11** (the issue's W9): 1,000 concurrent ``runner.acompletion()`` calls through
  ``python -m runner serve`` to the fake OpenAI provider of ``tests/proxy_fakes.py`` answering
  after 100 ms. Added latency = each call's latency minus the provider's 100 ms; then the same
  1,000 prompts again, answered from the server's cache: cached calls per second. Beside them,
  the same 1,000 requests straight to the provider through a ``runner.proxy.http_pool.ClientPool``
  of 1,000 connections (the floor; one bare ``httpx.AsyncClient`` with 1,000 requests in flight
  spends seconds of CPU in httpcore's pool bookkeeping, and so measured the client, not the path).
  Then, as context for the goal (which is about the 1,000 at once), ``SEQUENTIAL`` calls one
  after another, straight and via ``serve``: what the gateway adds to one call when nothing
  queues for the CPU (added = via ``serve`` minus the median straight call).

``python benchmarks/scale.py --fake-provider 0.1`` serves the fake provider until killed (the
W11 child starts it as a subprocess, so it does not share the child's GIL).
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["BIG_SLEEP_S", "BIG_WORKERS", "PROVIDER_DELAY_S", "run_big_async", "run_completion_load"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIG_SLEEP_S = 1.0
BIG_WORKERS = 1000
PROVIDER_DELAY_S = 0.1
#: calls made one at a time per run, straight and via serve (the gateway's own added latency)
SEQUENTIAL = 30


def _percentile(xs: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``xs``, nearest-rank."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


# -- W10 ----------------------------------------------------------------------------------------------
#: when each W10 row started and ended (perf_counter), to split a run into the time before its
#: first row, its rows' span and the time after its last row (two list appends a row)
_STARTS: list[float] = []
_ENDS: list[float] = []


async def big_sleep(x: str) -> str:
    _STARTS.append(time.perf_counter())
    await asyncio.sleep(BIG_SLEEP_S)
    _ENDS.append(time.perf_counter())
    return x


async def bare_gather(rows: int, workers: int, sleep_s: float) -> float:
    """Seconds for ``rows`` sleeps of ``sleep_s`` with at most ``workers`` at once, no runner."""
    gate = asyncio.Semaphore(workers)

    async def one() -> None:
        async with gate:
            await asyncio.sleep(sleep_s)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(rows)))
    return time.perf_counter() - started


def run_big_async(rows: int, runs: int) -> dict[str, Any]:
    from measure import count_stored, peak_rss_mb, x_rows

    from runner import Experiment

    with tempfile.TemporaryDirectory(prefix="bench-W10-") as tmp_name:
        tmp = Path(tmp_name)

        def experiment(n: int, label: str) -> Any:
            return Experiment(name="bench-W10", data=x_rows(n), func=big_sleep, evals=[], n_workers=BIG_WORKERS,
                              db=tmp / f"{label}.db")

        started = time.perf_counter()
        experiment(min(rows, BIG_WORKERS), "warmup").run(run_name="w10-warmup", quiet=True)
        warmup_s = time.perf_counter() - started
        detail: list[dict[str, Any]] = []
        for k in range(1, runs + 1):
            label = f"w10-run-{k}"
            exp = experiment(rows, label)
            _STARTS.clear()
            _ENDS.clear()
            cpu, started = time.process_time(), time.perf_counter()
            result = exp.run(run_name=label, quiet=True)
            ended = time.perf_counter()
            elapsed, cpu = ended - started, time.process_time() - cpu
            detail.append({"run_name": label, "seconds": elapsed, "cpu_s": cpu,
                           "before_first_row_s": min(_STARTS) - started, "rows_span_s": max(_ENDS) - min(_STARTS),
                           "after_last_row_s": ended - max(_ENDS),
                           "uuid": result.experiment_uuid, "n_total": result.n_total, "n_errors": result.n_errors,
                           "n_scored": 0, "db": str(tmp / f"{label}.db")})
        peak = peak_rss_mb()
        floor = asyncio.run(bare_gather(rows, BIG_WORKERS, BIG_SLEEP_S))  # once, after the runs
        for d in detail:
            d["stored_rows"], d["stored_scores"] = count_stored(d.pop("db"), d["uuid"], None)
    return {"workload": "W10", "rows": rows, "runs": runs, "n_workers": BIG_WORKERS,
            "times": [d["seconds"] for d in detail], "warmup_s": warmup_s, "peak_rss_mb": peak,
            "expected_scores": 0, "detail": detail,
            "ideal_s": math.ceil(rows / BIG_WORKERS) * BIG_SLEEP_S,
            "cpu_ms_per_row": statistics.median(d["cpu_s"] for d in detail) / rows * 1e3,
            "split_s": {k: statistics.median(d[k] for d in detail)
                        for k in ("before_first_row_s", "rows_span_s", "after_last_row_s")},
            "floor_s": floor}


# -- W11 ----------------------------------------------------------------------------------------------
def _wait_http(url: str, proc: subprocess.Popen[Any], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.05)


def serve_fake_provider(delay: float) -> None:
    """Serve the fake OpenAI provider, answering after ``delay`` s, until killed; print its URL."""
    import threading

    sys.path.insert(0, str(ROOT / "tests"))
    from proxy_fakes import FakeProvider

    with FakeProvider.running("openai") as fake:
        fake.delay = delay
        print(fake.url, flush=True)
        threading.Event().wait()


async def _timed_calls(calls: list[Any]) -> tuple[list[float], float]:
    """Latency of each awaitable factory in ``calls``, all started at once; and the wall time."""

    async def one(call: Any) -> float:
        t0 = time.perf_counter()
        await call()
        return time.perf_counter() - t0

    started = time.perf_counter()
    lat = await asyncio.gather(*(one(c) for c in calls))
    return list(lat), time.perf_counter() - started


def _latency_summary(lat: list[float], wall: float) -> dict[str, float]:
    added = [x - PROVIDER_DELAY_S for x in lat]
    return {"wall_s": wall, "calls_per_s": len(lat) / wall,
            "p50_ms": _percentile(lat, 0.5) * 1e3, "p99_ms": _percentile(lat, 0.99) * 1e3,
            "added_p50_ms": _percentile(added, 0.5) * 1e3, "added_p99_ms": _percentile(added, 0.99) * 1e3}


async def _one_at_a_time(direct: Any, call: Any, prefix: str) -> dict[str, float]:
    """``SEQUENTIAL`` straight calls, then as many via ``serve`` (provider answering), one at a time."""
    straight, via = [], []
    for _ in range(SEQUENTIAL):
        t0 = time.perf_counter()
        await direct()
        straight.append(time.perf_counter() - t0)
    for i in range(SEQUENTIAL):
        t0 = time.perf_counter()
        await call(f"{prefix} {i}")()
        via.append(time.perf_counter() - t0)
    base = statistics.median(straight)
    added = [x - base for x in via]
    return {"straight_p50_ms": base * 1e3, "via_p50_ms": _percentile(via, 0.5) * 1e3,
            "added_p50_ms": _percentile(added, 0.5) * 1e3, "added_p99_ms": _percentile(added, 0.99) * 1e3}


def run_completion_load(calls: int, runs: int) -> dict[str, Any]:
    import httpx
    from measure import peak_rss_mb

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAREA_", "RUNNER_", "OPENAI_"))}
    with tempfile.TemporaryDirectory(prefix="bench-W11-") as tmp:
        fake = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--fake-provider",
                                 str(PROVIDER_DELAY_S)], stdout=subprocess.PIPE, text=True, env=env)
        server: subprocess.Popen[bytes] | None = None
        try:
            assert fake.stdout is not None
            provider = fake.stdout.readline().strip()
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            server = subprocess.Popen(
                [sys.executable, "-m", "runner", "serve", "--port", str(port), "--db", f"{tmp}/serve.db",
                 "--log-level", "warning"],
                env={**env, "OPENAI_BASE_URL": f"{provider}/v1", "OPENAI_API_KEY": "sk-bench"},
                cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            api = f"http://127.0.0.1:{port}/api/parea/v1"
            _wait_http(api + "/", server, "`python -m runner serve`")
            os.environ.update(PAREA_BASE_URL=api, PAREA_API_KEY="benchmark")
            out = asyncio.run(_completion_rounds(httpx, provider, calls, runs))
        finally:
            for proc in (server, fake):
                if proc is not None:
                    proc.terminate()
                    proc.wait(15)
    import runner.integrations.llm

    runner.integrations.llm.close()
    return {"workload": "W11", "rows": calls, "runs": runs, "n_workers": calls, "times": out.pop("times"),
            "peak_rss_mb": peak_rss_mb(), "expected_scores": 0, "detail": out.pop("detail"), **out}


async def _completion_rounds(httpx: Any, provider: str, calls: int, runs: int) -> dict[str, Any]:
    import runner.integrations.llm
    from runner.proxy.http_pool import ClientPool

    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}

    async def warm() -> None:
        await runner.integrations.llm.acompletion("warm-up", model="gpt-4o-mini", cache=False)

    await warm()
    detail: list[dict[str, Any]] = []
    client = ClientPool(calls, headers={"authorization": "Bearer sk-bench"}, timeout=httpx.Timeout(60.0, pool=None))
    try:

        def direct() -> Any:
            return client.post(f"{provider}/v1/chat/completions", json=body)

        for k in range(1, runs + 1):
            prompts = [f"run {k} question {i}" for i in range(calls)]

            def call(prompt: str) -> Any:
                return lambda: runner.integrations.llm.acompletion(prompt, model="gpt-4o-mini")

            lat, wall = await _timed_calls([direct] * calls)
            floor = _latency_summary(lat, wall)
            lat, wall = await _timed_calls([call(p) for p in prompts])  # first time: the provider answers
            miss = _latency_summary(lat, wall)
            lat, wall = await _timed_calls([call(p) for p in prompts])  # again: the server's cache answers
            hit = _latency_summary(lat, wall)
            one = await _one_at_a_time(direct, call, f"run {k} alone")
            detail.append({"run_name": f"w11-run-{k}", "seconds": miss["wall_s"], "direct": floor, "miss": miss,
                           "hit": hit, "one": one})
    finally:
        await client.aclose()
    med = {phase: {key: statistics.median(d[phase][key] for d in detail) for key in detail[0][phase]}
           for phase in ("direct", "miss", "hit", "one")}
    return {"times": [d["seconds"] for d in detail], "detail": detail, "medians": med}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fake-provider"]:
        serve_fake_provider(float(sys.argv[2]))
