"""Rows on a Dask cluster against rows in this process, in one invocation.

* ``cpu``: a CPU-bound row (about 10 ms of pure-Python arithmetic, no I/O), ``--rows`` rows:
  in-process threads (timed before and after the Dask runs) against ``executor="dask"`` (it
  starts a LocalCluster of one worker process per core, 2 on a 2-core machine, inside
  ``run()``), as a ratio of wall times. The GIL lets threads use one core; two processes can
  use two. ``speedup`` includes the cluster's start and stop; ``speedup_without_cluster_start``
  subtracts a one-row ``executor="dask"`` run; ``speedup_standing`` is a cluster of the same
  shape started beforehand, and ``speedup_bare_dask`` the same work as bare Dask tasks on it.
* ``io``: an I/O-bound async row (``asyncio.sleep(0.05)``), ``--rows`` rows, 200 in flight:
  efficiency against the ideal ``rows / 200 * 0.05`` s (medians of 5 runs taking turns, after
  a warm-up): in-process against ``dask://`` to a cluster of the shape ``executor="dask"``
  starts (2 workers, 2 threads each) whose scheduler and workers are processes of their own;
  then in-process against a standing LocalCluster of that shape whose scheduler runs in the
  driver's process (as ``executor="dask"``'s does); and ``executor="dask"`` once with its
  cluster's start (seconds, which dwarf a 0.5 s ideal).
* ``slow``: 200 async rows of 2 to 6 s each (seeded by the row), 50 in flight: in-process
  against ``dask://`` (the cluster of ``io``), one run each, and the ideal (the rows' seconds / 50).
* ``memory``: the driver's peak RSS running a JSONL file of ``--memory-rows`` rows through
  the Dask executor (each size in its own driver process, so peaks do not mix).

Usage::

    python benchmarks/cluster.py [--rows 2000] [--only cpu,io,slow,memory] [--memory-rows 20000,100000]
                                 [--memory-scheduler driver|external]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner import Experiment

SPIN = 0  # loop count for ~10 ms, calibrated in main() and passed to workers in the row


def spin(x: int, n: int) -> int:
    acc = 0
    for i in range(n):
        acc = (acc + i * x) % 1_000_003
    return acc


def spin_many(span: tuple[int, int, int]) -> list[int]:
    start, stop, n = span
    return [spin(x, n) for x in range(start, stop)]


async def nap(x: int) -> int:
    await asyncio.sleep(0.05)
    return x


async def long_nap(x: int) -> int:
    await asyncio.sleep(_long(x))
    return x


def _long(x: int) -> float:
    """Row ``x``'s seconds for ``long_nap``: 2 to 6, seeded by the row (the same in every run)."""
    import random

    return random.Random(x).uniform(2.0, 6.0)


def noop(x: int, text: str) -> int:
    return x


def calibrate(target_s: float = 0.010) -> int:
    """Loop count for ``target_s`` of CPU time (process time: other processes' load does not count)."""
    n = 20_000
    while True:
        t = time.process_time()
        spin(3, n)
        took = time.process_time() - t
        if took > 0.1:
            return max(1, int(n * target_s / took))
        n *= 2


def timed(exp: Experiment, **options: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    result = exp.run(quiet=True, **options)
    return time.perf_counter() - t, result


def _standing(threads: int) -> Any:
    """A LocalCluster of 2 worker processes, started before the timed runs (a standing cluster)."""
    import distributed

    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=threads, processes=True, host="127.0.0.1", dashboard_address=":0",
        silence_logs=40,
    )


def _median(xs: list[float]) -> float:
    import statistics

    return round(statistics.median(xs), 3)


def cpu(rows: int, db: Path) -> dict[str, Any]:
    import distributed

    from runner.pipeline.executors import DaskExecutor

    n = calibrate()
    data = [{"x": i, "n": n} for i in range(rows)]
    exp = Experiment(name="cpu", data=data, func=spin, n_workers=64, db=db)
    one = Experiment(name="cpu1", data=data[:1], func=spin, n_workers=64, db=db)
    # threads are timed before and after the Dask runs, so a load that changes meanwhile weighs
    # on both sides alike
    t_threads, r1 = timed(exp)
    # what the issue names: executor="dask", which starts a LocalCluster of one process per core
    # (2 here, 2 threads each) inside run() and stops it at the end: the start is included
    executor = DaskExecutor()
    t_dask_cold, r3 = timed(exp, executor=executor)
    t_start, _ = timed(one, executor=DaskExecutor())  # a one-row run: the cluster's start and stop
    with _standing(2) as cluster, distributed.Client(cluster) as client:
        timed(one, executor=client)  # warm: the workers have imported the runner
        t_dask, r2 = timed(exp, executor=client)
        # the ceiling on this machine now: the same work as bare Dask tasks of 16 rows, no runner
        t = time.perf_counter()
        client.gather(client.map(spin_many, [(i, min(i + 16, rows), n) for i in range(0, rows, 16)], pure=False))
        t_bare = time.perf_counter() - t
    t_threads2, _ = timed(exp)
    assert r1.n_total == r2.n_total == r3.n_total == rows and r1.n_errors == r2.n_errors == r3.n_errors == 0
    threads = (t_threads + t_threads2) / 2
    return {
        "rows": rows,
        "row_cpu_ms": 10,
        "loops": n,
        "threads_s": [round(t_threads, 2), round(t_threads2, 2)],
        "dask_s": round(t_dask_cold, 2),
        "dask_one_row_run_s": round(t_start, 2),
        "dask_standing_cluster_s": round(t_dask, 2),
        "bare_dask_tasks_s": round(t_bare, 2),
        "speedup": round(threads / t_dask_cold, 2),
        "speedup_without_cluster_start": round(threads / max(t_dask_cold - t_start, 1e-9), 2),
        "speedup_standing": round(threads / t_dask, 2),
        "speedup_bare_dask": round(threads / t_bare, 2),
    }


