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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner._json import finite, json_text
from runner.cli.config import collect_experiments, load_config, run_names, select, with_flags
from runner.errors import ConfigError
from runner.pipeline.checks import check_gate_names, declared_scores

if TYPE_CHECKING:
    from runner.backends.baseline import Baseline
    from runner.experiment import Experiment
    from runner.results.compare import Comparison
    from runner.results.gates import Gates
    from runner.results.result import Result
    from runner.settings import Settings

__all__ = ["OUTPUT_SUFFIXES", "run_command"]

#: What ``--output`` can write, by suffix.
OUTPUT_SUFFIXES = (".csv", ".jsonl", ".json")


# -- loading the file -----------------------------------------------------------------------------
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
    from runner.backends.baseline import Baseline

    return [Baseline.find(ref, e.target(settings), e.project_name or settings.project_name) for e in experiments]


def run_command(args: argparse.Namespace) -> int:
    """Run the experiments of ``args.config``; 0 when all completed (and passed their gates), else 1."""
    from runner.settings import Settings

    path = Path(args.config)
    output = Path(args.output) if args.output else None
    if output is not None and output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--output {output}: unknown suffix {output.suffix!r}; use .csv, .jsonl or .json")
    gates = gates_from(args)
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
            print(json_text(summary, indent=2))
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
