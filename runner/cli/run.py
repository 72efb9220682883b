"""``python -m runner CONFIG.py``: load a config file, pick its experiments, run them, report.

Precedence of every setting: what the file sets in code (an ``Experiment`` field) > the CLI flag
> the environment > the default. So a flag fills in only what the file left open, and says so
on stderr when the file's value wins. ``--resume`` and ``--keep-errors`` are options of one run,
not fields of an experiment, so they always apply.

With ``--baseline RUN`` each experiment's result is compared with the stored run RUN once it
finishes (:mod:`runner.cli.compare`); the gates (``--fail-under``, ``--max-regression``,
``--max-error-rate``; :mod:`runner.results.gates`) are checked once every experiment has run, and each
failed gate prints one line ``gate failed: ...`` and makes the exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError, RunnerError
from runner.pipeline.checks import check_gate_names, declared_scores

if TYPE_CHECKING:
    from runner.cli.compare import Baseline
    from runner.experiment import Experiment
    from runner.results.compare import Comparison
    from runner.results.gates import Gates
    from runner.results.result import Result
    from runner.settings import Settings

__all__ = ["OUTPUT_SUFFIXES", "collect_experiments", "finite", "load_config", "run_command"]

#: What ``--output`` can write, by suffix.
OUTPUT_SUFFIXES = (".csv", ".jsonl", ".json")


# -- loading the file -----------------------------------------------------------------------------
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
def gates_from(args: argparse.Namespace) -> Gates:
    """The gates the flags ask for; ``ConfigError`` for flags that cannot work together."""
    from runner.results.gates import Gates

    if args.max_regression and args.baseline is None:
        raise ConfigError("--max-regression compares with a baseline run: give --baseline RUN")
    if args.markdown and args.baseline is None:
        raise ConfigError("--markdown formats the comparison with a baseline run: give --baseline RUN")
    return Gates(
        fail_under=_once("--fail-under", args.fail_under),
        strict=args.strict,
        max_regression=_once("--max-regression", args.max_regression),
        max_error_rate=args.max_error_rate,
    )


def _once(flag: str, pairs: Sequence[tuple[str, float]] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in pairs or []:
        if name in out:
            raise ConfigError(
                f"{flag} {name} is given twice ({out[name]:g} and {value:g}); give one threshold per score"
            )
        out[name] = value
    return out


def check_gates(
    gates: Gates,
    runs: Sequence[tuple[Experiment, Result, Comparison | None]],
) -> list[str]:
    """Every failed gate of every run. With several experiments a gate applies to those that
    have the score; a name none of them has is a :class:`ConfigError`."""
    several = len(runs) > 1
    if several:
        unknown = set.intersection(*(set(gates.unknown(r, declared_scores(e))) for e, r, _ in runs))
        if unknown:
            name = sorted(unknown)[0]
            raise ConfigError(f"gate on unknown score {name!r}: none of the experiments that ran has it")
    failed: list[str] = []
    for exp, result, comparison in runs:
        failed += gates.check(result, comparison, known=declared_scores(exp), skip_missing=several)
    return failed


# -- running --------------------------------------------------------------------------------------
def _resume_options(args: argparse.Namespace, names: Sequence[str | None]) -> dict[str, Any]:
    if args.keep_errors and not args.resume:
        raise ConfigError("--keep-errors keeps the errored rows of a resumed run: use it with --resume")
    if args.resume and any(n is None for n in names):
        raise ConfigError("--resume continues a stored run: name it with --run-name NAME (or --run-prefix P)")
    return {"resume": True, "keep_errors": args.keep_errors} if args.resume else {}


def _baselines(ref: str | None, experiments: Sequence[Experiment], settings: Settings) -> list[Baseline | None]:
    """The baseline run of each experiment, found before anything runs (a typo fails fast)."""
    if ref is None:
        return [None] * len(experiments)
    from runner.cli.compare import Baseline

    return [Baseline.find(ref, e, settings) for e in experiments]


def run_command(args: argparse.Namespace) -> int:
    """Run the experiments of ``args.config``; 0 when all completed (and passed their gates), else 1."""
    from runner.settings import Settings

    path = Path(args.config)
    output = Path(args.output) if args.output else None
    if output is not None and output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--output {output}: unknown suffix {output.suffix!r}; use .csv, .jsonl or .json")
    gates = gates_from(args)
    if args.db is not None and args.base_url is None:
        # --db asks for the embedded store: a flag beats PAREA_BASE_URL from the environment
        os.environ.pop("PAREA_BASE_URL", None)
    settings = Settings.from_env()  # bad RUNNER_* values fail here, before anything runs
    module = load_config(path)
    experiments = select(collect_experiments(module, path), args.only, path)
    names = run_names(experiments, args)
    options = _resume_options(args, names)
    from runner.cli.shards import shard_options

    options.update(shard_options(args, names))
    prepared = [with_flags(e, args, path) for e in experiments]
    check_gate_names(gates, prepared)
    baselines = _baselines(args.baseline, prepared, settings)
    # a progress bar only on a terminal: in CI logs and pipes it is noise
    quiet = args.quiet or settings.quiet or not sys.stderr.isatty()
    human = sys.stderr if args.json else sys.stdout

    results: list[Result] = []
    comparisons: list[Comparison | None] = []
    failed_gates: list[str] | None = None
    stopped = False
    try:
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            for exp, run_name, baseline in zip(prepared, names, baselines, strict=True):
                try:
                    result = exp.run(run_name, limit=args.limit, quiet=quiet, **options)
                except KeyboardInterrupt:
                    print(f"interrupted before {exp.name!r} had started any rows", file=sys.stderr)
                    stopped = True
                    break
                results.append(result)
                comparisons.append(None)
                if quiet:  # run() printed nothing: the summary is still the point
                    print(result.summary_text(), file=sys.stderr if result.interrupted else sys.stdout, flush=True)
                if result.interrupted:
                    stopped = True
                    _say_interrupted(result, len(prepared) - len(results), resume_command(args, result, len(prepared)))
                    break
                if baseline is not None:
                    comparisons[-1] = comparison = baseline.compare(result, top=args.top)
                    for w in comparison.warnings:
                        print(f"warning: {w}", file=sys.stderr)
                    print(file=human)
                    print(comparison.to_markdown() if args.markdown else comparison.to_text(), file=human, flush=True)
        if gates and not stopped:
            failed_gates = check_gates(gates, list(zip(prepared, results, comparisons, strict=False)))
        if not stopped and any(len(r.gates) for r in results):  # gates set on the Experiment itself
            failed_gates = [*(failed_gates or []), *(o.detail for r in results for o in r.gates.failed)]
    finally:
        if getattr(args, "junit_xml", None) and results:
            from runner.results.junit import reports_for, write_junit

            runs = [(r, c, declared_scores(e)) for e, r, c in zip(prepared, results, comparisons, strict=False)]
            write_junit(args.junit_xml, list(zip(results, reports_for(gates, runs), strict=True)))
            print(f"wrote JUnit XML for {len(results)} experiment(s) to {args.junit_xml}", file=sys.stderr)
        if output is not None and results:
            write_output(output, results)
            print(f"wrote {sum(r.n_total for r in results)} rows to {output}", file=sys.stderr)
        if args.json:
            summary = _json_summary(results, comparisons, stopped, failed_gates)
            print(json.dumps(summary, indent=2, default=str))
    if args.finish_when_complete and not stopped and len(results) == len(prepared):
        from runner.cli.shards import finish_when_complete

        finish_when_complete(prepared, names, quiet)
    if len(prepared) > 1 and not args.json and not stopped:
        states = ", ".join(f"{r.name} {r.status}" for r in results)
        print(f"{len(results)} experiments: {states}")
    for line in failed_gates or []:
        print(line, file=sys.stderr)
    if failed_gates == []:
        checked = _gate_count(gates) + sum(len(r.gates) for r in results)
        print(f"gates passed ({checked} checked)", file=sys.stderr)
    ok = not stopped and len(results) == len(prepared) and all(r.status == "completed" for r in results)
    return 0 if ok and not failed_gates else 1


def _gate_count(gates: Gates) -> int:
    return len(gates.fail_under) + len(gates.max_regression) + (gates.max_error_rate is not None)


def _say_interrupted(result: Result, not_started: int, command: str) -> None:
    finished = result.n_total
    rest = f"; {not_started} more experiment(s) not started" if not_started else ""
    print(
        f"interrupted: stored the {finished} finished row(s) of {result.name!r} (run {result.run_name}) "
        f"and marked the run failed{rest}",
        file=sys.stderr,
    )
    print(f"to continue it: {command}", file=sys.stderr)


def resume_command(args: argparse.Namespace, result: Result, n_experiments: int) -> str:
    """The command line that continues the interrupted run ``result`` where it stopped."""
    import shlex

    from runner.cli.main import PROG

    parts = [*PROG.split(), args.config]
    if n_experiments > 1 or args.only:
        parts += ["--only", result.name]
    parts += ["--resume", "--run-name", result.run_name]
    if args.keep_errors:
        parts.append("--keep-errors")
    for flag, value in (
        ("--limit", args.limit),
        ("--trials", args.trials),
        ("--n-workers", args.n_workers),
        ("--timeout", args.timeout),
        ("--retries", args.retries),
        ("--db", args.db),
        ("--base-url", args.base_url),
        ("--project", args.project),
    ):
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _json_summary(
    results: Sequence[Result],
    comparisons: Sequence[Comparison | None],
    stopped: bool,
    failed_gates: list[str] | None,
) -> dict[str, Any]:
    ok = not stopped and all(r.status == "completed" for r in results)
    experiments = []
    for result, comparison in zip(results, comparisons, strict=True):
        entry = result.to_dict()
        if comparison is not None:
            entry["comparison"] = comparison.to_dict()
        experiments.append(finite(entry))
    out: dict[str, Any] = {"status": "completed" if ok else "failed", "experiments": experiments}
    if failed_gates is not None:
        out["gates"] = {"passed": not failed_gates, "failed": failed_gates}
    return out


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None``, so that the JSON is valid everywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_output(path: Path, results: Sequence[Result]) -> None:
    """The per-row table of every run, one file, with ``experiment`` and ``run_name`` columns."""
    import pandas as pd

    frames = []
    for r in results:
        df = r.to_dataframe()
        df.insert(0, "run_name", r.run_name)
        df.insert(0, "experiment", r.name)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        from runner._json import dumps_value

        for column in table.columns:  # dicts, lists, bools as JSON, not as Python reprs
            if table[column].dtype == object:
                table[column] = [
                    v if v is None or isinstance(v, str) or _is_number(v) else dumps_value(v) for v in table[column]
                ]
        table.to_csv(path, index=False)
    elif suffix == ".jsonl":
        table.to_json(path, orient="records", lines=True, force_ascii=False, date_format="iso")
    else:
        table.to_json(path, orient="records", indent=2, force_ascii=False, date_format="iso")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
