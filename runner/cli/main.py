"""The command line: ``python -m runner CONFIG.py`` and its subcommands.

``run`` is the default command, so ``python -m runner experiments/x.py`` needs no ``run`` word.
Every :class:`~runner.errors.RunnerError` becomes one line ``error: ...`` on stderr and its exit
code here, in :func:`main`, and nowhere else; ``--debug`` adds the traceback.

Exit codes: 0 every experiment completed (and every gate passed); 1 one failed, was interrupted or
failed a gate; 2 usage or config error (unknown flag, missing file, no experiments, bad setting,
bad gate).

Importing this module is cheap: the commands import what they need (pandas, the store, the
server) when they run, so ``--help`` and ``--version`` stay fast.

``docs/cli.md`` is generated from the help texts by :mod:`runner.cli.docs`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from runner.errors import RunnerError

__all__ = ["build_parser", "main"]

PROG = "python -m runner"
COMMANDS = ("run", "finish", "list", "show", "compare", "datasets", "prompts", "sync", "serve", "db")
_TOP_HELP = "how many rows that regressed and improved most to list (default: 5)"

TOP_EPILOG = f"""\
The default command is `run`: `{PROG} CONFIG.py` runs the experiments that
CONFIG.py defines (the list `experiments` if it has one, else every module-level
Experiment, in file order).

examples:
  {PROG} experiments/sentiment.py            run every experiment in the file
  {PROG} experiments/sentiment.py --limit 5  a quick check on the first 5 rows
  {PROG} experiments/faq_qa.py --json        the summary as JSON, for CI
  {PROG} list                                the runs stored so far
  {PROG} show brisk-otter-4f2a               one run's summary and worst rows
  {PROG} compare main-7 pr-12 --markdown     run pr-12 against run main-7
  {PROG} datasets upload datasets/reviews.csv --name reviews
  {PROG} prompts push greeter.yaml --name greeter   a new version of a prompt
  {PROG} serve                               the results over the Parea API
  {PROG} sync                                deliver logs spooled while the server was away
  {PROG} db copy --from .runner/runner.db --to postgresql://...   into a team database

exit codes: 0 all experiments completed (and all gates passed); 1 one failed, was
interrupted or failed a gate; 2 usage or config error (unknown flag, missing file, no
experiments, bad setting, bad gate).

settings: RUNNER_DB, RUNNER_N_WORKERS, RUNNER_PROJECT, RUNNER_QUIET, PAREA_BASE_URL,
PAREA_API_KEY. What the config file sets in code > flag > environment > default.
"""

RUN_EPILOG = f"""\
examples:
  {PROG} experiments/sentiment.py
  {PROG} experiments/sentiment.py --only sentiment-negation --limit 10
  {PROG} experiments/handbook_rag.py --n-workers 4 --trials 3 --run-prefix ci
  {PROG} experiments/faq_qa.py --output results.csv --quiet
  {PROG} experiments/faq_qa.py --json > summary.json

A flag fills in only what the file leaves unset: Experiment(n_workers=2) in the file
beats --n-workers 8 (a note on stderr says so).

comparing and gating (for CI):
  {PROG} experiments/faq_qa.py --baseline main-7 --markdown
  {PROG} experiments/faq_qa.py --fail-under exact_match=0.7 --max-error-rate 0.02
  {PROG} experiments/faq_qa.py --baseline main-7 --max-regression exact_match=0.05

--baseline RUN prints, after each experiment, its comparison with the stored run RUN
(same as `compare RUN NEW`). A failed gate prints one line `gate failed: ...` on stderr
and makes the exit code 1; a gate on a score no scorer gives exits with 2 before any
row runs (a scorer of your own that may name its scores otherwise gets a note, and
the name is checked after the run).
--fail-under checks the mean (with --strict: the 95% CI lower bound must clear the bar,
so the run is confidently above it); --max-regression fails when the score dropped by
more than DELTA against the baseline with p < 0.05 (Holm-adjusted across the gated
scores; rows that lost their score in the candidate count as its worst value);
--max-error-rate counts errored rows and, per score, rows its scorer failed on.

Every summary shows each score as `mean [95% CI] n=scored/total`; `show RUN` recomputes
the same numbers from the stored rows.

A relative data= path in CONFIG.py is read from CONFIG.py's folder.

