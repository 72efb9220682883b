"""A Dask worker process of its own (``python -m distributed.cli.dask_worker``) joining a test's
cluster, with resources only it has: for tests of resource placement and of late joiners; and a
scheduler process of its own, for tests of what the scheduler needs to import."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def extra_worker(
    scheduler_address: str, resources: str, name: str, pythonpath: tuple[Path, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker process with 2 threads and ``resources`` (e.g. ``"GPU=1"``), on loopback, that
    can import this checkout (and ``pythonpath``); stopped when the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", scheduler_address, "--nthreads", "2",
         "--resources", resources, "--host", "127.0.0.1", "--no-dashboard", "--name", name],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (ROOT, *pythonpath))},
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(60)


@contextlib.contextmanager
def scheduler_process(directory: Path) -> Iterator[str]:
    """A scheduler (``python -m distributed.cli.dask_scheduler``) in a process of its own on
    loopback, that can import this checkout and nothing of the test's; its address."""
    file = directory / "scheduler.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=directory,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 120
        address = None
        while address is None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                address = str(json.loads(file.read_text())["address"])
            if address is None and (proc.poll() is not None or time.monotonic() > deadline):
                raise RuntimeError(f"the scheduler did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        yield address
    finally:
        proc.terminate()
        proc.wait(60)
