"""What runs inside one benchmark child process: one workload, timed, reported as one JSON line.

``benchmarks/run.py`` starts ``python benchmarks/run.py --child NAME ...`` once per workload, so
every workload gets a fresh interpreter and its own peak RSS. The child does one small warm-up
run (imports, first connections and SQLite set-up are then not counted), then the measured runs,
each into a fresh store (embedded) or under a fresh run name (over HTTP), and prints
``BENCH-RESULT {json}`` as its last line.

The timed span is ``Experiment.run()`` (or the SDK's ``Experiment.run()``) alone: interpreter
start-up, imports and data generation happen before the clock starts. Peak RSS is read from
``VmHWM`` before the rows are counted back, so counting does not inflate it.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from measure import count_stored, peak_rss_mb, x_rows

__all__ = ["RESULT_PREFIX", "count_stored", "main_child", "peak_rss_mb"]

RESULT_PREFIX = "BENCH-RESULT "
SCORE_NAME = "exact_match"
SLEEP_S = 0.1  # W3/W4: each row awaits this long


# -- the user code being run --------------------------------------------------------------------
def noop(question: str) -> str:
    return question


async def sleepy(x: str) -> str:
    await asyncio.sleep(SLEEP_S)
    return x


MIXED_RUN = 40  # W7: runs of this many instant rows, then as many slow ones, alternating
MIXED_SLOW_S = 0.05  # W7: a slow row sleeps this long (a model call; the instant ones: a cache hit)
HANG_TIMEOUT_S = 1.0  # W8: the experiment's timeout; its hanging rows never return on their own


def mixed(x: int) -> int:
    """W7: a partly cached rerun: instant rows and slow rows in alternating runs."""
    if (x // MIXED_RUN) % 2:
        time.sleep(MIXED_SLOW_S)
    return x


_NEVER = threading.Event()


def hangs_sometimes(x: int) -> int:
    """W8: every 29th row hangs (the timeout ends it); the others return at once."""
    if x % 29 == 7:
        _NEVER.wait()
    return x


def int_rows(n: int) -> list[dict[str, int]]:
    return [{"x": i} for i in range(n)]


def qa_rows(n: int) -> list[dict[str, str]]:
    return [{"question": str(i), "target": str(i)} for i in range(n)]


def xt_rows(n: int) -> list[dict[str, str]]:
    return [{"x": str(i), "target": str(i)} for i in range(n)]


def write_jsonl(path: Path, n: int) -> Path:
    """``n`` rows of ``{"question": ..., "target": ...}``, written as a stream."""
    with path.open("w") as f:
        for i in range(n):
            f.write(f'{{"question": "what is {i} + 1?", "target": "{i + 1}"}}\n')
    return path


# -- measuring ----------------------------------------------------------------------------------
# -- our runner -----------------------------------------------------------------------------------
def _plan(workload: str, rows: int, tmp: Path) -> dict[str, Any]:
    """Data (for the measured runs and for the warm-up), function, scorers and workers."""
    from evals import exact_match

    if workload in ("W1", "W2"):
        return {
            "data": qa_rows(rows),
            "warm": qa_rows(min(rows, 200)),
            "func": noop,
            "evals": [exact_match],
            "n_workers": 10,
            "score": SCORE_NAME,
        }
    if workload == "W3":
        return {
            "data": x_rows(rows),
            "warm": x_rows(min(rows, 20)),
            "func": sleepy,
            "evals": [],
            "n_workers": 20,
            "score": None,
        }
    if workload == "W4":  # issue 22: with a scorer; the warm-up is the whole workload (a fresh process's first run)
        return {
            "data": xt_rows(rows),
            "warm": xt_rows(rows),
            "func": sleepy,
            "evals": [exact_match],
            "n_workers": 100,
            "score": SCORE_NAME,
        }
    if workload == "W5":
        return {
            "data": str(write_jsonl(tmp / "rows.jsonl", rows)),
            "warm": str(write_jsonl(tmp / "warm.jsonl", min(rows, 1000))),
            "func": noop,
            "evals": [],
            "n_workers": 10,
            "score": None,
        }
    if workload == "W7":
        return {
            "data": int_rows(rows),
            "warm": int_rows(min(rows, 2 * MIXED_RUN)),
            "func": mixed,
            "evals": [],
            "n_workers": 10,
            "score": None,
        }
    if workload == "W8":
        return {
            "data": int_rows(rows),
            "warm": int_rows(min(rows, 7)),
            "func": hangs_sometimes,
            "evals": [],
            "n_workers": 10,
            "score": None,
            "timeout": HANG_TIMEOUT_S,
        }
    raise SystemExit(f"unknown workload {workload!r}")


def run_ours(workload: str, rows: int, runs: int, base_url: str | None) -> dict[str, Any]:
    """Warm up, then ``runs`` timed ``Experiment.run()`` calls; count what was stored (embedded)."""
    from runner import Experiment

    with tempfile.TemporaryDirectory(prefix=f"bench-{workload}-") as tmp_name:
        tmp = Path(tmp_name)
        plan = _plan(workload, rows, tmp)

        def experiment(data: Any, label: str) -> Any:
            return Experiment(
                name=f"bench-{workload}",
                data=data,
                func=plan["func"],
                evals=plan["evals"],
                n_workers=plan["n_workers"],
                timeout=plan.get("timeout"),
                db=None if base_url else tmp / f"{label}.db",
                base_url=base_url,
            )

        started = time.perf_counter()
        experiment(plan["warm"], "warmup").run(run_name=f"{workload.lower()}-warmup", quiet=True)
        warmup_s = time.perf_counter() - started

        detail: list[dict[str, Any]] = []
        for k in range(1, runs + 1):
            label = f"{workload.lower()}-run-{k}"
            exp = experiment(plan["data"], label)
            started = time.perf_counter()
            result = exp.run(run_name=label, quiet=True)
            elapsed = time.perf_counter() - started
            score = result.scores.get(plan["score"]) if plan["score"] else None
            detail.append(
                {
                    "run_name": label,
                    "seconds": elapsed,
                    "uuid": result.experiment_uuid,
                    "n_total": result.n_total,
                    "n_errors": result.n_errors,
                    "n_scored": score.n if score else 0,
                    "db": None if base_url else str(tmp / f"{label}.db"),
                }
            )
        peak = peak_rss_mb()
        if base_url is None:  # over HTTP the parent counts, in the server's store, after it stops
            for d in detail:
                d["stored_rows"], d["stored_scores"] = count_stored(d.pop("db"), d["uuid"], plan["score"])
        else:
            for d in detail:
                d.pop("db")
    return {
        "workload": workload,
        "rows": rows,
        "runs": runs,
        "n_workers": plan["n_workers"],
        "times": [d["seconds"] for d in detail],
        "warmup_s": warmup_s,
        "peak_rss_mb": peak,
        "expected_scores": rows if plan["score"] else 0,
        "detail": detail,
    }


# -- W6: import time ------------------------------------------------------------------------------
def run_import(runs: int) -> dict[str, Any]:
    """Wall time of ``python -c "import runner"`` and of ``python -c pass``, interleaved."""
    cmds = {"import": [sys.executable, "-c", "import runner"], "baseline": [sys.executable, "-c", "pass"]}
    times: dict[str, list[float]] = {k: [] for k in cmds}
    with tempfile.TemporaryDirectory(prefix="bench-W6-") as cwd:
        for k in range(runs + 1):  # the first round warms the page cache and is not counted
            for name, cmd in cmds.items():
                started = time.perf_counter()
                subprocess.run(cmd, check=True, cwd=cwd)
                if k:
                    times[name].append(time.perf_counter() - started)
    return {
        "workload": "W6",
        "rows": 0,
        "runs": runs,
        "times": times["import"],
        "baseline_times": times["baseline"],
        "baseline_median_s": statistics.median(times["baseline"]),
        # the largest of the `python -c ...` children
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "expected_scores": 0,
        "detail": [],
    }


# -- the official parea-ai SDK --------------------------------------------------------------------
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _no_internet(blocked: list[str]) -> None:
    """Refuse to resolve (hence to connect to) any host but loopback, in this process.

    Every connection httpx opens, sync or async, resolves its host through ``socket.getaddrinfo``."""
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in _LOOPBACK:
            blocked.append(name)
            raise OSError(f"benchmark: refusing to reach {name!r}: only the local server is allowed")
        return real(host, *args, **kwargs)

    socket.getaddrinfo = guarded


def _wait_for_log_threads(deadline: float) -> int:
    """Join the SDK's (non-daemon) threads that post logs; how many were still alive at the deadline."""
    while True:
        pending = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
        if not pending or time.monotonic() > deadline:
            return len(pending)
        pending[0].join(timeout=max(0.0, min(1.0, deadline - time.monotonic())))


