"""``python -m runner compare RUN_A RUN_B``, and the baseline a ``run --baseline RUN`` compares with.

Both read the stored root rows of the runs (from the SQLite store, or ``POST
/experiment/{uuid}/trace_logs`` on a server) and compare them with
:func:`runner.results.compare.compare_rows`: B (the second run, or the new one) against A (the first,
or the baseline).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from runner.cli.show import Source
    from runner.experiment import Experiment
    from runner.results.compare import Comparison
    from runner.results.result import Result
    from runner.settings import Settings

__all__ = ["Baseline", "compare_command", "render"]


def render(comparison: Comparison, markdown: bool) -> str:
    return comparison.to_markdown() if markdown else comparison.to_text()


def label(exp: dict[str, Any], other: dict[str, Any]) -> str:
    """How a run is named in a comparison: its run name, with its experiment's name when the
    other run is of another experiment and the run name does not say it already."""
    name = str(exp.get("run_name") or exp["uuid"])
    if exp.get("name") != other.get("name") and str(exp.get("name")) not in name:
        name += f" ({exp.get('name')})"
    return name


# -- compare ----------------------------------------------------------------------------------------
def compare_command(args: argparse.Namespace) -> int:
    from runner.cli.show import find_run, open_source
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
        from runner.cli.run import finite

        data = {
            **comparison.to_dict(),
            "run_a": {k: exp_a.get(k) for k in ("uuid", "name", "run_name", "project_name")},
            "run_b": {k: exp_b.get(k) for k in ("uuid", "name", "run_name", "project_name")},
        }
        print(json.dumps(finite(data), indent=2, default=str))
    else:
        print(render(comparison, args.markdown))
    return 0


def _db_hint(args: argparse.Namespace) -> str:
    from runner.settings import Settings

    return str(Path(args.db) if args.db else Settings.from_env().db_path)


# -- run --baseline -----------------------------------------------------------------------------------
@dataclass
class Baseline:
    """The stored run a new run is compared with; its rows are read once, when first needed.

    The store (or server) is opened to find the run, closed while the experiments run, and
    opened again to read the rows.
    """

    ref: str
    experiment: dict[str, Any]
    location: str
    _open: Callable[[], Source]
    _rows: list[dict[str, Any]] | None = None

    @classmethod
    def find(cls, ref: str, exp: Experiment, settings: Settings) -> Baseline:
        """The run ``ref`` (run name or uuid) in the store ``exp`` writes to; ``ConfigError`` if absent.

        A run of that name in the experiment's project is preferred; otherwise the newest of
        that name in any project.
        """
        from runner.cli.show import HttpSource, StoreSource, find_run

        base_url = exp.base_url or settings.base_url
        api_key = exp.api_key or settings.api_key
        path = Path(exp.db or settings.db_path)
        from runner.store.postgres import is_postgres_url

        if not base_url and not path.exists() and not is_postgres_url(path):
            raise ConfigError(f"--baseline {ref}: there is no store at {path} yet, so no run to compare with")

        def open_source() -> Source:
            return HttpSource(base_url, api_key) if base_url else StoreSource(path)

        source = open_source()
        try:
            try:
                found = find_run(source, ref, exp.project_name or settings.project_name)
            except NotFoundError:
                found = find_run(source, ref, None)
        except NotFoundError:
            raise ConfigError(
                f"--baseline {ref}: no run or experiment called {ref!r} in {source.location}; "
                "`python -m runner list` shows them"
            ) from None
        finally:
            source.close()
        return cls(ref, found, source.location, open_source)

    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            source = self._open()
            try:
                self._rows = source.rows(self.experiment["uuid"])
            finally:
                source.close()
        return self._rows

    def compare(self, result: Result, top: int = 5) -> Comparison:
        """``result`` (B) against this baseline (A)."""
        from runner.results.compare import compare_rows

        new = {"uuid": result.experiment_uuid, "run_name": result.run_name, "name": result.name}
        return compare_rows(
            self.rows(),
            result.rows(),
            label_a=label(self.experiment, new),
            label_b=label(new, self.experiment),
            top=top,
        )
