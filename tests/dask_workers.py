"""A Dask worker process of its own (``python -m distributed.cli.dask_worker``) joining a test's
cluster, with resources only it has: for tests of resource placement and of late joiners."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def extra_worker(scheduler_address: str, resources: str, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """A worker process with 2 threads and ``resources`` (e.g. ``"GPU=1"``), on loopback, that
    can import this checkout; stopped when the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", scheduler_address, "--nthreads", "2",
         "--resources", resources, "--host", "127.0.0.1", "--no-dashboard", "--name", name],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(60)