def run_sdk(workload: str, rows: int, runs: int, flush_timeout: float) -> dict[str, Any]:
    """The SDK's ``p.experiment(...).run()`` against ``PAREA_BASE_URL`` (our server), then the
    wait until every log it posts from its threads has been sent."""
    blocked: list[str] = []
    _no_internet(blocked)
    base_url = os.environ["PAREA_BASE_URL"]
    from parea import Parea, trace
    from parea.api_client import HTTPClient
    from parea.schemas import Log

    if HTTPClient.base_url != base_url:
        raise SystemExit(f"parea SDK points at {HTTPClient.base_url}, not {base_url}")
    p = Parea(api_key=os.environ["PAREA_API_KEY"], project_name="bench")

    def exact_match(log: Log) -> float:
        return 1.0 if str(log.output).strip() == str(log.target).strip() else 0.0

    func: Callable[..., Any]
    if workload == "W2":
        make, n_workers, warm_rows, score = qa_rows, 10, 10, SCORE_NAME
        func = trace(eval_funcs=[exact_match])(noop)
    elif workload == "W3":
        make, n_workers, warm_rows, score = x_rows, 20, 10, None
        func = trace(sleepy)
    else:
        raise SystemExit(f"the SDK runs W2 and W3, not {workload!r}")

    started = time.perf_counter()
    p.experiment(name=f"sdk-{workload}", data=make(warm_rows), func=func, n_workers=n_workers).run(
        run_name=f"sdk-{workload.lower()}-warmup"
    )
    _wait_for_log_threads(time.monotonic() + flush_timeout)
    warmup_s = time.perf_counter() - started

    detail: list[dict[str, Any]] = []
    for k in range(1, runs + 1):
        label = f"sdk-{workload.lower()}-run-{k}"
        data = make(rows)
        exp = p.experiment(name=f"sdk-{workload}", data=data, func=func, n_workers=n_workers)
        started = time.perf_counter()
        exp.run(run_name=label)
        elapsed = time.perf_counter() - started
        unflushed = _wait_for_log_threads(time.monotonic() + flush_timeout)
        detail.append(
            {
                "run_name": label,
                "seconds": elapsed,
                "flushed_s": time.perf_counter() - started,
                "unflushed_threads": unflushed,
                "uuid": exp.experiment_uuid,
                "ran": exp.experiment_stats is not None,
            }
        )
    return {
        "workload": f"{workload}-sdk",
        "rows": rows,
        "runs": runs,
        "n_workers": n_workers,
        "times": [d["seconds"] for d in detail],
        "warmup_s": warmup_s,
        "peak_rss_mb": peak_rss_mb(),
        "expected_scores": rows if score else 0,
        "score_name": score,
        "detail": detail,
        "blocked_hosts": sorted(set(blocked)),
    }


def main_child(workload: str, rows: int, runs: int, base_url: str | None, flush_timeout: float) -> None:
    if workload == "W6":
        out = run_import(runs)
    elif workload in ("W10", "W11"):  # issue 22's big runs: benchmarks/scale.py
        from scale import run_big_async, run_completion_load

        out = run_big_async(rows, runs) if workload == "W10" else run_completion_load(rows, runs)
    elif workload.endswith("-sdk"):
        out = run_sdk(workload.removesuffix("-sdk"), rows, runs, flush_timeout)
    else:
        out = run_ours(workload, rows, runs, base_url)
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(out), flush=True)
