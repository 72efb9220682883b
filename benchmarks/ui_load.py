"""How long the web UI's run page takes to load for a run of 100,000 rows.

1. Makes the run with the runner itself: ``Experiment(...).run()`` into a fresh SQLite file (each
   row calls a function with one nested ``@trace`` span; two scores, one 0/1 and one continuous;
   about 1% of rows raise).
2. Starts ``python -m runner.server`` on that file in a subprocess (its own process, as a user
   would run it).
3. Times ``GET`` of the run page with httpx, end to end (request sent to last byte read):
   * ``cold``: the first view after the server started, which reads the compact columns and
     summaries the run stored when it finished, and caches them;
   * then, warm, the median of ``--repeat`` requests each of: the first page; page 2; sorted by a
     score, descending; errors only; a score below a value; sorted by output and a text search
     (each first once cold, as SQLite sorts or scans the run for them, then warm); and the runs
     page.
4. With ``--compare``: makes a second run of the same rows and times the compare page of the two,
   cold and warm. The process's first compare (of the 10-row run with itself), which imports
   ``scipy.special`` for the paired tests (or waits for the server's start-up import of it to
   end), is timed apart, before any cold view. That cold view of the pair comes after both runs'
   pages were viewed, so their columns are cached. Last, the server is restarted twice and the
   compare of the two big runs is its very first request: once after the server has started up
   (its CPU time stands still: the start-up imports are over), which is the first view a user
   gets, reading both runs from the store; and once sent the moment the server answers, which
   also waits for those imports. A finished run of 20,000 row-trials or more stores
   what the pages read when it finishes (:mod:`runner.store.columns`): cold is its first view
   after the server started, and reads those documents, not the rows.
   For the cold views it also reports the server process's CPU time (from ``/proc``; the
   database server's is not included): on a loaded machine the wall time of a CPU-bound request
   stretches with the load, its CPU time much less.
5. Loads the run page ``--repeat`` times in headless Chromium (Debian's ``chromium`` through
   Playwright) and reports the median of the Navigation Timing ``loadEventEnd - startTime``
   (request to the end of the load event: HTML, CSS, JS, layout), and of ``responseEnd -
   requestStart`` (the server's part).

Usage::

    python benchmarks/ui_load.py [--rows 100000] [--repeat 7] [--db PATH] [--compare] [--json]

``--db`` keeps (or reuses) the run in PATH, or in a ``postgresql://`` database, instead of a
temporary file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def make_run(db: str | Path, rows: int, run_name: str | None = None, salt: str = "") -> str:
    """A run of ``rows`` rows made by the runner; returns its experiment uuid. ``salt`` changes
    every row's scores (the compare's second run: its paired tests then have differences to test)."""
    from runner import Experiment, Score, trace

    @trace
    def lookup(question: str) -> str:
        return question[:12]

    def answer(question: str, id: int) -> str:
        lookup(question)
        if id % 97 == 0:
            raise ValueError(f"could not answer row {id}")
        return question[::-1]

    def scores(log: Any) -> list[Score]:
        h = zlib.crc32((str(log.output) + salt).encode())
        return [Score("accuracy", float(h % 2)), Score("similarity", (h % 1000) / 1000)]

    data = (
        {"id": i, "question": f"question number {i} about topic {i % 37}", "target": f"answer {i}"} for i in range(rows)
    )
    started = time.perf_counter()
    result = Experiment(name="ui-load", data=data, func=answer, evals=[scores], db=db).run(
        run_name=run_name or f"rows-{rows}", quiet=True
    )
    print(
        f"made the run: {result.n_total:,} rows ({result.n_errors:,} errors) in {time.perf_counter() - started:.0f} s"
    )
    return result.experiment_uuid


def _runs(db: str | Path) -> list[dict[str, Any]]:
    from runner.store import Store

    store = Store(db)
    try:
        return store.list_experiments()
    finally:
        store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(db: str | Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner.server", "--port", str(port), "--db", str(db), "--log-level", "warning"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/api/parea/v1/").raise_for_status()
            return proc, url
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("serve did not start") from None
            time.sleep(0.05)


def timed_get(client: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) process ``pid`` has used so far, from ``/proc`` (Linux; else
    None). Unlike the wall time of a request it hardly moves with the machine's load."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, limit: float = 15.0) -> None:
    """Until process ``pid`` has used no CPU for 0.5 s (its start-up imports are over), at most
    ``limit`` seconds."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now is None or now == last:
            return
        last = now


def median_of(repeat: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeat))


