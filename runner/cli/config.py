"""A config file's experiments: loading the file, picking experiments (``--only``), run names
(``--run-name``) and filling the command line's flags into the fields the file left unset.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError, RunnerError

if TYPE_CHECKING:
    from runner.experiment import Experiment

__all__ = ["collect_experiments", "load_config", "resolve_data_path", "run_names", "select", "with_flags"]


def load_config(path: Path) -> ModuleType:
    """Import ``path`` as a module (not as ``__main__``, so its ``if __name__ == "__main__"`` block
    does not run); any error while importing it becomes a one-line :class:`ConfigError`."""
    if not path.exists():
        raise ConfigError(f"config file {path} not found")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; give the .py file that defines the experiments")
    if path.suffix != ".py":
        raise ConfigError(f"{path} is not a Python file; give a .py file that defines Experiment(...) objects")
    module_name = "runner_config_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise ConfigError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so the file can import its neighbours, as `python FILE` would
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from exc
    except RunnerError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except Exception as exc:
        raise ConfigError(
            f"{path}:{_line_in(path, exc)}: {type(exc).__name__}: {exc} (while loading the file; "
            "--debug shows the traceback)"
        ) from exc
    return module


def _line_in(path: Path, exc: BaseException) -> str:
    """The line of ``path`` where ``exc`` passed last, or ``?``."""
    resolved = str(path.resolve())
    line = "?"
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == resolved or frame.filename == str(path):
            line = str(frame.lineno)
    return line


def collect_experiments(module: ModuleType, path: Path) -> list[Experiment]:
    """The list ``experiments`` if the file has one, else every module-level ``Experiment``."""
    from runner.experiment import Experiment

    declared = getattr(module, "experiments", None)
    if declared is not None:
        if isinstance(declared, Experiment):
            declared = [declared]
        if not isinstance(declared, (list, tuple)):
            raise ConfigError(f"{path}: `experiments` must be a list of Experiment, got {type(declared).__name__}")
        for i, item in enumerate(declared):
            if not isinstance(item, Experiment):
                raise ConfigError(f"{path}: experiments[{i}] is {type(item).__name__} {item!r:.60}, not an Experiment")
        found = list(declared)
    else:
        found = []
        for value in vars(module).values():
            if isinstance(value, Experiment) and all(value is not f for f in found):
                found.append(value)
    if not found:
        raise ConfigError(
            f"{path} defines no experiments: create one at module level (exp = Experiment(...)) "
            "or list them in `experiments = [...]`"
        )
    return found


def select(experiments: list[Experiment], only: Sequence[str] | None, path: Path) -> list[Experiment]:
    if not only:
        return experiments
    names = [e.name for e in experiments]
    for name in only:
        if name not in names:
            raise ConfigError(f"--only {name}: {path} has no experiment called {name!r} (it has: {', '.join(names)})")
    return [e for e in experiments if e.name in only]


# -- flags ----------------------------------------------------------------------------------------
def run_names(experiments: Sequence[Experiment], args: argparse.Namespace) -> list[str | None]:
    """The run name of each experiment: ``--run-name``, ``--run-prefix``-NAME, or generated."""
    from runner.names import sanitise_run_name
    from runner.store import validate_run_name

    if args.run_name is not None:
        if len(experiments) > 1:
            raise ConfigError(
                f"--run-name names one run, but {len(experiments)} experiments would run "
                f"({', '.join(e.name for e in experiments)}); use --run-prefix, or --only NAME to pick one"
            )
        return [validate_run_name(args.run_name)]
    if args.run_prefix is not None:
        prefix = sanitise_run_name(args.run_prefix)
        if prefix != args.run_prefix:
            print(
                f"note: --run-prefix {args.run_prefix!r} becomes {prefix!r}: run names hold only letters, "
                "digits, '-' and '_'",
                file=sys.stderr,
            )
        names = [f"{prefix}-{sanitise_run_name(e.name)}"[:100] for e in experiments]
        return [validate_run_name(n) for n in names]
    return [None] * len(experiments)


def with_flags(exp: Experiment, args: argparse.Namespace, path: Path) -> Experiment:
    """``exp`` with the flags filled into the fields the file left unset (the file's value wins)."""
    changes: dict[str, Any] = {}
    flags = (
        ("db", args.db, "--db"),
        ("base_url", args.base_url, "--base-url"),
        ("api_key", args.api_key, "--api-key"),
        ("n_workers", args.n_workers, "--n-workers"),
        ("project_name", args.project, "--project"),
        ("n_trials", args.trials, "--trials"),
        ("timeout", args.timeout, "--timeout"),
        ("retries", args.retries, "--retries"),
        ("otlp_endpoint", getattr(args, "otlp_endpoint", None), "--otlp-endpoint"),
        ("executor", getattr(args, "executor", None), "--executor"),
    )
    data = resolve_data_path(exp, path)
    if data is not exp.data:
        changes["data"] = data
    defaults = {"n_trials": 1, "retries": 0}  # fields whose default is not None
    for field, value, flag in flags:
        if value is None:
            continue
        current = getattr(exp, field)
        unset = current == defaults.get(field)
        if unset:
            changes[field] = value
        elif current != value:
            shown = "(set)" if field == "api_key" else repr(current)
            print(f"note: {flag} ignored for {exp.name!r}: {path.name} sets {field}={shown}", file=sys.stderr)
    return dataclasses.replace(exp, **changes) if changes else exp


def resolve_data_path(exp: Experiment, config: Path) -> Any:
    """``exp.data`` with a relative file path made relative to the config file's folder.

    Under the CLI a config file's paths mean the same from any working folder, as its imports
    do. A path found only from the current folder (the rule before) still works, with a note; a
    path found in neither raises :class:`~runner.errors.DatasetError` naming both folders."""
    from runner.errors import DatasetError
    from runner.pipeline.dataset import is_dataset_file

    data = exp.data
    if not isinstance(data, (str, Path)) or not is_dataset_file(data) or Path(data).is_absolute():
        return data
    folder = config.resolve().parent
    beside = folder / data
    if beside.exists():
        return beside
    here = Path.cwd() / data
    if here.exists():
        print(
            f"note: {exp.name!r}: data={str(data)!r} is not in {folder} but in the current folder {Path.cwd()}; "
            "relative data= paths are resolved from the config file's folder, so write it relative to that",
            file=sys.stderr,
        )
        return data
    raise DatasetError(
        f"{exp.name!r}: dataset file {str(data)!r} not found: looked in {folder} (relative data= paths are "
        f"resolved from the config file's folder under the CLI) and in the current folder {Path.cwd()}"
    )


# -- gates and baselines ---------------------------------------------------------------------------
