"""Small measuring helpers the benchmark scripts share (no workload of their own, so that
``workloads`` and ``scale`` both import this and not each other)."""

from __future__ import annotations

import resource
from pathlib import Path

__all__ = ["count_stored", "peak_rss_mb", "x_rows"]


def x_rows(n: int) -> list[dict[str, str]]:
    return [{"x": str(i)} for i in range(n)]


def peak_rss_mb() -> float:
    """This process's peak resident set size (``VmHWM``), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # pragma: no cover


def count_stored(db: str | Path, uuid: str, score_name: str | None) -> tuple[int, int]:
    """(root rows, roots carrying a ``score_name`` score) of experiment ``uuid`` in store ``db``."""
    from runner.store import Store

    store = Store(db)
    try:
        if score_name is None:
            return store.count_roots(uuid), 0
        rows = store.experiment_rows(uuid)
        scored = sum(1 for r in rows if any(s.get("name") == score_name for s in r.get("scores") or []))
        return len(rows), scored
    finally:
        store.close()
