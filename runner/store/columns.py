"""A finished run's compact columns, stored with it: what the web UI's run and compare pages read.

Summarising a run of 100,000 rows means reading and decoding every row (about 2 s on a loaded
2-core machine), and comparing two such runs reading both in full (about 14 s). So when a run
finishes, and whenever issue 13's re-pin brings a finished run up to date (a row logged, changed
or deleted after the finish marks it ``stale``, see :mod:`runner.store.pinning`), the store also
writes the run's :class:`CompactRun` into ``run_columns``: per row-trial its rowid, row id, trial,
status, latency, tokens, cost and each score's value, plus the summaries of the scores. The pages
then read one document instead of the run.

The summaries are computed once, here, by the same code for a stored document and for a running
run read live (:func:`compact_run`): :func:`runner.results.stats.summarize_score` over each score with the
row ids as clusters, in the order ``python -m runner show`` uses, so the digits are the same.

Each write of a run's document bumps its ``generation``: what a cached page view is of
(:meth:`ColumnQueries.columns_generation`, one indexed read). A run of fewer than :data:`MIN_ROWS`
row-trials keeps an empty document (and its generation): its pages read it live, quickly, and
finishing it costs no more than it did. So does a run of more than :data:`MAX_ROWS`, whose
document would cost the finishing process more memory than the run itself.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, KeysView, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from runner.errors import NotFoundError

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence
    from contextlib import AbstractContextManager

    import numpy as np
    import numpy.typing as npt

    from runner.results.compare import RunRows
    from runner.results.stats import ScoreSummary
    from runner.store.pages import RootColumns

__all__ = ["FORMAT", "MAX_ROWS", "MIN_ROWS", "ColumnQueries", "CompactRun", "FirstLogs", "compact_run"]

#: the version of the stored document; a document of another version is rebuilt when read
#: (2: the per-row columns in binary, in ``run_columns.arrays``)
FORMAT = 2
#: runs of fewer row-trials store no document (a page reads them live in a few hundred ms; the
#: runs page reads runs up to this size too, see :data:`runner.server.ui.runs.LIST_MAX_ROWS`),
#: so finishing a small run costs nothing more; they keep a ``generation`` all the same
MIN_ROWS = 20_000
#: nor do runs of more: building the document holds the run's columns and one comparison entry per
#: row in memory at once (about 1.2 KB a row-trial), which the process that finishes the run pays
#: (a million-row run made the runner's peak 1.5 GB, issue 22's W5); their pages read them live,
#: in the server, as every run's did before the documents (issue 20 measures 100,000-row runs)
MAX_ROWS = 250_000

log = logging.getLogger(__name__)


@dataclass
class CompactRun:
    """A run's root traces (one per row-trial) as columns, in logging order, and their summaries."""

    rowid: npt.NDArray[np.int64]
    #: the row's id as summaries cluster by it (``metadata.row_id``, else the trace id)
    row_id: list[str]
    #: the row's id as a comparison pairs by it (:func:`runner.results.compare.row_key`)
    pair_key: list[str]
    #: ``metadata.trial`` (None when the log has none)
    trial: list[Any]
    #: ``metadata.row_hash`` (None when the log has none)
    row_hash: list[str | None]
    error: npt.NDArray[np.bool_]
    #: index into ``statuses`` per row
    status_code: npt.NDArray[np.int8]
    statuses: list[str]
    latency: npt.NDArray[np.float64]
    #: per row, the children's included
    total_tokens: npt.NDArray[np.float64]
    cost: npt.NDArray[np.float64]
    #: score name -> value per row (NaN where the row has none), names in order of appearance
    scores: dict[str, npt.NDArray[np.float64]]
    summaries: dict[str, ScoreSummary]
    latency_stats: dict[str, float | None]
    #: rows on which some scorer failed (``metadata.scorer_errors``)
    scorer_failed: npt.NDArray[np.bool_]
    #: score name -> the scorers whose failure leaves a row without it
    error_keys: dict[str, list[str]]
    input_tokens: int
    output_tokens: int
    cost_total: float
    #: how long the run ran its rows (:func:`runner.results.stored.run_seconds` of the experiment it was
    #: computed with)
    run_seconds: float | None
    #: bumped by each write of the stored document; 0 for one built live
    generation: int = 0

    def __len__(self) -> int:
        return len(self.rowid)

    def status(self, i: int) -> str:
        return self.statuses[int(self.status_code[i])]

    def to_stored(self) -> tuple[str, bytes]:
        """The document as stored: its summaries as JSON, its per-row columns as one binary value
        (raw little-endian arrays, then the text columns as JSON). Reading it back costs no
        parsing of 100,000 numbers per column (:meth:`from_stored`)."""
        import numpy as np

        parts: list[bytes] = []
        segments: dict[str, list[Any]] = {}
        offset = 0
        columns = [(name, getattr(self, name), dtype) for name, dtype in _WIDE]
        columns += [(f"score:{i}", column, "<f8") for i, column in enumerate(self.scores.values())]
        columns += [(name, getattr(self, name), dtype) for name, dtype in _NARROW]  # 8-byte ones stay aligned
        for key, values, dtype in columns:
            data = np.ascontiguousarray(values, dtype=dtype).tobytes()
            segments[key] = [dtype, offset, len(values)]
            parts.append(data)
            offset += len(data)
        text = orjson.dumps(
            {
                "row_id": self.row_id,
                "pair_key": None if self.pair_key == self.row_id else self.pair_key,
                "trial": self.trial,
                "row_hash": self.row_hash,
            }
        )
        segments["text"] = ["json", offset, len(text)]
        doc = {
            "format": FORMAT,
            "segments": segments,
            "score_names": list(self.scores),
            "statuses": self.statuses,
            "summaries": {k: dataclasses.asdict(s) for k, s in self.summaries.items()},
            **{name: getattr(self, name) for name in _SMALL},
        }
        return orjson.dumps(doc).decode(), b"".join(parts) + text

    @classmethod
    def from_stored(cls, text: str | bytes, arrays: bytes | None, generation: int) -> CompactRun | None:
        """The document read back, or None when it is of another :data:`FORMAT`. Its arrays are
        read-only views of ``arrays``."""
        import numpy as np

        from runner.results.stats import ScoreSummary

        doc = orjson.loads(text)
        if doc.get("format") != FORMAT or arrays is None:
            return None
        blob = bytes(arrays)  # a memoryview of some drivers
        seg = doc["segments"]

        def column(key: str) -> Any:
            dtype, offset, count = seg[key]
            return np.frombuffer(blob, dtype=dtype, count=count, offset=offset)

        _, at, size = seg["text"]
        strings = orjson.loads(blob[at : at + size])
        return cls(
            row_id=strings["row_id"],
            pair_key=strings["row_id"] if strings["pair_key"] is None else strings["pair_key"],
            trial=strings["trial"],
            row_hash=strings["row_hash"],
            statuses=doc["statuses"],
            scores={name: column(f"score:{i}") for i, name in enumerate(doc["score_names"])},
            summaries={k: ScoreSummary(**s) for k, s in doc["summaries"].items()},
            generation=generation,
            **{name: column(name) for name, _ in (*_WIDE, *_NARROW)},
            **{name: doc[name] for name in _SMALL},
        )


