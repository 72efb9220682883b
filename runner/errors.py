"""Every error the runner raises on purpose, and :func:`warn_once` for what only deserves a warning.

The hierarchy::

    RunnerError                  base class: a message that names the problem and what to do
    ├── ConfigError              bad arguments, settings or config file (CLI exit code 2)
    │   ├── DatasetError         unreadable dataset, unknown column, dataset not found
    │   ├── RunNameError         invalid or already-used run name
    │   └── FunctionError        a user callable that cannot be used as given
    ├── BackendError             the store or the server refused or failed a request
    │   ├── NotFoundError        unknown experiment, trace, dataset or run
    │   └── ConflictError        the request contradicts what is stored (a server's 409)
    ├── CompletionError          an LLM call (runner.completion) came back with status "error"
    │   └── RateLimitError       ... because the provider was still rate-limiting after retries
    └── ExperimentFailed         raised by nothing; used as a status marker by the CLI

A ``RunnerError`` is always meant for the user: the CLI prints ``str(err)`` on one line and
exits with ``err.exit_code``; only ``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = [
    "BackendError",
    "CompletionError",
    "ConfigError",
    "ConflictError",
    "DatasetError",
    "ExperimentFailed",
    "FunctionError",
    "NotFoundError",
    "RateLimitError",
    "RunNameError",
    "RunnerError",
    "warn_once",
]


class RunnerError(Exception):
    """Base class of every error the runner raises for the user to read."""

    exit_code: int = 1


class ConfigError(RunnerError):
    """Something the user configured cannot work: fix the argument, flag or file named."""

    exit_code = 2


class DatasetError(ConfigError):
    """The dataset cannot be read, or its columns do not fit the function."""


class RunNameError(ConfigError):
    """The run name is invalid or already used in the project."""


class FunctionError(ConfigError):
    """A function, scorer or dataset-level eval given by the user cannot be called as needed."""


class BackendError(RunnerError):
    """The store or the server refused or failed a request."""


class NotFoundError(BackendError):
    """The experiment, run, trace or dataset asked for does not exist."""


class ConflictError(BackendError):
    """The request contradicts what is stored, e.g. finishing a completed run as failed."""


class CompletionError(RunnerError):
    """An LLM call failed for good: the provider refused it, or kept failing through the retries.

    ``response`` is the full ``CompletionsResponseSchema`` (status ``"error"``, the provider's
    message in ``error``), or ``None`` when no completion response came back at all.
    """

    def __init__(self, message: str, response: Any = None) -> None:
        super().__init__(message)
        self.response = response


class RateLimitError(CompletionError):
    """The provider (or the server's ``/completion``) was still rate-limiting after its retries.

    Raised inside an experiment row, it fails the row like any error; ``retries=`` on the
    experiment then runs the row again after a backoff.
    """


class ExperimentFailed(RunnerError):
    """An experiment finished with status ``failed``."""


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the SQLite file's size limit) is full."""
    import errno
    import sqlite3

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == 13 or "database or disk is full" in str(exc)  # SQLITE_FULL
    return False


def disk_full_message(path: str, exc: BaseException) -> str:
    """What a full disk means for the user: which file, and what to free."""
    return (
        f"cannot write results to {path}: the disk is full ({exc}). Nothing written so far is lost; "
        f"free space on the disk holding {path} (or move it: --db / RUNNER_DB) and resume the run with "
        "--resume to finish the rows that are missing"
    )


_warned: set[tuple[str, str]] = set()


def warn_once(key: tuple[str, str], message: str) -> None:
    """Print ``warning: message`` on stderr, once per ``key`` in this process."""
    if key in _warned:
        return
    _warned.add(key)
    print(f"warning: {message}", file=sys.stderr, flush=True)
