"""How long the web UI's Logs page takes over many logs (a million by default).

1. Fills a fresh SQLite file with ``--logs`` root traces written straight through the store
   (``Store.upsert_traces``, batches of 5,000) in three projects, each with a name, a status
   (1 % errors), latency, tokens, cost, a score, tags on one log in ten and a short input and
   output; plus one child span per log in a hundred. Their timestamps span 30 days.
2. Starts ``python -m runner.server`` on that file in a subprocess.
3. Times ``GET /logs`` with httpx, end to end, for each query below: the first request once (cold),
   then the median of ``--repeat`` (warm).

Usage::

    python benchmarks/logs_load.py [--logs 1000000] [--repeat 5] [--db PATH] [--json]

``--db`` keeps (or reuses) the logs in PATH.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
from ui_load import start_serve  # noqa: E402

QUERIES = {
    "newest first": "/logs",
    "page 20": "/logs?page=20",
    "one project": "/logs?project=proj-1",
    "errors only": "/logs?status=error",
    "last day": "/logs?since={day}",
    "name contains": "/logs?name=summar",
    "tag": "/logs?tag=prod",
    "score range": "/logs?score=quality&min=0.9&max=0.95",
    "text search (common)": "/logs?q=topic+7",
    "text search (rare)": "/logs?q=question+number+123457+",
    "slowest first": "/logs?sort=latency",
}


def fill(db: Path, n: int) -> None:
    from runner.store import Store

    store = Store(db)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    projects = [store.project_uuid(f"proj-{i}") for i in range(3)]
    names = ["chat", "summarize", "classify", "extract"]
    batch: list[dict[str, Any]] = []
    for i in range(n):
        t = start + timedelta(seconds=i * 30 * 86400 / n)
        tid = f"log-{i:08d}"
        log: dict[str, Any] = {
            "trace_id": tid,
            "root_trace_id": tid,
            "parent_trace_id": tid,
            "project_uuid": projects[i % 3],
            "trace_name": names[i % 4],
            "status": "error" if i % 100 == 7 else "success",
            "start_timestamp": t.isoformat(),
            "end_timestamp": (t + timedelta(seconds=1)).isoformat(),
            "latency": (i * 7919 % 1000) / 100,
            "input_tokens": 100 + i % 50,
            "output_tokens": 20 + i % 30,
            "total_tokens": 120 + i % 50 + i % 30,
            "cost": (i % 13) / 10000,
            "scores": [{"name": "quality", "score": (i * 2654435761 % 1000) / 1000}],
            "inputs": {"question": f"question number {i} about topic {i % 37}"},
            "output": f"answer {i}",
        }
        if i % 10 == 0:
            log["tags"] = ["prod"]
        if i % 100 == 7:
            log["error"] = f"ValueError: could not answer {i}"
        batch.append(log)
        if i % 100 == 0:
            cid = f"{tid}-c"
            batch.append(
                {
                    "trace_id": cid,
                    "root_trace_id": tid,
                    "parent_trace_id": tid,
                    "project_uuid": projects[i % 3],
                    "trace_name": "llm",
                    "start_timestamp": t.isoformat(),
                    "depth": 1,
                    "total_tokens": 10,
                }
            )
        if len(batch) >= 5000:
            store.upsert_traces(batch, contended=False)
            batch = []
    if batch:
        store.upsert_traces(batch, contended=False)
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    db = args.db or Path(tempfile.mkdtemp()) / "logs.db"
    t0 = time.perf_counter()
    if not db.exists():
        fill(db, args.logs)
    fill_s = time.perf_counter() - t0
    proc, base = start_serve(db)
    results: dict[str, Any] = {"logs": args.logs, "fill_seconds": round(fill_s, 1), "queries": {}}
    try:
        day = "2026-01-30T00:00"
        with httpx.Client(base_url=base, timeout=120) as web:
            for label, url in QUERIES.items():
                url = url.format(day=day)
                times = []
                for _ in range(1 + args.repeat):
                    t = time.perf_counter()
                    r = web.get(url)
                    times.append(time.perf_counter() - t)
                    assert r.status_code == 200, (url, r.status_code, r.text[:300])
                shown = r.text.count("data-href=")
                results["queries"][label] = {
                    "url": url,
                    "cold_s": round(times[0], 4),
                    "warm_median_s": round(statistics.median(times[1:]), 4),
                    "rows_shown": shown,
                }
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.logs:,} logs (filled in {fill_s:.0f} s)")
    for label, q in results["queries"].items():
        print(
            f"  {label:24} cold {q['cold_s'] * 1000:8.1f} ms   warm {q['warm_median_s'] * 1000:8.1f} ms"
            f"   ({q['rows_shown']} rows)  {q['url']}"
        )


if __name__ == "__main__":
    main()
