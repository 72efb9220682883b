"""Reads for the web UI: a run's rows as compact columns, pages of rows by position, text search
and text sort orders, and pages of a dataset's rows.

The UI never loads a whole run to show one page of it. It reads a run once as compact columns
(:meth:`PageQueries.root_columns`: no inputs or outputs, scores rolled up from child spans),
which the server caches per run to summarise, sort and filter it; then it fetches only the rows
of the page it shows (:meth:`PageQueries.roots_by_rowid`). Sorting by inputs, target or output
and searching their text happen in SQLite (:meth:`PageQueries.root_order`,
:meth:`PageQueries.search_roots`), since those texts are not part of the compact columns.

Rows are addressed by SQLite's ``rowid``: a run's rows in logging order, and what
:meth:`PageQueries.run_version` watches, since every new or rewritten log gets a new one.
"""

from __future__ import annotations

import functools
import operator
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from runner.scoring import merge_scores
from runner.store.common import USAGE, score_means

__all__ = ["TEXT_FIELDS", "PageQueries", "RootColumns"]

_CHILD_COLUMNS = "root_trace_id, input_tokens, output_tokens, cost, total_tokens, scores"

#: the fields of a root trace the UI can sort by or search as text
TEXT_FIELDS = ("inputs", "target", "output", "error")


@dataclass
class RootColumns:
    """A run's root traces (one per row-trial) as columns, in logging order.

    Scores, tokens and cost include the run's child spans (as :meth:`experiment_stats` rolls
    them up); ``scores`` holds each row's ``[{name, score}]``."""

    rowid: list[int]
    trace_id: list[str]
    #: the row's id (``metadata.row_id``, else the trace id): trials of one row share it
    row_id: list[str]
    status: list[str]
    latency: list[float]
    input_tokens: list[int]
    output_tokens: list[int]
    cost: list[float]
    scores: list[list[dict[str, Any]]]
    #: names of the scorers that failed on the row (``metadata.scorer_errors``)
    scorer_errors: list[list[str]]
    #: score name -> scorer name, for scores a scorer returned under another name
    #: (``metadata.score_sources``), on the rows that have any
    score_sources: list[dict[str, str]] = field(default_factory=list)
    #: when each row-trial started and ended (what a run's duration is made of, see
    #: :func:`runner.results.stored.run_seconds`)
    start_timestamp: list[str | None] = field(default_factory=list)
    end_timestamp: list[str | None] = field(default_factory=list)
    #: what a comparison pairs and adds up: ``metadata.trial``, ``metadata.row_hash`` and the
    #: total tokens of each row-trial (children included)
    trial: list[Any] = field(default_factory=list)
    row_hash: list[str | None] = field(default_factory=list)
    total_tokens: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rowid)

    def pinned_stats(self) -> tuple[list[dict[str, Any]], int]:
        """:func:`runner.store.common.pinned_stats` of these rows (the same values, in the same
        order), from the columns: a run read once for its columns is not read again for its stats."""
        out = score_means(self.scores)
        n = len(self.trace_id)
        if n:
            columns: tuple[Sequence[float], ...] = (
                self.latency, self.input_tokens, self.output_tokens, self.total_tokens, self.cost
            )
            # added float by float, in order, as pinned_stats does (builtin sum() may compensate)
            out.extend(
                {"var1": label, "operation": "mean", "value": functools.reduce(operator.add, map(float, col), 0.0) / n}
                for (label, _), col in zip(USAGE, columns, strict=True)
            )
        return out, n


