"""A run as the pages see it: compact columns, its summary, and sorted, filtered pages of rows.

A :class:`RunView` is made of the run's compact columns (:class:`~runner.store.columns.CompactRun`):
scores, status, latency, tokens and cost of every row, without inputs or outputs, and the
summaries of its scores, computed exactly as ``python -m runner show`` does. A finished run's are
stored with it when it finishes and kept current by the store (one read of one document, see
:mod:`runner.store.columns`); a running or small run's are read from its rows. It orders and
filters rows with numpy, so that a page of a 100,000-row run sorted by a score costs a few
milliseconds. Only the rows of the page shown are then read in full. Sorting by a text column
and searching text happen in SQLite, once per run and query (their results are kept with the view).

:class:`RunCache` keeps the views of the runs viewed last. A finished run's view lives until a
log of the run is added, changed or deleted (the generation of its stored columns moves), or the
run is finished again; a running run's view is rebuilt at most every :data:`RUNNING_TTL` seconds.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from markupsafe import Markup

from runner.results.stats import ScoreSummary
from runner.server.ui.charts import histogram
from runner.store.pages import TEXT_FIELDS

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from runner.store import Store
    from runner.store.columns import CompactRun

__all__ = ["LIST_MAX_ROWS", "LRU", "RUNNING_TTL", "SORT_KEYS", "Listing", "RowQuery", "RunCache", "RunView", "listing"]

#: seconds a running run's view is reused before it is read again
RUNNING_TTL = 2.0
#: the runs page reads runs up to this size to show their intervals; bigger ones show the means the
#: backend pinned when they finished, until their own page has been viewed (as ``runner list``)
LIST_MAX_ROWS = 20_000
#: pinned stats that are not scores
_NOT_SCORES = {"Latency", "Input Tokens", "Output Tokens", "Total Tokens", "Cost"}
#: sort keys besides ``score:<name>``: logging order, the text columns, status and latency
SORT_KEYS = ("row", *TEXT_FIELDS[:3], "status", "latency")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A small thread-safe least-recently-used map."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


@dataclass(frozen=True)
class RowQuery:
    """What the rows table shows: its sort, its filters and its page (the query parameters)."""

    sort: str = "row"
    desc: bool = False
    errors_only: bool = False
    #: with ``below``: rows whose score ``score`` is below ``below``
    score: str | None = None
    below: float | None = None
    #: text searched in inputs, target, output and error
    search: str = ""
    page: int = 1
    per_page: int = 50


@dataclass
class Page:
    """One page of rows: the full logs with their positions in the run (1-based)."""

    total: int
    rows: list[dict[str, Any]]
    positions: list[int]
    first: int
    last: int
    page: int
    pages: int


@dataclass
class RunView:
    """One run read once: compact columns, summary, and memoised text orders and searches."""

    experiment: dict[str, Any]
    version: tuple[Any, ...]
    rowid: npt.NDArray[np.int64]
    error: npt.NDArray[np.bool_]
    status_code: npt.NDArray[np.int8]
    latency: npt.NDArray[np.float64]
    #: score name -> value per row (NaN where the row has none), names in order of appearance
    scores: dict[str, npt.NDArray[np.float64]]
    summaries: dict[str, ScoreSummary]
    latency_stats: dict[str, float | None]
    #: rows on which some scorer failed (``metadata.scorer_errors``): "errors only" finds them
    scorer_failed: npt.NDArray[np.bool_]
    #: score name -> the scorers whose failure leaves a row without it (keys of ``scorer_errors``)
    error_keys: dict[str, list[str]]
    input_tokens: int
    output_tokens: int
    cost: float
    #: how long the run ran its rows, as the summary and ``show`` say (:func:`runner.results.stored.run_seconds`)
    run_seconds: float | None = None
    #: what the view was made of (a comparison pairs rows on it)
    compact: CompactRun | None = field(default=None, repr=False)
    built_at: float = field(default_factory=time.monotonic)
    _histograms: dict[str, Markup] | None = field(default=None, repr=False)
    _orders: dict[str, npt.NDArray[np.intp]] = field(default_factory=dict, repr=False)
    _searches: LRU[str, npt.NDArray[np.bool_]] = field(default_factory=lambda: LRU(16), repr=False)

    @property
    def columns(self) -> list[str]:
        """The score columns of the rows table: every score, and scores that only failed."""
        return list(self.summaries)

    def scorer_error(self, row: dict[str, Any], name: str) -> str | None:
        """Why ``row`` has no score ``name``: the error of the scorer that should have given it."""
        errors = (row.get("metadata") or {}).get("scorer_errors") or {}
        for scorer in self.error_keys.get(name, ()):
            if scorer in errors:
                return f"{scorer}: {errors[scorer]}" if scorer != name else str(errors[scorer])
        return None

    @property
    def uuid(self) -> str:
        return str(self.experiment["uuid"])

    @property
    def n_total(self) -> int:
        return len(self.rowid)

    @property
    def n_errors(self) -> int:
        return int(self.error.sum())

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def duration(self) -> float | None:
        return self.run_seconds

    @classmethod
    def build(cls, store: Store, experiment: dict[str, Any], version: tuple[Any, ...], owner: str) -> RunView:
        """The view of ``experiment`` read from its rows now (a running or small run's)."""
        return cls.of(experiment, version, store.live_columns(experiment["uuid"], experiment, owner))

    @classmethod
    def of(cls, experiment: dict[str, Any], version: tuple[Any, ...], columns: CompactRun) -> RunView:
        """The view of a run's compact columns (stored when it finished, or read live)."""
        return cls(
            experiment=experiment,
            version=version,
            rowid=columns.rowid,
            error=columns.error,
            status_code=columns.status_code,
            latency=columns.latency,
            scores=columns.scores,
            summaries=columns.summaries,
            scorer_failed=columns.scorer_failed,
            error_keys=columns.error_keys,
            latency_stats=columns.latency_stats,
            input_tokens=columns.input_tokens,
            output_tokens=columns.output_tokens,
            cost=columns.cost_total,
            run_seconds=columns.run_seconds,
            compact=columns,
        )

    def histograms(self) -> dict[str, Markup]:
        """An SVG histogram of each score, with its mean and interval."""
        import numpy as np

        if self._histograms is None:
            self._histograms = {
                name: histogram(
                    values[~np.isnan(values)],
                    name=name,
                    mean=self.summaries[name].mean,
                    ci=(self.summaries[name].ci_low, self.summaries[name].ci_high),
                )
                for name, values in self.scores.items()
            }
        return self._histograms

    # -- the rows table -----------------------------------------------------------------------
    def order(self, store: Store, sort: str, desc: bool, owner: str) -> npt.NDArray[np.intp]:
        """Positions of the rows in the requested order; ties, and missing values (last), in
        logging order."""
        import numpy as np

        key = f"{sort}:{desc}"
        cached = self._orders.get(key)
        if cached is not None:
            return cached
        n = self.n_total
        if sort.startswith("score:"):
            column = self.scores.get(sort[len("score:") :])
            if column is None:
                raise ValueError(f"this run has no score {sort[len('score:') :]!r}")
            order = np.argsort(-column if desc else column, kind="stable")  # NaN sorts last either way
        elif sort in ("row", "status", "latency"):
            keys = {"row": None, "status": self.status_code, "latency": self.latency}[sort]
            if keys is None:
                order = np.arange(n)[::-1] if desc else np.arange(n)
            else:
                order = np.argsort(-keys.astype(np.float64) if desc else keys, kind="stable")
        elif sort in TEXT_FIELDS:
            ascending = self._orders.get(f"{sort}:False")
            if ascending is None:
                rowids = np.asarray(store.root_order(self.uuid, sort, owner), dtype=np.int64)
                ascending = self._positions(rowids)
                self._orders[f"{sort}:False"] = ascending
            order = ascending[::-1] if desc else ascending
        else:
            raise ValueError(f"cannot sort by {sort!r}; use one of {', '.join(SORT_KEYS)} or score:NAME")
        self._orders[key] = order
        return order

    def _positions(self, rowids: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        """Positions in this view of rows given by rowid (rows the view does not know dropped)."""
        import numpy as np

        if not self.n_total:
            return np.zeros(0, dtype=np.intp)
        pos: npt.NDArray[np.intp] = np.clip(np.searchsorted(self.rowid, rowids), 0, self.n_total - 1)
        known: npt.NDArray[np.intp] = pos[self.rowid[pos] == rowids]
        return known

    def mask(self, store: Store, q: RowQuery, owner: str) -> npt.NDArray[np.bool_] | None:
        """Which rows pass the filters, or None for all."""
        import numpy as np

        mask: npt.NDArray[np.bool_] | None = None
        if q.errors_only:  # rows that errored, and rows where a scorer failed
            mask = self.error | self.scorer_failed
        if q.score is not None and q.below is not None:
            column = self.scores.get(q.score)
            if column is None:
                raise ValueError(f"this run has no score {q.score!r}")
            with np.errstate(invalid="ignore"):
                below = column < q.below
            mask = below if mask is None else mask & below
        if q.search:
            found = self._searches.get(q.search)
            if found is None:
                found = np.zeros(self.n_total, dtype=np.bool_)
                rowids = np.asarray(store.search_roots(self.uuid, q.search, owner), dtype=np.int64)
                found[self._positions(rowids)] = True
                self._searches.put(q.search, found)
            mask = found if mask is None else mask & found
        return mask

    def page(self, store: Store, q: RowQuery, owner: str) -> Page:
        """The page of rows ``q`` asks for (its page number clamped to the pages there are)."""
        order = self.order(store, q.sort, q.desc, owner)
        mask = self.mask(store, q, owner)
        if mask is not None:
            order = order[mask[order]]
        total = len(order)
        pages = max(1, -(-total // q.per_page))
        page = min(max(1, q.page), pages)
        start = (page - 1) * q.per_page
        chosen = order[start : start + q.per_page].tolist()
        logs = store.roots_by_rowid(self.uuid, self.rowid[chosen].tolist(), owner)
        rows, positions = [], []
        for i in chosen:
            log = logs.get(int(self.rowid[i]))
            if log is not None:  # else rewritten since this view was built
                rows.append(_with_defaults(log))
                positions.append(i + 1)
        return Page(total, rows, positions, start + 1 if total else 0, start + len(rows), page, pages)


def _with_defaults(log: dict[str, Any]) -> dict[str, Any]:
    """``log`` with what the run page reads of every row: the store keeps only the fields a client
    sent, and a minimal Parea log (``trace_id``, ``start_timestamp``, ``experiment_uuid``) has none."""
    status = log.get("status") or ("error" if log.get("error") else "success")
    return {"scores": [], "metadata": {}, "inputs": {}, **log, "status": status}


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one timestamp to another (ISO 8601 or ``YYYY-MM-DD HH:MM:SS``; naive means
    UTC, see :mod:`runner.server.fill`), or None when either is missing or unreadable."""
    from runner.server.fill import parse_timestamp

    begin, finish = parse_timestamp(start), parse_timestamp(end)
    if begin is None or finish is None:
        return None
    return (finish - begin).total_seconds()


class RunCache:
    """The views of the runs viewed last, per owner, rebuilt when their run changes."""

    def __init__(self, size: int = 16) -> None:
        self._views: LRU[tuple[str, str], RunView] = LRU(size)
        #: listings of big runs not read yet (see :func:`listing`), with the version they are of
        self.listings: LRU[tuple[str, str], tuple[tuple[Any, ...], Listing]] = LRU(256)
        self._building: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def peek(self, store: Store, experiment: dict[str, Any], owner: str) -> RunView | None:
        """The view of ``experiment`` if one is cached and current, without building one."""
        view = self._views.get((owner, str(experiment["uuid"])))
        if view is None:
            return None
        version = self.version(store, experiment, owner)
        return view if view.version == version or self._fresh(view, experiment) else None

    @staticmethod
    def version(store: Store, experiment: dict[str, Any], owner: str = "") -> tuple[Any, ...]:
        """What a view is of: the run's status, finish time, highest rowids and the generation of
        its stored columns (None while it runs, or once it changed after it finished; see :meth:`get`)."""
        uuid = str(experiment["uuid"])
        return (
            experiment.get("status"),
            experiment.get("finished_at"),
            *store.run_version(uuid),
            store.columns_generation(uuid, owner),
        )

    def get(self, store: Store, experiment: dict[str, Any], owner: str) -> RunView:
        """The view of ``experiment`` (a dict from the store, read for ``owner``).

        A view is reused while the run's status, finish time and highest rowids are unchanged:
        any log added, deleted and re-added, or rewritten (``PUT /trace_log`` and feedback write
        a log anew) moves one of them. One case does not: a log rewritten in place by an upsert
        of the same ``trace_id`` after the run finished, or a rewrite of the run's very last log
        (SQLite then reuses its rowid) of a running run; such a view is refreshed when the run
        next changes.

        A finished run's view is made of the compact columns the store keeps with it
        (:meth:`~runner.store.Store.run_columns`, no scan of its rows) and is of their generation:
        any write to the run after it finished, an upsert in place included, is seen at once."""
        key = (owner, str(experiment["uuid"]))
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one build per run at a time; the others wait for it and reuse it
            version = self.version(store, experiment, owner)
            view = self._views.get(key)
            if view is not None and (view.version == version or self._fresh(view, experiment)):
                return view
            stored = store.run_columns(key[1], owner)
            if stored is None:
                view = RunView.build(store, experiment, version, owner)
            else:  # of the generation read: a write since then is seen by the next view
                version = (*self.version(store, experiment, owner)[:-1], stored.generation)
                view = RunView.of(experiment, version, stored)
            self._views.put(key, view)
            return view

    @staticmethod
    def _fresh(view: RunView, experiment: dict[str, Any]) -> bool:
        return experiment.get("status") == "running" and time.monotonic() - view.built_at < RUNNING_TTL


@dataclass
class Listing:
    """One run as the runs page lists it."""

    experiment: dict[str, Any]
    n_total: int
    n_errors: int
    #: per score: (mean, interval low, interval high, n scored); the interval is None when only
    #: the backend's pinned mean is known
    scores: dict[str, tuple[float | None, float | None, float | None, int | None]]
    duration: float | None
    cost: float
    #: whether the figures come from the run's rows (else from what the backend pinned)
    exact: bool = True


def listing(cache: RunCache, store: Store, experiment: dict[str, Any], owner: str) -> Listing:
    """What the runs page shows of a run: from its view when it is small or already read, else from
    what the backend recorded when it finished (one count query for its errors)."""
    n = int(experiment.get("num_samples") or 0)
    view = cache.peek(store, experiment, owner)
    if view is None and (n <= LIST_MAX_ROWS or experiment.get("status") == "running"):
        view = cache.get(store, experiment, owner)
    if view is not None:
        return Listing(
            experiment,
            view.n_total,
            view.n_errors,
            {k: (s.mean, s.ci_low, s.ci_high, s.n) for k, s in view.summaries.items()},
            view.duration,
            view.cost,
        )
    key, version = (owner, str(experiment["uuid"])), cache.version(store, experiment, owner)
    hit = cache.listings.get(key)
    if hit is not None and hit[0] == version:
        return hit[1]
    pinned = {p["var1"]: p["value"] for p in experiment.get("pinned_stats") or [] if p.get("operation") == "mean"}
    n_errors = store.find_roots(owner, experiment_uuid=experiment["uuid"], status="error", limit=0)[0]
    found = Listing(
        experiment,
        n,
        n_errors,
        {k: (v, None, None, None) for k, v in pinned.items() if k not in _NOT_SCORES},
        seconds_between(experiment.get("created_at"), experiment.get("finished_at")),
        float(pinned.get("Cost") or 0.0) * n,
        exact=False,
    )
    cache.listings.put(key, (version, found))
    return found