def io(rows: int, db: Path, tmp: Path, repeats: int = 5) -> dict[str, Any]:
    import distributed

    data = [{"x": i} for i in range(rows)]
    exp = Experiment(name="io", data=data, func=nap, n_workers=200, db=db)
    double = Experiment(name="io2", data=data + [{"x": rows + i} for i in range(rows)], func=nap, n_workers=200, db=db)
    ideal = rows / 200 * 0.05
    times: dict[str, list[float]] = {"local": [], "external": [], "driver": []}
    doubles: dict[str, list[float]] = {"local": [], "external": [], "driver": []}
    # each figure is the median of `repeats` runs after one warm-up run, in-process and Dask
    # taking turns, in two phases:
    # * external: `dask://` to a scheduler and 2 workers (2 threads each) in processes of their
    #   own, as a cluster is run; no Dask client or scheduler in the driver between its runs;
    # * driver: a standing LocalCluster of the same shape, given as a distributed.Client: its
    #   scheduler and the client's loop run in the driver's process (as in executor="dask"),
    #   beside the in-process runs too
    def turns(setups: tuple[tuple[str, dict[str, Any]], ...]) -> None:
        for _ in range(repeats):
            for setup, options in setups:
                t, r = timed(exp, **options)
                assert r.n_total == rows and r.n_errors == 0
                times[setup].append(t)
                doubles[setup].append(timed(double, **options)[0])

    with external_cluster(tmp) as address:
        for options in ({}, {"executor": address}):
            timed(exp, **options)
        turns((("local", {}), ("external", {"executor": address})))
    local_beside, local_beside_doubles = times["local"], doubles["local"]
    times["local"], doubles["local"] = [], []
    with _standing(2) as cluster, distributed.Client(cluster) as client:
        timed(exp, executor=client)
        turns((("local", {}), ("driver", {"executor": client})))
    t_cold, r3 = timed(exp, executor="dask")  # the cluster's start and stop included
    assert r3.n_total == rows and r3.n_errors == 0
    med = {k: _median(v) for k, v in times.items()}
    return {
        "rows": rows,
        "ideal_s": ideal,
        "in_process_beside_external_s": [round(x, 3) for x in local_beside],
        "dask_external_s": [round(x, 3) for x in times["external"]],
        "in_process_beside_driver_cluster_s": [round(x, 3) for x in times["local"]],
        "dask_driver_cluster_s": [round(x, 3) for x in times["driver"]],
        "in_process_efficiency": round(ideal / _median(local_beside), 3),
        "dask_external_efficiency": round(ideal / med["external"], 3),
        "in_process_beside_driver_cluster_efficiency": round(ideal / med["local"], 3),
        "dask_driver_cluster_efficiency": round(ideal / med["driver"], 3),
        # the run's fixed costs (opening the store, connecting, /finished) apart: what `rows` more
        # rows cost, from a run of twice as many, against the same ideal
        "in_process_marginal_efficiency": round(
            ideal / max(_median(local_beside_doubles) - _median(local_beside), 1e-9), 3),
        "dask_external_marginal_efficiency": round(
            ideal / max(_median(doubles["external"]) - med["external"], 1e-9), 3),
        "dask_driver_cluster_marginal_efficiency": round(
            ideal / max(_median(doubles["driver"]) - med["driver"], 1e-9), 3),
        "dask_with_cluster_start_s": round(t_cold, 2),
    }


