"""Bounded concurrent execution of rows: a fixed pool of workers pulling rows lazily.

``n_workers`` coroutines pull ``(row, trial)`` items from one shared iterator, so rows are read
from the dataset only as fast as they are run and at most ``n_workers`` run at once. A sync
function runs, with its sync scorers, in one call on a thread pool of the same size (the
context is copied, so spans opened there find their row); an async function and async scorers
run on the loop, and its sync scorers on a pool kept between runs (:mod:`runner.pipeline.scorer_pool`),
or on the loop too when every one is marked cheap (:mod:`runner.inline`).

Stopping: ``stop()`` (first Ctrl-C) lets running rows end and starts no new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import inspect
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from runner.inline import runs_inline
from runner.pipeline import scorer_pool
from runner.pipeline.dataset import Row
from runner.pipeline.tracing import Span, TraceRun, reset_current, set_current
from runner.scoring import (
    Log,
    Score,
    ScorerFailure,
    call_scorer,
    call_scorer_sync,
    drop_duplicate_scores,
    merge_scores,
    unique_scorer_names,
)

__all__ = ["Collector", "Engine", "RowOutcome"]


@dataclass(slots=True)
class RowOutcome:
    """What one row-trial produced: its log for scorers and evals, and its wire logs."""

    row: Row
    trial: int
    log: Log
    wire: list[dict[str, Any]]


def is_async_callable(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


class Engine:
    """Runs one experiment's function and scorers over rows with bounded concurrency.

    ``timeout`` bounds each call of the function and of each scorer (seconds); a row past it is
    stored as an error ``timeout after N s`` and its worker moves on (a sync call that will not
    return is left behind on its own daemon thread). ``retries`` re-runs a row whose function
    raised or timed out, after an exponential backoff with jitter, and records the attempts.
    """

    def __init__(
        self,
        *,
        func: Callable[..., Any],
        func_name: str,
        make_kwargs: Callable[[dict[str, Any]], dict[str, Any]],
        scorers: Sequence[Callable[..., Any]],
        n_workers: int,
        experiment_uuid: str,
        project_name: str,
        collector: Collector,
        project_uuid: str | None = None,
        timeout: float | None = None,
        retries: int = 0,
        retry_backoff: float = 1.0,
    ) -> None:
        self.func = func
        self.func_name = func_name
        self.make_kwargs = make_kwargs
        self.is_async = is_async_callable(func)
        self.scorers = list(scorers)  # in the order given: it decides which repeated name gets _2
        named = list(zip(scorers, unique_scorer_names(scorers), strict=True))
        self.sync_scorers = [(s, name) for s, name in named if not is_async_callable(s)]
        self.async_scorers = [(s, name) for s, name in named if is_async_callable(s)]
        #: every sync scorer is cheap (runner.inline): an async row scores on the loop, no pool
        self.sync_inline = all(runs_inline(s) for s, _ in self.sync_scorers)
        self.project_uuid = project_uuid
        self.n_workers = n_workers
        self.experiment_uuid = experiment_uuid
        self.project_name = project_name
        self.collector = collector
        self.timeout = timeout
        self.retries = retries
        self.retry_backoff = retry_backoff
        self._stopping = False
        self._pool: ThreadPoolExecutor | None = None
        #: rows running now and when they started, for the watchdog and the interruption report
        self.running: dict[tuple[str, int], float] = {}
        #: when the last row finished (monotonic seconds)
        self.last_finished = time.monotonic()

    def stop(self) -> None:
        """Start no new rows; rows already running finish."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def root_trace_id(self, row_id: str, trial: int) -> str:
        """The root trace id of a row-trial: the same on every attempt and every resumed run.

        That makes each row-trial's log idempotent: a retry, a resend or a resume replaces it
        instead of adding a second one."""
        h = hashlib.blake2b(f"{self.experiment_uuid}/{row_id}/{trial}".encode(), digest_size=16).hexdigest()
        return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"  # uuid5-shaped

    # -- one row ------------------------------------------------------------------------------
    def _root(self, row: Row, trial: int) -> Span:
        run = TraceRun(self.experiment_uuid, self.project_name, row.target, self.project_uuid)
        root = Span(self.func_name, run, None, row.inputs, trace_id=self.root_trace_id(row.id, trial))
        root.metadata.update({"row_id": row.id, "row_index": row.index, "row_hash": row.hash, "trial": trial})
        return root

    def _timed_out(self, span: Span) -> None:
        span.status = "error"
        span.error = f"timeout after {self.timeout:g} s"

    def _invoke_sync(self, root: Span, kwargs: dict[str, Any], context: contextvars.Context) -> None:
        """Call the sync function for ``root``, within ``timeout`` if one is set."""
        if self.timeout is None:
            context.run(self._call_sync, root, kwargs)
            return
        done = threading.Event()

        def target() -> None:
            try:
                self._call_sync(root, kwargs)
            finally:
                done.set()

        threading.Thread(target=context.run, args=(target,), name="runner-row-call", daemon=True).start()
        if not done.wait(self.timeout):
            self._timed_out(root)
            root.finish()

    def _call_sync(self, root: Span, kwargs: dict[str, Any]) -> None:
        token = set_current(root)
        try:
            output = self.func(**kwargs)
        except Exception as exc:
            if root.end is None:
                root.fail(exc)
        else:
            if root.end is None:  # not timed out meanwhile
                root.output = output
        finally:
            reset_current(token)
            root.finish()

    def _score_sync(self, root: Span) -> tuple[list[Score], list[ScorerFailure]]:
        scores: list[Score] = []
        failures: list[ScorerFailure] = []
        if root.status != "success" or not self.sync_scorers:
            return scores, failures
        log = root.as_log()
        for s, name in self.sync_scorers:
            if self.timeout is None or runs_inline(s):
                got, failed = call_scorer_sync(s, log, name)
            else:
                got, failed = self._score_sync_timed(s, log, name)
            _note_sources(root, name, got)
            scores.extend(got)
            failures.extend(failed)
        return scores, failures

    def _score_sync_timed(
        self, scorer: Callable[..., Any], log: Log, name: str
    ) -> tuple[list[Score], list[ScorerFailure]]:
        box: list[tuple[list[Score], list[ScorerFailure]]] = []
        t = threading.Thread(target=lambda: box.append(call_scorer_sync(scorer, log, name)), daemon=True)
        t.start()
        t.join(self.timeout)
        if not box:
            return [], [ScorerFailure(name, f"timeout after {self.timeout:g} s")]
        return box[0]

    def _backoff(self, attempt: int) -> float:
        delay: float = min(30.0, self.retry_backoff * 2.0**attempt)
        return delay * (0.5 + random.random() / 2)

    async def _run_row_parts(
        self, row: Row, trial: int
    ) -> tuple[Row, int, Span, list[Score], list[ScorerFailure]]:
        """Run one row-trial of an async function (and its scorers) on the loop; the collecting
        task turns the parts into the row's outcome."""
        kwargs = self.make_kwargs(row.inputs)
        errors: list[str] = []
        for attempt in range(self.retries + 1):
            root = self._root(row, trial)
            token = set_current(root)
            try:
                if self.timeout is None:
                    root.output = await self.func(**kwargs)
                else:
                    root.output = await asyncio.wait_for(self.func(**kwargs), self.timeout)
            except asyncio.TimeoutError:
                if self.timeout is not None and time.time() - root.start >= self.timeout * 0.99:
                    self._timed_out(root)
                else:
                    root.fail(sys.exc_info()[1])  # type: ignore[arg-type]
            except Exception as exc:
                root.fail(exc)
            finally:
                reset_current(token)
                root.finish()
            if root.status == "success" or attempt == self.retries or self._stopping:
                break
            errors.append(_short(root.error))
            await asyncio.sleep(self._backoff(attempt))
        _record_attempts(root, errors)
        if self.sync_scorers and root.status == "success" and self.sync_inline:
            scores, failures = contextvars.copy_context().run(self._score_sync, root)
        elif self.sync_scorers and root.status == "success":
            assert self._pool is not None
            scores, failures = await asyncio.get_running_loop().run_in_executor(
                self._pool, contextvars.copy_context().run, self._score_sync, root
            )
        else:
            scores, failures = [], []
        if self.async_scorers and root.status == "success":
            more, more_failures = await self._score_async(root)
            scores += more
            failures += more_failures
        return row, trial, root, scores, failures

    def run_row_sync(
        self, row: Row, trial: int, loop: asyncio.AbstractEventLoop, context: contextvars.Context
    ) -> RowOutcome:
        """Run one row-trial of a sync function and its scorers, on a worker thread.

        ``context`` is the caller's context: each attempt runs in a copy of it, so context
        variables the caller set reach the function, and spans of one row stay in that row.
        """
        kwargs = self.make_kwargs(row.inputs)
        errors: list[str] = []
        for attempt in range(self.retries + 1):
            root = self._root(row, trial)
            self._invoke_sync(root, kwargs, context.copy())
            if root.status == "success" or attempt == self.retries or self._stopping:
                break
            errors.append(_short(root.error))
            time.sleep(self._backoff(attempt))
        _record_attempts(root, errors)
        scores, failures = self._score_sync(root)
        if self.async_scorers and root.status == "success":
            more, more_failures = asyncio.run_coroutine_threadsafe(self._score_async(root), loop).result()
            scores += more
            failures += more_failures
        return self._outcome(row, trial, root, scores, failures)

    async def _score_async(self, root: Span) -> tuple[list[Score], list[ScorerFailure]]:
        scores: list[Score] = []
        failures: list[ScorerFailure] = []
        log = root.as_log()
        for s, name in self.async_scorers:
            if self.timeout is None:
                got, failed = await call_scorer(s, log, name)
            else:
                try:
                    got, failed = await asyncio.wait_for(call_scorer(s, log, name), self.timeout)
                except asyncio.TimeoutError:
                    got, failed = [], [ScorerFailure(name, f"timeout after {self.timeout:g} s")]
            _note_sources(root, name, got)
            scores.extend(got)
            failures.extend(failed)
        return scores, failures

    def _outcome(
        self, row: Row, trial: int, root: Span, scores: list[Score], failures: list[ScorerFailure]
    ) -> RowOutcome:
        scores, clashes = drop_duplicate_scores(scores)
        if clashes:
            failures = [*failures, *clashes]
        root.scores.extend(scores)
        if failures:
            root.score_errors.update({f.name: f.error for f in failures})
        log = root.as_log()
        children = list(root.run.children)  # a call left behind by a timeout may still add some
        if children:
            # children's scores roll up to the root (the backend does the same for what it stores)
            own = [{"name": s.name, "score": s.score} for s in log.scores]
            merged = merge_scores(own, [sc for c in children for sc in c.get("scores") or ()])
            log.scores.extend(Score(m["name"], m["score"]) for m in merged[len(own):])
            # scorers of child spans (@trace(eval_funcs=...)) that failed: the row's error for
            # that score, unless another call of the span scored it
            scored = {s.name for s in log.scores}
            for c in children:
                for k, err in ((c.get("metadata") or {}).get("scorer_errors") or {}).items():
                    if k not in scored and k not in root.score_errors:
                        root.score_errors[k] = log.score_errors[k] = err  # stored with the root too
        self.last_finished = time.monotonic()
        return RowOutcome(row, trial, log, [root.to_wire(), *children])

    async def watch(self, stall_after: float, report: Callable[[float, list[tuple[str, int, float]]], None]) -> None:
        """Call ``report(idle_seconds, running)`` whenever no row has finished for ``stall_after``
        seconds while rows are running (once per stall)."""
        reported_at = 0.0
        while True:
            await asyncio.sleep(min(1.0, stall_after / 4))
            now = time.monotonic()
            idle = now - self.last_finished
            if idle >= stall_after and self.running and reported_at != self.last_finished:
                reported_at = self.last_finished
                report(idle, sorted(((r, t, now - s) for (r, t), s in list(self.running.items())), key=lambda x: -x[2]))


    # -- the pool -----------------------------------------------------------------------------
    async def run(self, items: Iterator[tuple[Row, int]]) -> None:
        """Run every item with at most ``n_workers`` at once; returns when all are done or stopped."""
        if self.is_async:
            await self._run_async(items)
        else:
            await self._run_threads(items)

    async def _run_async(self, items: Iterator[tuple[Row, int]]) -> None:
        if self.sync_scorers and not self.sync_inline:
            self._pool = scorer_pool.take(self.n_workers)  # an earlier run's threads, if idle
        finished = False
        # Workers hand finished rows to one collecting task and go straight on to their next row:
        # turning a row into its logs and tallying it happens while rows wait on I/O, not between
        # one row's end and the next one's start.
        done: asyncio.Queue[Any] = asyncio.Queue(maxsize=4 * self.n_workers)
        collecting = asyncio.create_task(self._collect(done))
        try:
            workers = [asyncio.create_task(self._worker(items, done)) for _ in range(self.n_workers)]
            try:
                await asyncio.gather(*workers)
            except BaseException:
                self._stopping = True
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                raise
            finally:
                await done.put(_END)
                await collecting
            finished = True
        finally:
            if self._pool is not None:
                scorer_pool.give_back(self._pool, reuse=finished)

    async def _worker(self, items: Iterator[tuple[Row, int]], done: asyncio.Queue[Any]) -> None:
        while not self._stopping:
            try:
                row, trial = next(items)
            except StopIteration:
                return
            key = (row.id, trial)
            self.running[key] = time.monotonic()
            try:
                parts = await self._run_row_parts(row, trial)
            finally:
                self.running.pop(key, None)
            await done.put(parts)

    async def _collect(self, done: asyncio.Queue[Any]) -> None:
        while True:
            parts = await done.get()
            if parts is _END:
                return
            await self.collector.add(self._outcome(*parts))

    async def _run_threads(self, items: Iterator[tuple[Row, int]]) -> None:
        """Sync functions: ``n_workers`` threads each pull one row at a time, run it whole, and
        hand it straight to the collector.

        A thread hop per row through an executor, or a loop that collects every row, costs
        more than a no-op row (the loop and the threads fight over the GIL); threads that pull
        rows and pass finished ones on themselves do not. A thread never holds rows it has not
        started, so an idle thread always finds the next row; batching finished rows for the
        store happens in one place, the backend's :class:`runner.backends.batching.LogBuffer`.
        """
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        lock = threading.Lock()
        failures: list[BaseException] = []
        add = self.collector.add_threadsafe
        running = self.running

        def work() -> None:
            outcome: RowOutcome | None = None
            try:
                while True:
                    # one lock round trip per row, for handing on the last row and taking the
                    # next: more would make the threads queue on the locks and then on the GIL
                    with lock:
                        if outcome is not None:
                            add([outcome], loop)
                            outcome = None
                        item = None if self._stopping else next(items, None)
                    if item is None:
                        return
                    row, trial = item
                    key = (row.id, trial)
                    running[key] = time.monotonic()
                    try:
                        outcome = self.run_row_sync(row, trial, loop, context)
                    finally:
                        running.pop(key, None)
            except BaseException as exc:  # stops the run; raised on the loop below
                self._stopping = True
                failures.append(exc)
                if outcome is not None:  # finished before the failure: still handed on
                    with contextlib.suppress(BaseException), lock:
                        add([outcome], loop)

        threads = [
            threading.Thread(target=work, name=f"runner-row-{i}", daemon=True) for i in range(self.n_workers)
        ]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    await asyncio.sleep(0.01)
        except BaseException:
            self._stopping = True
            raise
        await self.collector.drain()
        if failures:
            raise failures[0]


class Collector(Protocol):
    """Receives finished rows: on the loop (``add``) or from worker threads (``add_threadsafe``)."""

    async def add(self, outcome: RowOutcome) -> None: ...

    def add_threadsafe(self, outcomes: list[RowOutcome], loop: asyncio.AbstractEventLoop) -> None: ...

    async def drain(self) -> None: ...


def _note_sources(root: Span, scorer: str, got: list[Score]) -> None:
    """Record in the row's metadata (``score_sources``: score -> scorer) the scores a scorer
    returned under another name, so that its failures elsewhere count against those scores."""
    if got and (len(got) > 1 or got[0].name != scorer):
        sources = root.metadata.setdefault("score_sources", {})
        for s in got:
            sources[s.name] = scorer


def _short(error: str | None) -> str:
    """The last line of a traceback: what went wrong, without the stack."""
    return (error or "").strip().splitlines()[-1] if error else ""


def _record_attempts(root: Span, errors: list[str]) -> None:
    if errors:
        root.metadata["attempts"] = len(errors) + 1
        root.metadata["retry_errors"] = errors


_END = object()

#: maps a hex digit onto the RFC 4122 variant digits 8-b
_VARIANT = {d: "89ab"[int(d, 16) % 4] for d in "0123456789abcdef"}
