"""Pinned stats that always describe what is stored: finished experiments whose rows change.

A trigger of the schema (migration of issue 13) marks a finished experiment ``stale`` whenever
one of its rows (or a span below one) is written, changed or deleted; every read of experiments
goes through :meth:`PinQueries._fresh`, which re-pins stale ones first. So a late upsert, a
second process or a resumed run never leaves the listing, ``/stats`` and the UI disagreeing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from runner.errors import NotFoundError

if TYPE_CHECKING:
    from runner.store.pages import RootColumns

__all__ = ["PinQueries"]


class PinQueries:
    """Mixin of :class:`runner.store.Store`: re-pinning the stats of finished experiments."""

    _lock: threading.RLock

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover - in Store
        raise NotImplementedError

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:  # pragma: no cover
        raise NotImplementedError

    def iter_experiment_stats(
        self, experiment_uuid: str, owner: str = "", page: int = 5000
    ) -> Iterator[dict[str, Any]]:  # pragma: no cover - in TraceQueries
        raise NotImplementedError

    if TYPE_CHECKING:  # in ColumnQueries and PageQueries

        def _pin_columns(self, experiment_uuid: str, owner: str, cols: RootColumns | None = None) -> None: ...

        def root_columns(self, experiment_uuid: str, owner: str = "") -> RootColumns: ...

    def _fresh(self, rows: list[sqlite3.Row]) -> list[sqlite3.Row]:
        """``rows`` of experiments, each stale one (a row logged, changed or deleted after it
        finished) re-pinned first and read again: every read shows stats of what is stored."""
        if not any(r["stale"] for r in rows):
            return rows
        out = []
        for r in rows:
            if r["stale"]:
                self._repin(r["uuid"], r["owner"])
                r = self._query(
                    "SELECT e.*, p.name AS project_name FROM experiments e JOIN projects p ON p.uuid=e.project_uuid"
                    " WHERE e.uuid=?",
                    (r["uuid"],),
                )[0]
            out.append(r)
        return out

    @staticmethod
    def _count_roots(c: Any, experiment_uuid: str, owner: str) -> int:
        """The run's root traces (row-trials), counted by the index."""
        row = c.execute(
            "SELECT count(*) FROM traces WHERE experiment_uuid=? AND is_root=1 AND owner=?", (experiment_uuid, owner)
        ).fetchone()
        return int(row[0])

    def _repin(
        self,
        experiment_uuid: str,
        owner: str,
        dataset_level_stats: list[dict[str, Any]] | None = None,
        status: str | None = None,
        collect: list[dict[str, Any]] | None = None,
        columns: bool = True,
    ) -> None:
        """Recompute the pinned stats and ``num_samples`` of a finished experiment from its stored
        rows, in one write transaction (a log written meanwhile waits, then marks it stale again).

        With ``columns``, its compact columns for the web UI too (:mod:`runner.store.columns`)."""
        from runner.store.common import dumps, loads, now_iso, pinned_stats

        with self.transaction() as c:
            row = c.execute(
                "SELECT dataset_level_stats, status FROM experiments WHERE uuid=? AND owner=?", (experiment_uuid, owner)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"experiment {experiment_uuid} not found")
            dls = (loads(row[0]) or []) if dataset_level_stats is None else dataset_level_stats
            # a run that gets a document (runner.store.columns): one read of it, for its stats and
            # its columns (issue 22: W5's finish); the list is emptied when the columns are handed
            # on, so that they are freed once summarised. Any other run: its stats streamed, root
            # by root, so a million-row run is never held in memory (issue 22's W5 peak RSS)
            from runner.store.columns import MAX_ROWS, MIN_ROWS

            cols: list[RootColumns] = []
            if collect is not None:  # the caller wants every root's stats (the server's finish)
                collect.extend(self.iter_experiment_stats(experiment_uuid, owner))
                pinned, n_roots = pinned_stats(collect)
            elif columns and MIN_ROWS <= self._count_roots(c, experiment_uuid, owner) <= MAX_ROWS:
                cols.append(self.root_columns(experiment_uuid, owner))
                pinned, n_roots = cols[0].pinned_stats()
            else:
                pinned, n_roots = pinned_stats(self.iter_experiment_stats(experiment_uuid, owner))
            pinned.extend({"var1": s["name"], "operation": "custom", "value": s["score"]} for s in dls)
            c.execute(
                "UPDATE experiments SET status=?, finished_at=coalesce(finished_at, ?), dataset_level_stats=?,"
                " pinned_stats=?, num_samples=?, stale=0 WHERE uuid=? AND owner=?",
                (status or row[1], now_iso(), dumps(dls), dumps(pinned), n_roots, experiment_uuid, owner),
            )
            if columns:
                self._pin_columns(experiment_uuid, owner, cols.pop() if cols else None)
