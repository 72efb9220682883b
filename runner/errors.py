"""Every error the runner raises on purpose.

The hierarchy::

    RunnerError                  base class: a message that names the problem and what to do
    ├── ConfigError              bad arguments, settings or config file (CLI exit code 2)
    │   ├── DatasetError         unreadable dataset, unknown column, dataset not found
    │   ├── RunNameError         invalid or already-used run name
    │   └── FunctionError        a user callable that cannot be used as given
    ├── BackendError             the store or the server refused or failed a request
    │   └── NotFoundError        unknown experiment, trace, dataset or run
    └── ExperimentFailed         raised by nothing; used as a status marker by the CLI

A ``RunnerError`` is always meant for the user: the CLI prints ``str(err)`` on one line and
exits with ``err.exit_code``; only ``--debug`` shows the traceback.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ConfigError",
    "DatasetError",
    "ExperimentFailed",
    "FunctionError",
    "NotFoundError",
    "RunNameError",
    "RunnerError",
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


class ExperimentFailed(RunnerError):
    """An experiment finished with status ``failed``."""