Ctrl-C stops starting new rows and lets running ones finish; a second Ctrl-C stops at
once. What finished is stored, the run is marked failed, the exit code is 1, and the
command that continues the run (--resume --run-name NAME) is printed.
"""


class _Parser(argparse.ArgumentParser):
    """One-line usage errors (exit 2) that point at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a fraction between 0 and 1, e.g. 0.05")
    return value


def _assignment(flag: str) -> Callable[[str], tuple[str, float]]:
    def parse(text: str) -> tuple[str, float]:
        from runner.results.gates import parse_assignment

        try:
            return parse_assignment(text, flag)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag} ")) from None

    return parse


def _add_store_options(p: argparse.ArgumentParser, what: str = "results", project: bool = True) -> None:
    """--db, --base-url, --api-key (and --project): every command that reads or writes results."""
    g = p.add_argument_group(f"where {what} are stored")
    g.add_argument("--db", metavar="PATH", help="SQLite store (default: $RUNNER_DB, else .runner/runner.db)")
    g.add_argument(
        "--base-url",
        metavar="URL",
        help="a Parea-compatible server's API root, e.g. http://localhost:8765/api/parea/v1 (default: $PAREA_BASE_URL)",
    )
    g.add_argument("--api-key", metavar="KEY", help="API key sent as x-api-key (default: $PAREA_API_KEY)")
    if project:
        g.add_argument("--project", metavar="NAME", help="project name (default: $RUNNER_PROJECT, else 'default')")


