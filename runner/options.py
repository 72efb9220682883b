"""Per-run options and their checks (kept light: ``import runner`` loads this, not the engine)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.errors import ConfigError

__all__ = ["RUN_OPTIONS", "RunOptions", "check_positive_int", "check_seconds"]


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


@dataclass
class RunOptions:
    """Per-run settings, resolved: argument > CLI flag > environment > default."""

    run_name: str | None = None
    limit: int | None = None
    n_workers: int = 10
    n_trials: int = 1
    quiet: bool = False
    timeout: float | None = None
    retries: int = 0
    retry_backoff: float = 1.0
    stall_after: float = 300.0
    resume: bool = False
    keep_errors: bool = False
    #: where rows run: None (this process), "dask", "dask://HOST:PORT", a distributed.Client
    executor: Any = None
    #: run only the rows whose stable id falls in shard ``(index, count)``; never finish the run
    shard: tuple[int, int] | None = None
    #: ``finish`` of a sharded run: run no rows, check all are stored, finish from the stored rows
    finish_only: bool = False


RUN_OPTIONS = frozenset(
    ("limit", "n_workers", "n_trials", "quiet", "timeout", "retries", "retry_backoff", "stall_after", "resume",
     "keep_errors", "executor", "shard")
)


def check_seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)