def browser_times(url: str, repeat: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    loads, server = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        for _ in range(repeat):
            page.goto(url, wait_until="load")
            timing = page.evaluate(
                "(() => { const t = performance.getEntriesByType('navigation')[0];"
                " return [t.loadEventEnd - t.startTime, t.responseEnd - t.requestStart]; })()"
            )
            loads.append(timing[0] / 1000)
            server.append(timing[1] / 1000)
        browser.close()
    return {"browser load (median)": statistics.median(loads), "browser: server response": statistics.median(server)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--db", help="keep the run in this SQLite file, or a postgresql:// database (reused if it holds one)"
    )
    parser.add_argument("--compare", action="store_true", help="also time the compare page of two such runs")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="ui-load-")
        db = Path(tmp.name) / "runner.db"
    else:
        db = args.db if args.db.startswith(("postgres://", "postgresql://")) else Path(args.db)
    try:
        reusable = isinstance(db, str) or db.exists()
        runs = {e["run_name"]: e["uuid"] for e in _runs(db)} if reusable else {}
        for n in (args.rows, 10):  # the small run is viewed first: the server then has imported numpy, scipy
            if f"rows-{n}" not in runs:
                runs[f"rows-{n}"] = make_run(db, n)
        if args.compare and f"rows-{args.rows}-b" not in runs:
            runs[f"rows-{args.rows}-b"] = make_run(db, args.rows, f"rows-{args.rows}-b", salt="b")
        uuid = runs[f"rows-{args.rows}"]
        proc, url = start_serve(db)
        results: dict[str, float] = {}
        cpu: dict[str, float] = {}
        run = f"/runs/{uuid}"

        def cold(label: str, path: str) -> float:
            """The request timed, and the server's CPU time for it kept under the same label."""
            before = cpu_seconds(proc.pid)
            elapsed = timed_get(client, path)
            after = cpu_seconds(proc.pid)
            if before is not None and after is not None:
                cpu[label] = after - before
            return elapsed

        try:
            with httpx.Client(base_url=url, timeout=300) as client:
                results["first page view of the process (imports numpy, scipy; 10 rows)"] = timed_get(
                    client, f"/runs/{runs['rows-10']}"
                )
                # then the server's start-up import of scipy.stats is over (it waits for it): the
                # cold views below are of a process that has loaded what the pages use
                small = runs["rows-10"]
                results["first compare of the process (imports scipy.special; 10 rows)"] = timed_get(
                    client, f"/compare?a={small}&b={small}"
                )
                label = "run page, cold (first view after the server started)"
                results[label] = cold(label, run)
                warm = {
                    "run page": run,
                    "run page, page 2": run + "?page=2",
                    "sorted by a score, descending": run + "?sort=score:similarity&desc=1",
                    "errors only": run + "?errors=1",
                    "score below 0.1": run + "?score=similarity&below=0.1",
                    "runs page": "/",
                }
                for label, path in warm.items():
                    timed_get(client, path)  # the first request of each may do one-off work
                    results[label] = median_of(args.repeat, lambda p=path: timed_get(client, p))  # type: ignore[misc]
                for label, path in {
                    "sorted by output": run + "?sort=output",
                    "text search 'topic 3'": run + "?q=topic+3",
                }.items():
                    results[label + ", cold"] = timed_get(client, path)
                    results[label] = median_of(args.repeat, lambda p=path: timed_get(client, p))  # type: ignore[misc]
                if args.compare:
                    path = f"/compare?a={uuid}&b={runs[f'rows-{args.rows}-b']}"
                    timed_get(client, f"/runs/{runs[f'rows-{args.rows}-b']}")  # its own view, as from the runs page
                    label = "compare page, cold (first view of the pair)"
                    results[label] = cold(label, path)
                    results["compare page"] = median_of(args.repeat, lambda: timed_get(client, path))
            # a fresh server whose first request is the big compare: once its start-up imports are
            # done (its CPU time stands still), then sent the moment it answers
            for label, settle in (("compare page, the first request of a fresh server, once started up", True),
                                  ("compare page, the first request of a fresh server, sent as it answers", False)):
                if not args.compare:
                    break
                proc.terminate()
                proc.wait(10)
                proc, url = start_serve(db)
                if settle:
                    wait_idle(proc.pid)
                with httpx.Client(base_url=url, timeout=300) as client:
                    results[label] = cold(label, f"/compare?a={uuid}&b={runs[f'rows-{args.rows}-b']}")
            if Path(CHROMIUM).exists():
                results.update(browser_times(url + run, args.repeat))
            else:
                print(f"(no Chromium at {CHROMIUM}: browser timings skipped)")
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        if tmp is not None:
            tmp.cleanup()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if args.json:
        print(json.dumps({"rows": args.rows, "repeat": args.repeat, "seconds": results, "server_cpu_seconds": cpu,
                          "load_average_1min": load}, indent=2))
        return
    print(f"run page of a {args.rows:,}-row run; warm figures are medians of {args.repeat} requests")
    width = max(map(len, results))
    for label, seconds in results.items():
        print(f"  {label:<{width}}  {seconds * 1000:8.1f} ms")
    if cpu:  # the server's own CPU time (the database server's, on PostgreSQL, not included)
        print("server process CPU time of the cold requests (10 ms resolution):")
        for label, seconds in cpu.items():
            print(f"  {label:<{width}}  {seconds * 1000:8.0f} ms")
    if load is not None:
        print(f"load average (1 min) at the end: {load:.2f}")


if __name__ == "__main__":
    main()