def _add_common(p: argparse._ActionsContainer, json_help: str) -> None:
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command but ``serve`` (which has its own, in runner.server)."""
    from runner import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        formatter_class=fmt,
        epilog=TOP_EPILOG,
        usage=f"{PROG} CONFIG.py [options]\n       {PROG} {{run,list,show,compare,datasets,prompts,sync,serve,db}} ...",
        description="Run LLM experiments and look at their results. Results go to a local SQLite\n"
        "store (.runner/runner.db) unless a Parea-compatible server is given.",
    )
    parser.add_argument("--version", action="version", version=f"runner {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser(
        "run",
        prog=f"{PROG} run",
        help="run the experiments a config file defines (the default command)",
        formatter_class=fmt,
        epilog=RUN_EPILOG,
        description="Run the experiments that CONFIG.py defines and print their summaries.",
    )
    run.add_argument("config", metavar="CONFIG.py", help="a Python file that defines Experiment(...) objects")
    g = run.add_argument_group("what to run")
    g.add_argument("--only", metavar="NAME", action="append", help="run only the experiment called NAME (repeatable)")
    g.add_argument("--limit", metavar="N", type=_positive_int, help="only the first N rows, for a quick check")
    g.add_argument("--trials", metavar="N", type=_positive_int, help="run each row N times (default: 1)")
    g.add_argument(
        "--n-workers", metavar="N", type=_positive_int, help="rows run at once (default: $RUNNER_N_WORKERS, else 10)"
    )
    names = g.add_mutually_exclusive_group()
    names.add_argument("--run-name", metavar="NAME", help="name of the run (default: generated, e.g. brisk-otter-4f2a)")
    names.add_argument("--run-prefix", metavar="P", help="name each run P-EXPERIMENT (for several experiments)")
    r = run.add_argument_group("reliability")
    r.add_argument(
        "--timeout", metavar="SECONDS", type=_positive_float, help="a row running longer is stored as an error"
    )
    r.add_argument(
        "--retries",
        metavar="N",
        type=_non_negative_int,
        help="re-run a row that raised or timed out N times (default: 0)",
    )
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue the run named by --run-name (or --run-prefix): rows stored as successful are not run again",
    )
    r.add_argument(
        "--keep-errors", action="store_true", help="with --resume: keep errored rows instead of re-running them"
    )
    x = run.add_argument_group("where rows run")
    x.add_argument(
        "--executor",
        metavar="WHERE",
        help="'dask' (worker processes on this machine) or dask://HOST:8786 (a Dask cluster); default: this process",
    )
    x.add_argument(
        "--shard",
        metavar="I/N",
        help="run only the rows of shard I of N (from 0; auto/N reads $JOB_COMPLETION_INDEX or "
        "$SLURM_ARRAY_TASK_ID) into the run named by --run-name; `finish` ends the run",
    )
    x.add_argument(
        "--finish-when-complete",
        action="store_true",
        help="with --shard: finish the run when this shard finds every row of the dataset stored",
    )
    _add_store_options(run)
    c = run.add_argument_group("comparing and gating")
    c.add_argument(
        "--baseline",
        metavar="RUN",
        help="after each experiment, compare it with the stored run RUN (run name, or experiment name: its newest run)",
    )
    c.add_argument(
        "--fail-under",
        metavar="NAME=VALUE",
        type=_assignment("--fail-under"),
        action="append",
        help="fail (exit 1) when score NAME's mean is below VALUE (repeatable)",
    )
    c.add_argument("--strict", action="store_true", help="--fail-under checks the 95%% CI lower bound, not the mean")
    c.add_argument(
        "--max-regression",
        metavar="NAME=DELTA",
        type=_assignment("--max-regression"),
        action="append",
        help="fail when NAME dropped by more than DELTA vs --baseline with p < 0.05 (repeatable)",
    )
    c.add_argument(
        "--max-error-rate",
        metavar="RATE",
        type=_fraction,
        help="fail when more than RATE (0-1) of the row-trials errored",
    )
    o = run.add_argument_group("output")
    o.add_argument("--output", metavar="PATH", help="write the per-row results table to PATH (.csv, .jsonl or .json)")
    o.add_argument(
        "--quiet", action="store_true", help="no progress bar (shown only on a terminal anyway; default: $RUNNER_QUIET)"
    )
    o.add_argument("--markdown", action="store_true", help="print the comparison with --baseline as Markdown")
    o.add_argument(
        "--junit-xml",
        metavar="FILE",
        help="write each experiment and each gate as a JUnit test case to FILE (for CI test reports)",
    )
    o.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="also export each run's spans, scores as events, to this OTLP/HTTP traces URL "
        "(default: $RUNNER_OTLP_ENDPOINT)",
    )
    o.add_argument("--top", metavar="N", type=_non_negative_int, default=5, help=_TOP_HELP)
    _add_common(o, "print the summary (and comparisons) as JSON on stdout (human output goes to stderr)")
    run.set_defaults(handler=_lazy("runner.cli.run", "run_command"))

    ls = sub.add_parser(
        "list",
        prog=f"{PROG} list",
        help="list the stored runs, newest first",
        formatter_class=fmt,
        description="List stored runs, newest first: experiment, run, status, rows, errors, scores, date.",
        epilog=f"examples:\n  {PROG} list\n  {PROG} list --name sentiment --last 5\n  {PROG} list --json",
    )
    ls.add_argument("--name", metavar="TEXT", help="only experiments whose name contains TEXT")
    ls.add_argument("--last", metavar="N", type=_positive_int, default=20, help="show the newest N runs (default: 20)")
    _add_store_options(ls)
    _add_common(ls, "print the runs as JSON")
    ls.set_defaults(handler=_lazy("runner.cli.show", "list_command"))

    show = sub.add_parser(
        "show",
        prog=f"{PROG} show",
        help="show one run's summary and its worst rows",
        formatter_class=fmt,
        description="Show one run: its summary (as printed when it finished) and its worst rows.",
        epilog=f"examples:\n  {PROG} show brisk-otter-4f2a\n  {PROG} show 3f1c... --rows 10\n  {PROG} show RUN --json",
    )
    show.add_argument(
        "ref",
        metavar="RUN",
        help="run name or experiment uuid, or an experiment's name for its newest run (NAME~1: the one before)",
    )
    show.add_argument("--rows", metavar="N", type=int, default=5, help="how many worst rows to show (default: 5)")
    _add_store_options(show)
    _add_common(show, "print the summary and worst rows as JSON")
    show.set_defaults(handler=_lazy("runner.cli.show", "show_command"))

    cmp = sub.add_parser(
        "compare",
        prog=f"{PROG} compare",
        help="compare two stored runs score by score",
        formatter_class=fmt,
        description=(
            "Compare run B with run A on the rows both ran: for each score, both means, the\n"
            "difference with its 95% CI, a paired p-value (McNemar's exact test for 0/1 scores,\n"
            "a paired permutation test otherwise; Holm-adjusted across scores) and win/tie/loss\n"
            "counts; then the rows that regressed and improved most, and the change in latency,\n"
            "tokens and cost. Rows in one run only are counted, and a warning says when few\n"
            "rows are shared (runs of different datasets)."
        ),
        epilog=(
            f"examples:\n  {PROG} compare main-7 pr-12\n  {PROG} compare main-7 pr-12 --markdown > comment.md\n"
            f"  {PROG} compare 3f1c... 9a0b... --json --top 10\n\n"
            "The exit code is 0 whatever the difference; gate on it with `run --baseline RUN\n"
            "--max-regression NAME=DELTA`."
        ),
    )
    cmp.add_argument("run_a", metavar="RUN_A", help="the baseline: run name, experiment uuid, or NAME~N (see show)")
    cmp.add_argument("run_b", metavar="RUN_B", help="the run compared with it: run name, experiment uuid, or NAME~N")
    cmp.add_argument("--top", metavar="N", type=_non_negative_int, default=5, help=_TOP_HELP)
    _add_store_options(cmp)
    co = cmp.add_argument_group("output")
    fmts = co.add_mutually_exclusive_group()
    fmts.add_argument(
        "--markdown", action="store_true", help="print a Markdown report, e.g. for a pull-request comment"
    )
    fmts.add_argument("--json", action="store_true", help="print the comparison as JSON")
    co.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    cmp.set_defaults(handler=_lazy("runner.cli.compare", "compare_command"))

    fin = sub.add_parser(
        "finish",
        prog=f"{PROG} finish",
        help="finish a run that shards filled: check every row is stored, compute the stats, /finished",
        formatter_class=fmt,
        description="Finish the run that `--shard I/N` processes filled: check that every row of the dataset "
        "is stored (naming the missing ones otherwise), compute the dataset-level stats from all stored rows "
        "and mark the run finished.",
        epilog=f"examples:\n  {PROG} CONFIG.py --run-name nightly-42 --shard 3/8   (one per shard)\n"
        f"  {PROG} finish CONFIG.py --run-name nightly-42",
    )
    fin.add_argument("config", metavar="CONFIG.py", help="the file the shards ran")
    fin.add_argument("--only", metavar="NAME", action="append", help="finish only the experiment called NAME")
    fin_names = fin.add_mutually_exclusive_group(required=True)
    fin_names.add_argument("--run-name", metavar="NAME", help="the run the shards filled")
    fin_names.add_argument("--run-prefix", metavar="P", help="the runs P-EXPERIMENT the shards filled")
    fin.add_argument("--limit", metavar="N", type=_positive_int, help="the --limit the shards were given")
    fin.add_argument("--trials", metavar="N", type=_positive_int, help="the --trials the shards were given")
    _add_store_options(fin)
    _add_common(fin, "print the summaries as JSON")
    fin.set_defaults(handler=_lazy("runner.cli.shards", "finish_command"))

    ds = sub.add_parser(
        "datasets",
        prog=f"{PROG} datasets",
        help="upload and list stored datasets",
        formatter_class=fmt,
        description="Store datasets by name, to use as Experiment(data=NAME).",
        epilog=f"examples:\n  {PROG} datasets upload datasets/reviews.csv --name reviews\n  {PROG} datasets list",
    )
    ds_sub = ds.add_subparsers(
        dest="datasets_command", title="commands", metavar="COMMAND", required=True, parser_class=_Parser
    )
    up = ds_sub.add_parser(
        "upload",
        prog=f"{PROG} datasets upload",
        help="store a .csv/.jsonl/.json file as a named dataset",
        formatter_class=fmt,
        description="Store the rows of FILE as a dataset; its `target` column is each row's target.",
    )
    up.add_argument("file", metavar="FILE", help="a .csv, .jsonl or .json file")
    up.add_argument("--name", metavar="NAME", help="the dataset's name (default: the file name without suffix)")
    _add_store_options(up, "datasets", project=False)
    _add_common(up, "print what was stored as JSON")
    up.set_defaults(handler=_lazy("runner.cli.show", "datasets_upload_command"))
    dl = ds_sub.add_parser(
        "list",
        prog=f"{PROG} datasets list",
        help="list stored datasets",
        formatter_class=fmt,
        description="List stored datasets.",
    )
    _add_store_options(dl, "datasets", project=False)
    _add_common(dl, "print the datasets as JSON")
    dl.set_defaults(handler=_lazy("runner.cli.show", "datasets_list_command"))

    from runner.cli.prompts import add_prompts_parser

    add_prompts_parser(
        sub, prog=PROG, parser_class=_Parser, store_options=_add_store_options, common=_add_common, lazy=_lazy
    )

    sy = sub.add_parser(
        "sync",
        prog=f"{PROG} sync",
        help="deliver the logs that runs spooled while the server was away",
        formatter_class=fmt,
        description=(
            "Deliver what runs left in the spool: when a server stops answering during a run, the\n"
            "logs it cannot take (and the final finish call) are kept in spool/ next to the store\n"
            "(.runner/spool/ by default) and the run's summary says so. sync posts them, in order,\n"
            "then finishes the experiment, and removes each spool file only once all of it got\n"
            "through. Running it twice, or after a partial delivery, stores nothing twice."
        ),
        epilog=(
            f"examples:\n  {PROG} sync\n  {PROG} sync --base-url http://localhost:8765/api/parea/v1\n\n"
            "The server is --base-url, else the one the run logged to (recorded in the spool), else\n"
            "$PAREA_BASE_URL. Exit code 0 when nothing is left in the spool, else 1."
        ),
    )
    _add_store_options(sy, project=False)
    _add_common(sy, "print what was delivered as JSON")
    sy.set_defaults(handler=_lazy("runner.cli.sync", "sync_command"))

    sub.add_parser(
        "serve",
        prog=f"{PROG} serve",
        help="serve the stored results over the Parea API (see `serve --help`)",
        add_help=False,
    )
    sub.add_parser(
        "db",
        prog=f"{PROG} db",
        help="the store's schema (upgrade, status) and copying between stores (see `db --help`)",
        add_help=False,
    )
    return parser


# -- handlers: imported when used ---------------------------------------------------------------
def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A command handler that imports ``module`` only when the command runs."""

    def handler(args: argparse.Namespace) -> int:
        command: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
        return command(args)

    return handler


