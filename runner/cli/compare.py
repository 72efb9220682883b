"""``python -m runner compare RUN_A RUN_B`` (the baseline of ``run --baseline RUN`` is
:class:`runner.backends.baseline.Baseline`).

Both read the stored root rows of the runs (from the SQLite store, or ``POST
/experiment/{uuid}/trace_logs`` on a server) and compare them with
:func:`runner.results.compare.compare_rows`: B (the second run, or the new one) against A (the first,
or the baseline).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from runner._json import json_text
from runner.backends.baseline import label
from runner.errors import NotFoundError

if TYPE_CHECKING:
    from runner.results.compare import Comparison

__all__ = ["compare_command", "render"]


def render(comparison: Comparison, markdown: bool) -> str:
    return comparison.to_markdown() if markdown else comparison.to_text()


# -- compare ----------------------------------------------------------------------------------------
def compare_command(args: argparse.Namespace) -> int:
    from runner.backends.readers import find_run
    from runner.cli.show import open_source
    from runner.results.compare import compare_rows

    source = open_source(args)
    if source is None:
        raise NotFoundError(f"no run called {args.run_a!r}: there is no store yet (looked for {_db_hint(args)})")
    try:
        exp_a = find_run(source, args.run_a, args.project)
        exp_b = find_run(source, args.run_b, args.project)
        rows_a = source.rows(exp_a["uuid"])
        rows_b = source.rows(exp_b["uuid"])
    finally:
        source.close()
    if exp_a["uuid"] == exp_b["uuid"]:
        print(f"warning: {args.run_a} and {args.run_b} are the same run", file=sys.stderr)
    la, lb = label(exp_a, exp_b), label(exp_b, exp_a)
    if la == lb:  # the same run name in two projects
        la, lb = f"{la} {exp_a['uuid'][:8]}", f"{lb} {exp_b['uuid'][:8]}"
    comparison = compare_rows(rows_a, rows_b, label_a=la, label_b=lb, top=args.top)
    for w in comparison.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:

        data = {
            **comparison.to_dict(),
            "run_a": {k: exp_a.get(k) for k in ("uuid", "name", "run_name", "project_name")},
            "run_b": {k: exp_b.get(k) for k in ("uuid", "name", "run_name", "project_name")},
        }
        print(json_text(data, indent=2))
    else:
        print(render(comparison, args.markdown))
    return 0


def _db_hint(args: argparse.Namespace) -> str:
    from runner.backends.target import resolve_target

    return resolve_target(base_url=args.base_url, api_key=args.api_key, db=args.db).location