def _like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, as it appears inside a JSON document."""
    encoded = orjson.dumps(text).decode()[1:-1]  # quotes and backslashes as JSON writes them
    return "%" + encoded.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


class PageQueries:
    """Mixin of :class:`runner.store.Store` holding the web UI's reads."""

    if TYPE_CHECKING:  # provided by Store and DatasetQueries

        def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

        def _dataset_row(self, identifier: str | int, owner: str) -> Any: ...

    def run_version(self, experiment_uuid: str) -> tuple[int, int]:
        """The highest rowids of the run's roots and of its other spans: they change whenever a
        log is added or rewritten (two index lookups, whatever the run's size)."""
        row = self._query(
            "SELECT (SELECT max(rowid) FROM traces WHERE experiment_uuid=?1 AND is_root=1),"
            " (SELECT max(rowid) FROM traces WHERE experiment_uuid=?1 AND is_root=0)",
            (experiment_uuid,),
        )[0]
        return int(row[0] or 0), int(row[1] or 0)

    def _rollup(self, children_sql: str, params: Sequence[Any]) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        """Tokens and cost summed over each root's descendants, and their scores, by root id.

        ``children_sql`` selects the columns of the descendants (any superset of them will do:
        descendants of other roots are ignored by the caller)."""
        sums: dict[str, list[Any]] = {
            root: [tin, tout, cost, total]
            for root, tin, tout, cost, total in self._query(
                "SELECT root_trace_id, sum(coalesce(input_tokens, 0)), sum(coalesce(output_tokens, 0)),"
                f" total(cost), sum(coalesce(total_tokens, 0)) FROM ({children_sql})"
                " WHERE input_tokens OR output_tokens OR cost OR total_tokens"
                " GROUP BY root_trace_id",  # spans without usage (most) never reach the grouping
                params,
            )
        }
        scores: dict[str, list[Any]] = defaultdict(list)
        for root, child_scores in self._query(
            f"SELECT root_trace_id, scores FROM ({children_sql}) WHERE scores IS NOT NULL AND scores != '[]'", params
        ):
            scores[root].extend(orjson.loads(child_scores))
        return sums, scores

    def _run_children(self, experiment_uuid: str, owner: str) -> tuple[str, tuple[Any, ...]]:
        """SQL selecting the spans below the run's roots, and its parameters.

        Spans carry their run's ``experiment_uuid`` (the runner and Parea's SDK set it on every
        span), which the index finds in one range; spans without one (other clients) are found
        through their root, which costs a lookup per such span only."""
        return (
            f"SELECT {_CHILD_COLUMNS} FROM traces WHERE experiment_uuid=? AND is_root=0 AND owner=?"
            f" UNION ALL SELECT {_CHILD_COLUMNS} FROM traces"
            " WHERE experiment_uuid IS NULL AND is_root=0 AND owner=? AND root_trace_id IN"
            " (SELECT trace_id FROM traces WHERE experiment_uuid=? AND is_root=1 AND owner=?)",
            (experiment_uuid, owner, owner, experiment_uuid, owner),
        )

    def root_columns(self, experiment_uuid: str, owner: str = "", page: int = 20_000) -> RootColumns:
        """Every root trace of the run as :class:`RootColumns` (one pass over the run).

        Read ``page`` roots at a time, each page turned into columns before the next is read: a
        million-row run never holds its rows as rows and as columns at once (issue 22's W5)."""
        cols = RootColumns([], [], [], [], [], [], [], [], [], [])
        loads = orjson.loads
        last = -1
        while True:
            rows = self._query(
                "SELECT rowid, trace_id, json_extract(data, '$.metadata.row_id'), status, latency, input_tokens,"
                " output_tokens, cost, scores, json_extract(data, '$.metadata.scorer_errors'),"
                " json_extract(data, '$.metadata.score_sources'), start_timestamp, end_timestamp,"
                " json_extract(data, '$.metadata.trial'), json_extract(data, '$.metadata.row_hash'), total_tokens"
                " FROM traces WHERE experiment_uuid=? AND is_root=1 AND owner=? AND rowid > ? ORDER BY rowid LIMIT ?",
                (experiment_uuid, owner, last, page),
            )
            if not rows:
                break
            last = rows[-1][0]
            # column by column (zip and comprehensions run in C): a row at a time costs twice as much
            (rowid, trace_id, row_id, status, latency, tin, tout, cost, scores, errors, sources, starts, ends, trial,
             row_hash, total) = zip(*rows, strict=True)
            del rows
            cols.rowid.extend(rowid)
            cols.trace_id.extend(trace_id)
            cols.row_id.extend([t if r is None else str(r) for r, t in zip(row_id, trace_id, strict=True)])
            cols.status.extend([s or "success" for s in status])
            cols.latency.extend([x or 0.0 for x in latency])
            cols.input_tokens.extend([x or 0 for x in tin])
            cols.output_tokens.extend([x or 0 for x in tout])
            cols.cost.extend([x or 0.0 for x in cost])
            cols.scores.extend([loads(x) if x else [] for x in scores])
            cols.scorer_errors.extend([list(loads(x)) if x else [] for x in errors])
            cols.score_sources.extend([loads(x) for x in sources if x])
            cols.start_timestamp.extend(starts)
            cols.end_timestamp.extend(ends)
            cols.trial.extend(trial)
            cols.row_hash.extend([None if h is None else str(h) for h in row_hash])
            cols.total_tokens.extend([x or 0 for x in total])
            if len(trace_id) < page:
                break
        if not cols.rowid:
            return cols
        sums, child_scores = self._rollup(*self._run_children(experiment_uuid, owner))
        if sums or child_scores:
            index = {t: i for i, t in enumerate(cols.trace_id)}
            for root, (extra_in, extra_out, extra_cost, extra_total) in sums.items():
                i = index.get(root, -1)
                if i >= 0:
                    cols.input_tokens[i] += extra_in
                    cols.output_tokens[i] += extra_out
                    cols.cost[i] += extra_cost
                    cols.total_tokens[i] += extra_total
            for root, below in child_scores.items():
                i = index.get(root, -1)
                if i >= 0:
                    cols.scores[i] = merge_scores(cols.scores[i], below)
        return cols

    def run_logs(self, experiment_uuid: str, owner: str = "") -> list[dict[str, Any]]:
        """The run's root logs in logging order, children rolled up: the same as
        :meth:`experiment_rows`, in one pass over the run's spans instead of one lookup per root."""
        sums, child_scores = self._rollup(*self._run_children(experiment_uuid, owner))
        loads = orjson.loads
        out = []
        for (data,) in self._query(
            "SELECT data FROM traces WHERE experiment_uuid=? AND is_root=1 AND owner=? ORDER BY rowid",
            (experiment_uuid, owner),
        ):
            d = loads(data)
            extra = sums.get(d["trace_id"], (0, 0, 0.0, 0))
            d["input_tokens"] = (d.get("input_tokens") or 0) + extra[0]
            d["output_tokens"] = (d.get("output_tokens") or 0) + extra[1]
            d["cost"] = (d.get("cost") or 0.0) + extra[2]
            d["total_tokens"] = (d.get("total_tokens") or 0) + extra[3]
            own = d.get("scores") or []
            below = child_scores.get(d["trace_id"])
            d["scores"] = merge_scores(own, below) if below else own
            out.append(d)
        return out

    def roots_by_rowid(self, experiment_uuid: str, rowids: Sequence[int], owner: str = "") -> dict[int, dict[str, Any]]:
        """The full logs of these roots of the run by rowid, children rolled up (a rowid that is
        no longer a root of the run is left out)."""
        if not rowids:
            return {}
        rows = self._query(
            "SELECT rowid, data FROM traces WHERE rowid IN (SELECT value FROM json_each(?))"
            " AND experiment_uuid=? AND is_root=1 AND owner=?",
            (orjson.dumps([int(r) for r in rowids]).decode(), experiment_uuid, owner),
        )
        out: dict[int, dict[str, Any]] = {r[0]: orjson.loads(r[1]) for r in rows}
        trace_ids = orjson.dumps([d["trace_id"] for d in out.values()]).decode()
        sums, child_scores = self._rollup(
            f"SELECT {_CHILD_COLUMNS} FROM traces"
            " WHERE is_root=0 AND owner=? AND root_trace_id IN (SELECT value FROM json_each(?))",
            (owner, trace_ids),
        )
        for d in out.values():
            extra = sums.get(d["trace_id"])
            if extra is not None:
                d["input_tokens"] = int((d.get("input_tokens") or 0) + extra[0])
                d["output_tokens"] = int((d.get("output_tokens") or 0) + extra[1])
                d["cost"] = (d.get("cost") or 0.0) + extra[2]
                d["total_tokens"] = int((d.get("total_tokens") or 0) + extra[3])
            if d["trace_id"] in child_scores:
                d["scores"] = merge_scores(d.get("scores") or [], child_scores[d["trace_id"]])
        return out

    def search_roots(self, experiment_uuid: str, text: str, owner: str = "") -> list[int]:
        """Rowids of the run's roots whose inputs, target, output or error contain ``text``
        (case-insensitive for ASCII, as SQLite's LIKE), in logging order."""
        pattern = _like_pattern(text)
        fields = " || char(10) || ".join(f"coalesce(data -> '$.{f}', '')" for f in TEXT_FIELDS)
        # the cheap test on the whole document first: the precise one only runs on its matches
        return [
            r[0]
            for r in self._query(
                "SELECT rowid FROM traces WHERE experiment_uuid=? AND is_root=1 AND owner=?"
                f" AND data LIKE ?3 ESCAPE '!' AND ({fields}) LIKE ?3 ESCAPE '!' ORDER BY rowid",
                (experiment_uuid, owner, pattern),
            )
        ]

    def root_order(self, experiment_uuid: str, field: str, owner: str = "") -> list[int]:
        """Rowids of the run's roots sorted by a text field (one of :data:`TEXT_FIELDS`), as its
        JSON text; ties (and missing values, first) in logging order."""
        if field not in TEXT_FIELDS:
            raise ValueError(f"cannot sort rows by {field!r}; use one of {', '.join(TEXT_FIELDS)}")
        return [
            r[0]
            for r in self._query(
                f"SELECT rowid FROM traces WHERE experiment_uuid=? AND is_root=1 AND owner=?"
                # spelled out for PostgreSQL, whose defaults differ: byte order, missing values first
                f" ORDER BY data -> '$.{field}' COLLATE BINARY NULLS FIRST, rowid",
                (experiment_uuid, owner),
            )
        ]

    def dataset_rows(
        self, identifier: str | int, owner: str = "", *, limit: int = 50, offset: int = 0
    ) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
        """A dataset (without its rows), how many rows it has, and one page of them."""
        ds = self._dataset_row(identifier, owner)
        total = int(self._query("SELECT count(*) FROM testcases WHERE dataset_id=?", (ds["id"],))[0][0])
        rows = [
            {
                "id": r[0],
                "inputs": orjson.loads(r[1]),
                "target": r[2],
                "tags": orjson.loads(r[3]),
            }
            for r in self._query(
                "SELECT id, inputs, target, tags FROM testcases WHERE dataset_id=? ORDER BY id LIMIT ? OFFSET ?",
                (ds["id"], int(limit), int(offset)),
            )
        ]
        meta = {
            "id": ds["id"],
            "name": ds["name"],
            "column_names": orjson.loads(ds["column_names"]),
            "created_at": ds["created_at"],
            "last_updated_at": ds["last_updated_at"],
        }
        return meta, total, rows