def _serve(argv: list[str]) -> int:
    try:
        from runner.server.__main__ import serve_main
    except ImportError as exc:
        print(f"error: the server is not available ({exc})", file=sys.stderr)
        return 2
    return serve_main(argv)


def with_default_command(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``run`` inserted when it names no command (``--debug`` may come first)."""
    args = list(argv)
    lead = 0
    while lead < len(args) and args[lead] == "--debug":
        lead += 1
    rest = args[lead:]
    if not rest:
        return args
    if rest[0] in COMMANDS:
        return [rest[0], *args[:lead], *rest[1:]]
    if rest[0] in ("-h", "--help", "--version"):
        return rest
    return ["run", *args[:lead], *rest]


def _misspelt_command(args: Sequence[str]) -> str | None:
    """The message for ``run WORD`` where WORD looks like a misspelt command, not a config file:
    no such file, no ``.py`` suffix, and close to a command's name (``lst`` -> ``list``)."""
    import difflib
    from pathlib import Path

    if args[:1] != ["run"]:
        return None
    word = next((a for a in args[1:] if a != "--debug"), None)
    if word is None or word.startswith("-") or word.endswith(".py") or Path(word).exists():
        return None
    close = difflib.get_close_matches(word, COMMANDS, n=1, cutoff=0.6)
    if not close:
        return None
    return (
        f"unknown command {word!r}: did you mean `{PROG} {close[0]}`? "
        f"(to run a config file, give its path, e.g. {word}.py; `{PROG} --help` lists the commands)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args_list = with_default_command(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["serve"]:
        return _serve([a for a in args_list[1:] if a != "--debug"])
    if args_list[:1] == ["db"]:
        from runner.cli.db import db_main

        return db_main([a for a in args_list[1:] if a != "--debug"])
    parser = build_parser()
    if not args_list:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: give a config file to run, or a command (see `{PROG} --help`)", file=sys.stderr)
        return 2
    typo = _misspelt_command(args_list)
    if typo is not None:
        print(f"{PROG}: error: {typo}", file=sys.stderr)
        return 2
    args = parser.parse_args(args_list)
    debug = bool(getattr(args, "debug", False))
    try:
        code: int = args.handler(args)
    except RunnerError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("interrupted", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `... | head`: the reader left; no traceback for that
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