#: the per-row arrays of a stored :class:`CompactRun` and their types: 8 bytes wide, then 1
_WIDE = (("rowid", "<i8"), ("latency", "<f8"), ("total_tokens", "<f8"), ("cost", "<f8"))
_NARROW = (("error", "|b1"), ("status_code", "|i1"), ("scorer_failed", "|b1"))
#: the fields stored as they are
_SMALL = ("latency_stats", "error_keys", "input_tokens", "output_tokens", "cost_total", "run_seconds")


def compact_run(cols: RootColumns, experiment: dict[str, Any], pair_keys: dict[int, str] | None = None) -> CompactRun:
    """Summarise a run read as :class:`~runner.store.pages.RootColumns` exactly as ``show`` does.

    ``pair_keys``: rowid -> :func:`runner.results.compare.row_key` of the logs without ``metadata.row_id``
    (:meth:`ColumnQueries.pair_keys`); the others pair by their row id."""
    import numpy as np

    from runner.results.stats import latency_summary, summarize_score
    from runner.results.stored import run_seconds

    n = len(cols)
    values: dict[str, npt.NDArray[np.float64]] = {}
    failures: dict[str, int] = {}
    errored_scored: dict[str, int] = {}
    error = np.fromiter((s != "success" for s in cols.status), dtype=np.bool_, count=n)
    where: dict[str, tuple[list[int], list[float]]] = {}  # name -> (rows, values), in order of appearance
    for i, scores in enumerate(cols.scores):
        for s in scores:
            found = where.get(s["name"])
            if found is None:
                found = where[s["name"]] = ([], [])
            found[0].append(i)
            found[1].append(s["score"])
    for name, (rows, vals) in where.items():
        values[name] = np.full(n, np.nan)
        values[name][rows] = vals
    for i in np.flatnonzero(error).tolist():  # errored rows scored by a span that ran before the error
        for s in cols.scores[i]:
            errored_scored[s["name"]] = errored_scored.get(s["name"], 0) + 1
    # a scorer's failures count against the scores it returns (as Tally.summaries)
    produces: dict[str, set[str]] = {}
    for sources in cols.score_sources:
        for score, scorer in sources.items():
            produces.setdefault(scorer, set()).add(score)
    for failed in cols.scorer_errors:
        for scorer in failed:
            for name in produces.get(scorer) or {scorer}:
                failures[name] = failures.get(name, 0) + 1
    scorer_failed = np.fromiter((bool(f) for f in cols.scorer_errors), dtype=np.bool_, count=n)
    error_keys: dict[str, list[str]] = {}
    for scorer in {s for failed in cols.scorer_errors for s in failed}:
        for name in sorted(produces.get(scorer) or {scorer}):
            error_keys.setdefault(name, []).append(scorer)
    row_ids = np.asarray(cols.row_id, dtype=np.str_) if n else np.asarray([], dtype=np.str_)
    n_errors = int(error.sum())
    summaries = {}
    for name in [*values, *(f for f in failures if f not in values)]:
        column = values.get(name, np.full(n, np.nan))
        scored = ~np.isnan(column)
        v, clusters = column[scored], row_ids[scored]
        # as Tally.summaries: sorted by (row id, value), so the seeded interval is the run's
        order = np.lexsort((v, clusters))
        summaries[name] = summarize_score(
            name,
            v[order],
            clusters[order].tolist(),
            n_errors=n_errors + failures.get(name, 0) - errored_scored.get(name, 0),
            n_total=n,
        )
    statuses = sorted(set(cols.status))
    codes = {s: i for i, s in enumerate(statuses)}
    keys = pair_keys or {}
    return CompactRun(
        rowid=np.asarray(cols.rowid, dtype=np.int64),
        row_id=list(cols.row_id),
        pair_key=[keys.get(r, k) for r, k in zip(cols.rowid, cols.row_id, strict=True)] if keys else list(cols.row_id),
        trial=[_number(t) for t in cols.trial] if cols.trial else [None] * n,
        row_hash=list(cols.row_hash) if cols.row_hash else [None] * n,
        error=error,
        status_code=np.fromiter((codes[s] for s in cols.status), dtype=np.int8, count=n),
        statuses=statuses,
        latency=np.asarray(cols.latency, dtype=np.float64),
        total_tokens=np.asarray(cols.total_tokens or [0] * n, dtype=np.float64),
        cost=np.asarray(cols.cost, dtype=np.float64),
        scores=values,
        summaries=summaries,
        latency_stats=latency_summary(cols.latency),
        scorer_failed=scorer_failed,
        error_keys=error_keys,
        input_tokens=int(sum(cols.input_tokens)),
        output_tokens=int(sum(cols.output_tokens)),
        cost_total=float(sum(cols.cost)),
        run_seconds=run_seconds(
            [
                {"start_timestamp": a, "end_timestamp": b}
                for a, b in zip(cols.start_timestamp, cols.end_timestamp, strict=True)
            ],
            experiment,
        ),
    )


