"""One peer's workload, timed, in the peer's own virtualenv: ``python peer_child.py PEER WORKLOAD ...``.

``benchmarks/peers.py`` runs this file with the Python of ``benchmarks/.peers/<peer>/`` (where only
the peer's pinned package is installed, never the runner), so it imports nothing but the standard
library and the peer. It does what ``workloads.py`` does for our runner: the same rows, the same
function and scorer, the same concurrency, one warm-up run, then the timed runs, and prints
``BENCH-RESULT {json}`` as its last line.

The peers stay offline: ``peers.py`` points their settings at an unused loopback port, and this
file also wraps ``socket.getaddrinfo`` and ``socket.socket.connect`` so that any host but loopback
is refused and every connection attempt is counted; the counts go into the JSON, and the table
says "network attempts: none" only when both are zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
import uuid
from typing import Any

RESULT_PREFIX = "BENCH-RESULT "
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
attempts: dict[str, list[str]] = {"resolve": [], "connect": []}


def stay_offline() -> None:
    """Refuse every host but loopback, and record every resolution and connection attempt."""
    real_resolve = socket.getaddrinfo
    real_connect = socket.socket.connect

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in _LOOPBACK:
            attempts["resolve"].append(name)
            raise OSError(f"benchmark: refusing to resolve {name!r}: peers run offline")
        return real_resolve(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts["connect"].append(str(address[:2]))
            raise OSError(f"benchmark: refusing to connect to {address!r}: peers run offline")
        real_connect(self, address)

    socket.getaddrinfo = resolve  # type: ignore[assignment]
    socket.socket.connect = connect  # type: ignore[method-assign]


# -- the user code: the same as in workloads.py ------------------------------------------------------
def noop(question: str) -> str:
    return question


def exact(output: Any, expected: Any) -> float:
    return 1.0 if str(output).strip() == str(expected).strip() else 0.0


def rows(workload: str, n: int) -> list[dict[str, str]]:
    key = "question" if workload == "W1" else "x"
    return [{key: str(i), "target": str(i)} for i in range(n)]


def plan(workload: str, full: int) -> tuple[int, float, int]:
    """(workers, seconds each row sleeps (0: a sync no-op), warm-up rows)."""
    if workload == "W1":
        return 10, 0.0, min(full, 200)
    if workload == "W4":
        return 100, 0.1, full  # the warm-up is the whole workload: the first run in a fresh process
    if workload == "W10":
        return 1000, 1.0, min(full, 1000)
    raise SystemExit(f"peer_child: no such workload {workload!r}")


# -- Braintrust ---------------------------------------------------------------------------------------
def braintrust_run(workload: str, data: list[dict[str, str]], workers: int, sleep_s: float) -> dict[str, Any]:
    from braintrust import Eval

    def score(input: Any, output: Any, expected: Any) -> float:
        return exact(output, expected)

    cases = [{"input": r.get("question", r.get("x")), "expected": r["target"]} for r in data]
    if sleep_s:

        async def task(x: str) -> str:
            await asyncio.sleep(sleep_s)
            return x

        chosen: Any = task
    else:
        chosen = noop
    result = Eval(
        f"bench-{workload}",
        data=lambda: cases,
        task=chosen,
        scores=[score],
        max_concurrency=workers,
        no_send_logs=True,
    )
    rs = result.results
    return {"n_total": len(rs), "n_errors": sum(1 for r in rs if r.error is not None),
            "n_scored": sum(1 for r in rs if r.scores.get("score") is not None)}


# -- LangSmith ----------------------------------------------------------------------------------------
def langsmith_run(workload: str, data: list[dict[str, str]], workers: int, sleep_s: float) -> dict[str, Any]:
    from langsmith import Client, schemas
    from langsmith.evaluation import aevaluate, evaluate

    key = "question" if workload == "W1" else "x"
    dataset = uuid.uuid4()
    examples = [
        schemas.Example(id=uuid.uuid4(), dataset_id=dataset, inputs={key: r[key]}, outputs={"target": r["target"]})
        for r in data
    ]

    def score(outputs: dict[str, Any], reference_outputs: dict[str, Any]) -> dict[str, Any]:
        return {"key": "exact_match", "score": exact(outputs["output"], reference_outputs["target"])}

    # aevaluate() traces the target with tracing enabled even when upload_results=False (langsmith
    # 0.14.17, evaluation/_arunner.py `_aforward`), so it would post every run: a sampling rate of 0
    # keeps those posts from being made (the sync evaluate() traces "local" only and posts nothing).
    client = Client(api_key="offline-benchmark", api_url="http://127.0.0.1:9", tracing_sampling_rate=0.0,
                    auto_batch_tracing=False)
    if sleep_s:

        async def atarget(inputs: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(sleep_s)
            return {"output": inputs[key]}

        async def go() -> Any:
            res = await aevaluate(atarget, data=examples, evaluators=[score], max_concurrency=workers,
                                  upload_results=False, client=client)
            return [r async for r in res]

        got = asyncio.run(go())
    else:

        def target(inputs: dict[str, Any]) -> dict[str, Any]:
            return {"output": noop(inputs[key])}

        res = evaluate(target, data=examples, evaluators=[score], max_concurrency=workers,
                       upload_results=False, client=client)
        got = list(res)
    n_err = sum(1 for r in got if r["run"].error)
    scored = sum(1 for r in got if any(e.score is not None for e in r["evaluation_results"]["results"]))
    return {"n_total": len(got), "n_errors": n_err, "n_scored": scored}


RUNNERS = {"braintrust": braintrust_run, "langsmith": langsmith_run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peer_child.py", description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=sorted(RUNNERS))
    parser.add_argument("workload", choices=["W1", "W4", "W10"])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    stay_offline()
    workers, sleep_s, warm = plan(args.workload, args.rows)
    run = RUNNERS[args.peer]
    started = time.perf_counter()
    run(args.workload, rows(args.workload, warm), workers, sleep_s)
    warmup_s = time.perf_counter() - started
    detail = []
    for k in range(1, args.runs + 1):
        data = rows(args.workload, args.rows)
        started = time.perf_counter()
        counts = run(args.workload, data, workers, sleep_s)
        detail.append({"run_name": f"{args.peer}-{args.workload.lower()}-run-{k}",
                       "seconds": time.perf_counter() - started, **counts})
    out = {
        "workload": f"{args.workload}-{args.peer}",
        "peer": args.peer,
        "rows": args.rows,
        "runs": args.runs,
        "n_workers": workers,
        "times": [d["seconds"] for d in detail],
        "warmup_s": warmup_s,
        "warmup_rows": warm,
        "detail": detail,
        "network_attempts": {k: sorted(set(v)) for k, v in attempts.items()},
    }
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
