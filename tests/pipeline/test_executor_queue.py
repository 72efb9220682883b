"""Queue-ahead on a real Dask cluster (a LocalCluster of two worker processes on 127.0.0.1):
rows beyond ``n_workers`` wait on the workers, so a worker does not idle for a round trip
through the driver between tasks, yet at most ``n_workers`` rows run across the cluster.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")

from runner import Experiment  # noqa: E402
from runner.store import Store  # noqa: E402

pytestmark = pytest.mark.timeout(300)

N_WORKERS = 4


def _cluster(threads: int) -> Any:
    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=threads, processes=True, host="127.0.0.1", dashboard_address=":0",
        silence_logs=40,
    )


def leaves_a_mark(x: int, d: str) -> int:
    threading.Event().wait(0.2)
    Path(d, f"done-{x}").write_text("")
    return x


class FreezesTheDriver:
    """A lazy dataset: reading row ``at`` blocks the driver (its event loop reads the rows) until
    ``N_WORKERS`` rows have finished on the workers meanwhile, or 90 s passed; ``finished`` is how
    many did. Rows the driver had sent before it froze are all that can run."""

    def __init__(self, n: int, at: int, d: Path) -> None:
        self.n, self.at, self.d = n, at, d
        self.finished: int | None = None

    def _done(self) -> int:
        return len(list(self.d.glob("done-*")))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self.n):
            if i == self.at:
                before = self._done()
                deadline = time.monotonic() + 90
                wait = threading.Event()
                while self._done() - before < N_WORKERS and time.monotonic() < deadline:
                    wait.wait(0.05)
                self.finished = self._done() - before
            yield {"x": i, "d": str(self.d)}


def test_rows_queued_on_the_workers_run_while_the_driver_cannot_send_more(tmp_path: Path) -> None:
    # With only n_workers rows sent at a time, a frozen driver leaves fewer than n_workers rows to
    # finish (one was just taken back); with the next rows queued on the workers, more finish
    rows = FreezesTheDriver(60, at=40, d=tmp_path)
    exp = Experiment(name="q", data=rows, func=leaves_a_mark, n_workers=N_WORKERS, db=tmp_path / "q.db")
    with _cluster(2) as cluster, distributed.Client(cluster) as client:
        result = exp.run(quiet=True, executor=client)
    assert (result.n_total, result.n_errors) == (60, 0)
    assert rows.finished is not None and rows.finished >= N_WORKERS, (
        f"only {rows.finished} rows finished on the workers while the driver was frozen"
    )


async def interval(x: int) -> list[float]:
    start = time.time()
    await asyncio.sleep(0.05)
    return [start, time.time()]


def test_at_most_n_workers_rows_run_at_once_across_the_cluster(tmp_path: Path) -> None:
    # 16 threads per worker: Dask alone would run every queued batch at once; the per-process
    # gates keep the rows running across both processes to n_workers
    n_workers = 8
    exp = Experiment(name="b", data=[{"x": i} for i in range(200)], func=interval, n_workers=n_workers,
                     db=tmp_path / "b.db")
    with _cluster(16) as cluster, distributed.Client(cluster) as client:
        result = exp.run(quiet=True, executor=client)
    assert (result.n_total, result.n_errors) == (200, 0)
    store = Store(tmp_path / "b.db")
    try:
        spans = [json.loads(r["output"]) if isinstance(r["output"], str) else r["output"]
                 for r in store.experiment_rows(result.experiment_uuid)]
    finally:
        store.close()
    # each row's interval is measured inside it, so within the time it held its gate
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda p: (p[0], p[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert 0 < peak <= n_workers, f"{peak} rows ran at once (n_workers={n_workers})"


async def waits_for_others(x: int, d: str) -> int:
    """Rows 0 and 2 (one in each of the first two tasks) wait until 4 other rows have finished,
    or 60 s; every other row finishes at once. Returns how many others had finished."""
    if x in (0, 2):
        deadline = time.monotonic() + 60
        while len(list(Path(d).glob("done-*"))) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return len(list(Path(d).glob("done-*")))
    Path(d, f"done-{x}").write_text("")
    return -1


def test_a_tasks_freed_slots_run_queued_rows_before_its_slowest_row_ends(tmp_path: Path) -> None:
    # An async task carries a process's share of n_workers (2 rows here) and ends with its
    # slowest row. Without a task queued behind it on the worker, the slot its quick row freed
    # stayed idle until then: with rows 0 and 2 waiting, only rows 1 and 3 could finish, and a
    # run of long rows went wave by wave. Queued from the first task on (however long rows
    # take), the next rows start in the freed slots at once.
    exp = Experiment(name="w", data=[{"x": i, "d": str(tmp_path)} for i in range(12)], func=waits_for_others,
                     n_workers=N_WORKERS, db=tmp_path / "w.db")
    with _cluster(2) as cluster, distributed.Client(cluster) as client:
        result = exp.run(quiet=True, executor=client)
    assert (result.n_total, result.n_errors) == (12, 0)
    store = Store(tmp_path / "w.db")
    try:
        seen = {json.loads(r["inputs"])["x"] if isinstance(r["inputs"], str) else r["inputs"]["x"]:
                int(r["output"]) for r in store.experiment_rows(result.experiment_uuid)}
    finally:
        store.close()
    assert seen[0] >= 4 and seen[2] >= 4, f"the waiting rows saw only {seen[0]} and {seen[2]} rows finish"