def slow(rows: int, tmp: Path) -> dict[str, Any]:
    """Long async rows of uneven length (2-6 s, as calls to a model take): in-process against
    `dask://` to a cluster of its own processes, one run each."""
    data = [{"x": i} for i in range(rows)]
    exp = Experiment(name="slow", data=data, func=long_nap, n_workers=50, db=tmp / "slow.db")
    ideal = sum(_long(i) for i in range(rows)) / 50
    with external_cluster(tmp) as address:
        timed(Experiment(name="warm", data=data[:4], func=nap, n_workers=4, db=tmp / "slow.db"), executor=address)
        t_local, r1 = timed(exp)
        t_dask, r2 = timed(exp, executor=address)
    assert r1.n_total == r2.n_total == rows and r1.n_errors == r2.n_errors == 0
    return {
        "rows": rows,
        "n_workers": 50,
        "row_s": "2-6",
        "ideal_s": round(ideal, 2),
        "in_process_s": round(t_local, 2),
        "dask_external_s": round(t_dask, 2),
        "dask_to_in_process": round(t_dask / t_local, 3),
    }


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(path: str, db: str, executor: str, n_workers: str) -> None:
    import threading

    samples: list[tuple[float, float]] = []  # (seconds since start, driver RSS in MB)
    stop = threading.Event()
    t = time.perf_counter()

    def sample() -> None:
        while not stop.wait(0.25):
            samples.append((time.perf_counter() - t, _rss_mb()))

    threading.Thread(target=sample, daemon=True).start()
    exp = Experiment(name="mem", data=path, func=noop, n_workers=int(n_workers), db=db)
    r = exp.run(quiet=True, executor=executor)
    took = time.perf_counter() - t
    stop.set()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # the RSS at each tenth of the run: flat, or growing with the rows read so far
    tenths = [round(max((m for s, m in samples if s <= took * k / 10), default=0.0)) for k in range(1, 11)]
    print("MEM " + json.dumps({"rows": r.n_total, "errors": r.n_errors, "n_workers": int(n_workers),
                               "seconds": round(took, 1), "driver_peak_rss_mb": round(peak, 1),
                               "rss_mb_by_tenth_of_run": tenths}), flush=True)


def memory(sizes: list[int], tmp: Path, executor: str, n_workers: int) -> list[dict[str, Any]]:
    out = []
    for size in sizes:
        path = tmp / f"rows-{size}.jsonl"
        with path.open("w") as f:
            for i in range(size):
                f.write(json.dumps({"x": i, "text": f"row {i} " + "y" * 80}) + "\n")
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(path), str(tmp / f"mem-{size}.db"), executor,
             str(n_workers)],
            capture_output=True, text=True, timeout=3600, cwd=tmp,
        )
        line = next((x for x in proc.stdout.splitlines() if x.startswith("MEM ")), None)
        if line is None:
            raise RuntimeError(proc.stderr[-3000:])
        out.append({**json.loads(line[4:]), "executor": executor.split(":")[0]})
    return out


@contextlib.contextmanager
def external_cluster(tmp: Path) -> Iterator[str]:
    """A scheduler and two worker processes (2 threads each), each its own process."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"127.0.0.1:{port}"
    here = Path(__file__).resolve().parent
    # the scheduler and workers import the runner of this checkout, as the driver does
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), str(here.parent)])}
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"], stderr=subprocess.DEVNULL, env=env, cwd=tmp)]
    try:
        for i in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "2", "--host",
                 "127.0.0.1", "--no-dashboard", "--name", f"w{i}"], stderr=subprocess.DEVNULL, env=env, cwd=tmp))
        import distributed

        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield "dask://" + address
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--only", default="cpu,io,slow,memory")
    p.add_argument("--memory-rows", default="20000,100000")
    p.add_argument(
        "--memory-scheduler", choices=["driver", "external", "in-process"], default="driver",
        help="driver: executor='dask' (the LocalCluster's scheduler runs in the driver); external: a "
        "`dask scheduler` and 2 `dask worker` processes, and executor='dask://...'",
    )
    p.add_argument("--memory-workers", type=int, default=64, help="n_workers of the memory run (rows in flight)")
    p.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        os.chdir(tmp)
        parts = set(args.only.split(","))
        if "cpu" in parts:
            print("cpu   ", json.dumps(cpu(args.rows, tmp / "cpu.db")), flush=True)
        if "io" in parts:
            print("io    ", json.dumps(io(args.rows, tmp / "io.db", tmp)), flush=True)
        if "slow" in parts:
            print("slow  ", json.dumps(slow(200, tmp)), flush=True)
        if "memory" in parts:
            sizes = [int(s) for s in args.memory_rows.split(",")]
            if args.memory_scheduler == "driver":
                results = memory(sizes, tmp, "dask", args.memory_workers)
            elif args.memory_scheduler == "in-process":  # the reference: no Dask at all
                results = memory(sizes, tmp, "local", args.memory_workers)
            else:
                with external_cluster(tmp) as address:
                    results = memory(sizes, tmp, address, args.memory_workers)
            for m in results:
                print("memory", json.dumps(m), flush=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
