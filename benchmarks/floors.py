"""The physical floor of each workload on this machine: the same work without the runner (issue 22).

    python benchmarks/floors.py            # W1's pieces and W4's sleeps; ~5 s
    python benchmarks/floors.py --big      # and W10's 10,000 x sleep(1.0), 1,000 at once (+10 s a run)

Medians of ``--runs`` (default 3), each piece timed alone:

* **W1 user code**: 10,000 calls of the no-op function and of an exact-match comparison, a plain loop;
* **W1 JSON**: ``orjson.dumps`` of 10,000 root-trace logs as the runner stores them (one log of a
  real W1 run, copied with fresh ids);
* **W1 SQLite, bare**: those 10,000 encoded logs into a fresh WAL-mode SQLite file, one
  ``executemany`` into a two-column table, one transaction (the least SQLite can do);
* **W1 SQLite, our store**: the same 10,000 logs through ``Store.upsert_traces`` in one call into a
  fresh store (our schema, indexes and upsert, one batch);
* **W5** (``--w5``, 100,000 rows unless ``--w5-rows``; per row): reading and parsing W5's JSONL
  with ``orjson`` and calling the no-op; ``orjson.dumps`` of the W5 root logs; those encoded logs
  into a bare two-column WAL table in batches of 1,000 (one ``executemany`` and one transaction
  each); the same logs through ``Store.upsert_traces`` in batches of 1,000 (our schema, indexes,
  trigger and JSON unpacking); and the finish of that run (``Store.finish_experiment``: its
  pinned stats and compact columns, read back from the file);
* **W4 / W10 sleeps**: a bare ``asyncio.gather`` of the same sleeps behind a semaphore of the
  workers' size (200 x 0.1 s / 100; 10,000 x 1.0 s / 1,000): the event loop alone.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scale import bare_gather  # noqa: E402


def one_w1_log(tmp: Path) -> dict[str, Any]:
    """A root-trace log of a real one-row W1 run, as the store gives it back."""
    from evals import exact_match
    from runner import Experiment
    from runner.store import Store

    db = tmp / "one.db"
    r = Experiment(name="floor", data=[{"question": "1", "target": "1"}], func=lambda question: question,
                   evals=[exact_match], db=db).run(quiet=True)
    store = Store(db)
    try:
        (log,) = store.experiment_rows(r.experiment_uuid)
    finally:
        store.close()
    return dict(log)


def w5_floors(tmp: Path, rows: int, runs: int) -> list[tuple[str, float]]:
    """W5's pieces alone, each as microseconds per row (see the module docstring)."""
    import orjson
    from workloads import noop, write_jsonl

    from runner import Experiment
    from runner.store import Store

    path = write_jsonl(tmp / "w5.jsonl", rows)
    db = tmp / "w5.db"
    r = Experiment(name="floor-w5", data=str(path), func=noop, db=db).run(quiet=True)
    store = Store(db)
    try:
        logs = [orjson.loads(d) for (d,) in store._query(
            "SELECT data FROM traces WHERE experiment_uuid=?", (r.experiment_uuid,))]
    finally:
        store.close()
    n = iter(range(10**6))
    per_row = 1e6 / rows

    def read() -> None:
        with path.open("rb") as f:
            for line in f:
                rec = orjson.loads(line)
                rec.pop("target")
                noop(**rec)

    encoded = [(x["trace_id"], orjson.dumps(x)) for x in logs]

    def bare() -> None:
        con = sqlite3.connect(tmp / f"w5-bare-{next(n)}.db", isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("CREATE TABLE t (trace_id TEXT PRIMARY KEY, log BLOB)")
        for i in range(0, rows, 1000):
            con.execute("BEGIN")
            con.executemany("INSERT INTO t VALUES (?, ?)", encoded[i : i + 1000])
            con.execute("COMMIT")
        con.close()

    def ours() -> tuple[Store, str]:
        store = Store(tmp / f"w5-store-{next(n)}.db")
        project = store.project_uuid("floor")
        uuid = store.create_experiment(name="w5", project_uuid=project, run_name=None, metadata={})["uuid"]
        fresh = [{**x, "experiment_uuid": uuid, "project_uuid": project} for x in logs]
        for i in range(0, rows, 1000):
            store.upsert_traces(fresh[i : i + 1000])
        return store, uuid

    def upsert() -> None:
        ours()[0].close()

    def finish() -> float:
        store, uuid = ours()
        try:
            started = time.perf_counter()
            store.finish_experiment(uuid, status="completed", dataset_level_stats=[], return_stats=False)
            return time.perf_counter() - started
        finally:
            store.close()

    k = f"{rows:,}"
    return [
        (f"W5 per row (us): read + parse {k} JSONL lines (orjson), call the no-op", timed(read, runs) * per_row),
        (f"W5 per row (us): orjson.dumps of {k} W5 root logs", timed(lambda: [orjson.dumps(x) for x in logs], runs)
         * per_row),
        (f"W5 per row (us): SQLite, bare: {k} encoded logs, batches of 1,000 (executemany, one transaction each)",
         timed(bare, runs) * per_row),
        (f"W5 per row (us): our store: Store.upsert_traces of {k} logs in batches of 1,000", timed(upsert, runs)
         * per_row),
        (f"W5 per row (us): our store: Store.finish_experiment of that run ({k} rows)",
         statistics.median(finish() for _ in range(runs)) * per_row),
    ]


def timed(fn: Callable[[], Any], runs: int) -> float:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    import orjson

    from runner.store import Store

    parser = argparse.ArgumentParser(prog="python benchmarks/floors.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big", action="store_true", help="also W10's 10,000 x sleep(1.0), 1,000 at once")
    parser.add_argument("--w5", action="store_true", help="also W5's pieces, per row (issue 22)")
    parser.add_argument("--w5-rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    results: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-floors-") as tmp_name:
        tmp = Path(tmp_name)
        template = one_w1_log(tmp)

        def logs() -> list[dict[str, Any]]:
            out = []
            for _ in range(args.rows):
                tid = str(uuid.uuid4())
                out.append({**template, "trace_id": tid, "parent_trace_id": tid, "root_trace_id": tid})
            return out

        data = [{"question": str(i), "target": str(i)} for i in range(args.rows)]

        def noop(question: str) -> str:
            return question

        def exact(output: str, target: str) -> float:
            return 1.0 if output.strip() == target.strip() else 0.0

        def user_code() -> None:
            for r in data:
                exact(noop(r["question"]), r["target"])

        what = f"W1 user code: {args.rows:,} no-op calls + exact match, a plain loop"
        results.append((what, timed(user_code, args.runs)))
        batch = logs()
        results.append((f"W1 JSON: orjson.dumps of {args.rows:,} logs", timed(lambda: [orjson.dumps(x) for x in batch],
                                                                              args.runs)))
        encoded = [(x["trace_id"], orjson.dumps(x)) for x in batch]
        n = iter(range(10**6))

        def bare_sqlite() -> None:
            con = sqlite3.connect(tmp / f"bare-{next(n)}.db", isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("CREATE TABLE t (trace_id TEXT PRIMARY KEY, log BLOB)")
            con.execute("BEGIN")
            con.executemany("INSERT INTO t VALUES (?, ?)", encoded)
            con.execute("COMMIT")
            con.close()

        results.append((f"W1 SQLite, bare: {args.rows:,} encoded logs, one executemany, one transaction, fresh "
                        "WAL file", timed(bare_sqlite, args.runs)))

        def our_store() -> None:
            store = Store(tmp / f"store-{next(n)}.db")
            try:
                store.upsert_traces(logs_again, contended=False)
            finally:
                store.close()

        logs_again = logs()
        results.append((f"W1 SQLite, our store: Store.upsert_traces of {args.rows:,} logs in one call, fresh store "
                        "(schema included)", timed(our_store, args.runs)))
        results.append(("W4 sleeps: bare asyncio.gather, 200 x sleep(0.1), 100 at once (ideal 0.2 s)",
                        timed(lambda: asyncio.run(bare_gather(200, 100, 0.1)), args.runs)))
        if args.w5:
            results.extend(w5_floors(tmp, args.w5_rows, args.runs))
        if args.big:
            results.append(("W10 sleeps: bare asyncio.gather, 10,000 x sleep(1.0), 1,000 at once (ideal 10 s)",
                            timed(lambda: asyncio.run(bare_gather(10_000, 1000, 1.0)), args.runs)))
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"| floor (median of {args.runs}; load average {load:.2f}) | seconds |")
    print("|---|--:|")
    for what, s in results:
        print(f"| {what} | {s:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