def _number(value: Any) -> Any:
    """A JSON number read as text (PostgreSQL's ``json_extract`` gives text) as the number."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


def logs_of(columns: CompactRun) -> list[dict[str, Any]]:
    """The run's root logs as far as a comparison reads them (row id, trial, row hash, status,
    scores, latency, tokens, cost), in logging order; ``rowid`` locates the full log."""
    names = list(columns.scores)
    values = [columns.scores[n].tolist() for n in names]
    statuses = columns.statuses
    out = []
    for rowid, key, trial, row_hash, code, latency, tokens, cost, *row in zip(
        columns.rowid.tolist(),
        columns.pair_key,
        columns.trial,
        columns.row_hash,
        columns.status_code.tolist(),
        columns.latency.tolist(),
        columns.total_tokens.tolist(),
        columns.cost.tolist(),
        *values,
        strict=True,
    ):
        meta: dict[str, Any] = {"row_id": key}
        if trial is not None:
            meta["trial"] = trial
        if row_hash is not None:
            meta["row_hash"] = row_hash
        out.append(
            {
                "rowid": rowid,
                "metadata": meta,
                "status": statuses[code],
                # NaN (no value) is the one value unequal to itself
                "scores": [{"name": n, "score": v} for n, v in zip(names, row, strict=True) if v == v],
                "latency": latency,
                "total_tokens": tokens,
                "cost": cost,
            }
        )
    return out


def _pairing_json(rows: RunRows) -> str:
    """:class:`runner.results.compare.RunRows` of logs from :func:`logs_of` as a JSON document."""
    first = rows.first.values()
    return orjson.dumps(
        {
            "format": FORMAT,
            "means": rows.means,
            "first": {
                "row_id": list(rows.first),
                "rowid": [r["rowid"] for r in first],
                "status": [r["status"] for r in first],
                "row_hash": [r["metadata"].get("row_hash") for r in first],
            },
            "usage": rows.usage,
            "n_errors": rows.n_errors,
            "n_logs": rows.n_logs,
        }
    ).decode()


class FirstLogs(Mapping[str, Mapping[str, Any]]):
    """Row id -> what a comparison reads of the log of the row's first trial (``rowid``, ``status``,
    ``metadata.row_hash``), over the stored columns: an entry is made when it is read, so that
    reading a stored pairing costs one index of the row ids, not a dict per row."""

    def __init__(self, row_id: list[str], rowid: list[int], status: list[str], row_hash: list[str | None]) -> None:
        self._index = dict(zip(row_id, range(len(row_id)), strict=True))
        self._rowid, self._status, self._row_hash = rowid, status, row_hash

    def __getitem__(self, key: str) -> Mapping[str, Any]:
        i = self._index[key]
        h = self._row_hash[i]
        return {"rowid": self._rowid[i], "status": self._status[i], "metadata": {} if h is None else {"row_hash": h}}

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def keys(self) -> KeysView[str]:
        return self._index.keys()  # whose membership test is the dict's own

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def _pairing_from_json(text: str | bytes) -> RunRows | None:
    from runner.results.compare import RunRows

    doc = orjson.loads(text)
    if doc.get("format") != FORMAT:
        return None
    f = doc["first"]
    first = FirstLogs(f["row_id"], f["rowid"], f["status"], f["row_hash"])
    hashes = dict(zip(f["row_id"], f["row_hash"], strict=True))
    return RunRows(doc["means"], first, doc["usage"], int(doc["n_errors"]), int(doc["n_logs"]), hashes)


class ColumnQueries:
    """Mixin of :class:`runner.store.Store`: the stored compact columns of finished runs."""

    if TYPE_CHECKING:  # provided by Store, PageQueries and PinQueries

        def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

        def root_columns(self, experiment_uuid: str, owner: str = "") -> RootColumns: ...

        def _repin(
            self,
            experiment_uuid: str,
            owner: str,
            dataset_level_stats: list[dict[str, Any]] | None = None,
            status: str | None = None,
            collect: list[dict[str, Any]] | None = None,
            columns: bool = True,
        ) -> None: ...

        def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def _query_blobs(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """:meth:`_query` of a statement that reads binary values (PostgreSQL then reads its
        results in binary, not as hex text twice their size)."""
        return self._query(sql, params)

    def pair_keys(self, experiment_uuid: str, owner: str = "") -> dict[int, str]:
        """rowid -> :func:`runner.results.compare.row_key` of the run's roots without ``metadata.row_id``
        (logs of other clients, paired across runs by a hash of their inputs and target)."""
        from runner.results.compare import row_key

        return {
            r[0]: row_key(orjson.loads(r[1]))
            for r in self._query(
                "SELECT rowid, data FROM traces WHERE experiment_uuid=? AND is_root=1 AND owner=?"
                " AND json_extract(data, '$.metadata.row_id') IS NULL",
                (experiment_uuid, owner),
            )
        }

    def live_columns(
        self, experiment_uuid: str, experiment: dict[str, Any], owner: str = "", cols: RootColumns | None = None
    ) -> CompactRun:
        """The run's :class:`CompactRun` read from its rows now (what a running run's page shows);
        ``cols``: its root columns, when the caller has just read them in the same transaction."""
        if cols is None:
            cols = self.root_columns(experiment_uuid, owner)
        # a row without metadata.row_id has its trace id as row id; only then are pair keys read
        unkeyed = any(r == t for r, t in zip(cols.row_id, cols.trace_id, strict=True))
        return compact_run(cols, experiment, self.pair_keys(experiment_uuid, owner) if unkeyed else None)

    def _pin_columns(self, experiment_uuid: str, owner: str, cols: RootColumns | None = None) -> None:
        """Compute and store the finished run's compact columns (in the caller's write transaction,
        after its pinned stats and finish time are written; ``cols``: the root columns it read)."""
        with self.transaction() as c:
            row = c.execute(
                "SELECT created_at, finished_at, num_samples FROM experiments WHERE uuid=? AND owner=?",
                (experiment_uuid, owner),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"experiment {experiment_uuid} not found")
            doc, arrays, pairing = "", None, None  # no document: the pages read the run live
            if MIN_ROWS <= (row[2] or 0) <= MAX_ROWS:
                from runner.results.compare import run_rows

                try:
                    compact = self.live_columns(
                        experiment_uuid, {"created_at": row[0], "finished_at": row[1]}, owner, cols
                    )
                    cols = None  # summarised: a million rows' columns are not kept past here
                    (doc, arrays), pairing = compact.to_stored(), _pairing_json(run_rows(logs_of(compact)))
                except (TypeError, ValueError) as exc:  # a log the summaries cannot read
                    log.warning("could not store the compact columns of run %s: %s", experiment_uuid, exc)
                    doc, arrays, pairing = "", None, None
            c.execute(
                "INSERT INTO run_columns(experiment_uuid, owner, generation, data, arrays, pairing)"
                " VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT(experiment_uuid, owner) DO UPDATE"
                " SET generation=run_columns.generation + 1, data=excluded.data, arrays=excluded.arrays,"
                " pairing=excluded.pairing",
                (experiment_uuid, owner, doc, arrays, pairing),
            )

    def columns_generation(self, experiment_uuid: str, owner: str = "") -> int | None:
        """The generation of the finished run's stored columns, or None when they are missing or no
        longer current (the run is running, or changed since: :meth:`run_columns` brings them up
        to date)."""
        rows = self._query(
            "SELECT e.stale, e.finished_at, c.generation FROM experiments e LEFT JOIN run_columns c"
            " ON c.experiment_uuid=e.uuid AND c.owner=e.owner WHERE e.uuid=? AND e.owner=?",
            (experiment_uuid, owner),
        )
        if not rows or rows[0][0] or rows[0][1] is None or rows[0][2] is None:
            return None
        return int(rows[0][2])

    def run_columns(self, experiment_uuid: str, owner: str = "") -> CompactRun | None:
        """The finished run's stored :class:`CompactRun`, current: a run changed since it finished
        is re-pinned first, and a run finished before the columns were stored gets them now
        (once). None for a run that is not finished, or has fewer than :data:`MIN_ROWS` or more than
        :data:`MAX_ROWS` rows."""
        for _ in range(3):  # a write between the check and the read: once more
            rows = self._query_blobs(
                "SELECT e.stale, e.finished_at, c.generation, c.arrays, c.data FROM experiments e"
                " LEFT JOIN run_columns c ON c.experiment_uuid=e.uuid AND c.owner=e.owner WHERE e.uuid=? AND e.owner=?",
                (experiment_uuid, owner),
            )
            if not rows:
                raise NotFoundError(f"experiment {experiment_uuid} not found")
            stale, finished_at, generation, arrays, data = rows[0]
            if finished_at is None:
                return None
            if stale:
                self._repin(experiment_uuid, owner)
                continue
            if data == "":  # a small or huge run (or one whose logs the summaries cannot read): read live
                return None
            if data is not None:
                found = CompactRun.from_stored(data, arrays, int(generation))
                if found is not None:
                    return found
            self._pin_columns(experiment_uuid, owner)  # missing or of an older format
        return None

    def run_pairing(self, experiment_uuid: str, generation: int, owner: str = "") -> RunRows | None:
        """The big finished run as :func:`runner.results.compare.run_rows` reads it, stored with its
        columns of ``generation`` (:meth:`run_columns`); None when the run changed since, or is
        small."""
        rows = self._query(
            "SELECT c.generation, c.pairing FROM experiments e JOIN run_columns c"
            " ON c.experiment_uuid=e.uuid AND c.owner=e.owner WHERE e.uuid=? AND e.owner=? AND e.stale=0",
            (experiment_uuid, owner),
        )
        if not rows or rows[0][0] != generation or not rows[0][1]:
            return None
        return _pairing_from_json(rows[0][1])
