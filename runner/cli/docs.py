"""``docs/cli.md``: every command's ``--help``, as printed in a terminal 88 columns wide.

``python -m runner.cli.docs --write-docs`` writes it; ``--check-docs`` exits with 1 when it is out
of date (a test checks the same).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from runner.cli.main import PROG, build_parser

__all__ = ["DOCS_PATH", "DOCS_WIDTH", "docs_main", "render_docs"]

#: help text width of docs/cli.md (and of the help in a terminal of DOCS_WIDTH + 2 columns)
DOCS_WIDTH = 88
DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


@contextlib.contextmanager
def _columns(width: int) -> Iterator[None]:
    """Help formatted for a terminal of ``width`` + 2 columns, as argparse does with $COLUMNS."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width + 2)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _help_texts() -> list[tuple[str, str]]:
    parser = build_parser()
    texts = [(PROG, parser.format_help())]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("run", "list", "show", "compare"):
        texts.append((f"{PROG} {name}", sub.choices[name].format_help()))
    ds = sub.choices["datasets"]
    texts.append((f"{PROG} datasets", ds.format_help()))
    ds_sub = next(a for a in ds._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("upload", "list"):
        texts.append((f"{PROG} datasets {name}", ds_sub.choices[name].format_help()))
    prompts = sub.choices["prompts"]
    texts.append((f"{PROG} prompts", prompts.format_help()))
    prompts_sub = next(a for a in prompts._actions if isinstance(a, argparse._SubParsersAction))
    for name in prompts_sub.choices:
        texts.append((f"{PROG} prompts {name}", prompts_sub.choices[name].format_help()))
    texts.append((f"{PROG} sync", sub.choices["sync"].format_help()))
    try:
        from runner.server.__main__ import build_parser as serve_parser
    except ImportError:
        pass
    else:
        texts.append((f"{PROG} serve", serve_parser(f"{PROG} serve").format_help()))
    from runner.cli.db import build_parser as db_parser

    db = db_parser(f"{PROG} db")
    texts.append((f"{PROG} db", db.format_help()))
    db_sub = next(a for a in db._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("upgrade", "status", "copy"):
        texts.append((f"{PROG} db {name}", db_sub.choices[name].format_help()))
    return [(title, text.replace("optional arguments:", "options:").rstrip() + "\n") for title, text in texts]


def render_docs(width: int = DOCS_WIDTH) -> str:
    """The text of docs/cli.md: every command's ``--help``, as printed in a terminal."""
    parts = [
        "# Command line\n",
        "<!-- Generated from the --help texts by `python -m runner.cli.docs --write-docs`; do not edit. -->\n",
        "`python -m runner CONFIG.py` runs the experiments a config file defines (`run` is the default",
        "command); `list`, `show`, `compare`, `datasets` and `serve` look at and share what is stored;",
        "`sync` delivers what a run spooled while its server was away.",
        "Every command prints one line `error: ...` and exits with 2 for a usage or config mistake; add",
        "`--debug` for the traceback.\n",
        "Every score is reported as `mean [95% CI] n=scored/total`. The intervals are not stored with",
        "the run (Parea's `pinned_stats` holds one number per stat): `show`, `list` and `compare`",
        "recompute them from the stored rows, deterministically, so they match what the run printed.\n",
        "In CI, `run --baseline RUN` compares each new run with a stored one, and the gates",
        "`--fail-under`, `--max-regression` and `--max-error-rate` turn the numbers into an exit code",
        "(1 and one line `gate failed: ...` per failed gate).\n",
    ]
    with _columns(width):
        texts = _help_texts()
    for title, text in texts:
        parts.append(f"## `{title}`\n\n```text\n{text}```\n")
    return "\n".join(parts)


def docs_main(argv: Sequence[str]) -> int:
    """``--write-docs [PATH]`` or ``--check-docs [PATH]``; returns the exit code."""
    path = Path(argv[1]) if len(argv) > 1 else DOCS_PATH
    if argv[:1] == ["--write-docs"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_docs(), encoding="utf-8")
        print(f"wrote {path}")
        return 0
    if argv[:1] == ["--check-docs"]:
        if path.exists() and path.read_text(encoding="utf-8") == render_docs():
            return 0
        print(f"{path} is out of date: run python -m runner.cli.docs --write-docs", file=sys.stderr)
        return 1
    print("usage: python -m runner.cli.docs --write-docs|--check-docs [PATH]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(docs_main(sys.argv[1:]))
