"""One execution of an experiment: the dataset, the engine, the tally, and finishing.

``Experiment.run()``/``arun()`` resolve options and the backend, then hand over to :class:`Run`,
which streams the rows through the engine, collects finished rows (the engine's collector),
resumes an interrupted run when asked, computes the dataset-level evals and finishes the
experiment on the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import operator
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from runner.backend import Backend, EmbeddedBackend
from runner.checks import warn_missing_target
from runner.client_prompts import current_prompt, load_run_prompt
from runner.dataset import (
    Row,
    RowSource,
    check_columns,
    check_unique_ids,
    collection_records,
    is_dataset_file,
    iter_records,
)
from runner.engine import Engine, RowOutcome, is_async_callable
from runner.errors import ConfigError, DatasetError, FunctionError, NotFoundError, RunnerError
from runner.formatting import interval
from runner.options import RunOptions
from runner.result import Result, Tally, mapping_str, run_stats
from runner.scoring import Log, Score, normalise, scorer_name
from runner.settings import Settings
from runner.tracing import current_backend

if TYPE_CHECKING:
    from runner.experiment import Experiment

__all__ = ["Run"]


class Run:
    """One execution of an experiment: dataset, engine, tally, finishing."""

    active: ClassVar[dict[asyncio.AbstractEventLoop, Run]] = {}

    def __init__(self, exp: Experiment, opts: RunOptions, backend: Backend, settings: Settings) -> None:
        self.exp = exp
        self.opts = opts
        self.backend = backend
        self.settings = settings
        self.tally = Tally(keep_logs=bool(exp._dataset_evals))
        self.engine: Engine | None = None
        self.interrupts = 0
        self.task: asyncio.Task[Any] | None = None
        self.progress: Any = None
        self._lock = threading.Lock()
        self._log_from_thread = getattr(backend, "log_from_thread", None)
        self.stalls: list[str] = []
        #: dataset-level eval name -> how its interval was computed
        self.ci_methods: dict[str, str] = {}

    def interrupt(self) -> None:
        """First call: start no new rows. Second: stop at once."""
        self.interrupts += 1
        if self.interrupts == 1:
            if self.engine is not None:
                self.engine.stop()
            print(
                "\nInterrupted: letting running rows finish (Ctrl-C again to stop at once)...",
                file=sys.stderr,
                flush=True,
            )
        elif self.task is not None:
            self.task.cancel()

    async def _records(self) -> Iterator[dict[str, Any]]:
        data = self.exp.data
        if isinstance(data, bool):
            raise DatasetError(f"data={data!r} is not a dataset")
        if isinstance(data, int) or (isinstance(data, str) and not is_dataset_file(data)):
            try:
                collection = await self.backend.load_dataset(data)
            except NotFoundError as exc:  # a misspelt name is a config error (exit 2), like a missing file
                raise DatasetError(
                    f"{exc}; `python -m runner datasets list` shows the stored datasets, and a file path needs "
                    "its suffix (.csv, .jsonl, .json)"
                ) from exc
            return iter(collection_records(collection))
        return iter_records(data)

    async def execute(self) -> Result:
        exp, opts = self.exp, self.opts
        func_name = getattr(exp.func, "__name__", type(exp.func).__name__)
        from runner.executors import resolve_executor
        from runner.prefetch import SUMMARY_MODULES, prefetch

        prefetch(*SUMMARY_MODULES)  # the summary's imports load while the rows run

        self.executor = resolve_executor(opts.executor)  # a bad executor fails before anything is created
        records = await self._records()
        length = operator.length_hint(records, -1)  # a stored dataset's rows come as a list
        source = RowSource(records, limit=opts.limit)
        first = source.peek()
        if first is None:
            raise DatasetError(f"Experiment {exp.name!r}: the dataset has no rows")
        make_kwargs = check_columns(exp.func, [c for c in first if c != "target"], func_name)
        if "id" in first and not isinstance(exp.data, Iterator):
            # a repeated id would merge two rows in the store: refuse before any row runs
            check_unique_ids(itertools.islice(await self._records(), opts.limit))
        warn_missing_target(first, exp._evals, f"Experiment {exp.name!r}")

        project_name = exp.project_name or self.settings.project_name
        route = _backend_route(self.backend, self.exp, self.settings)
        metadata = mapping_str(exp.metadata or {})
        # the prompt version (issue 23): fixed for the whole run, recorded in its metadata
        prompt = None if exp.prompt is None else await asyncio.to_thread(load_run_prompt, exp.prompt, route)
        current_prompt.set(prompt)  # for completion(); None clears an earlier run's in this context
        if prompt is not None:
            metadata.update(mapping_str(prompt.metadata))
        done: set[tuple[str, int]] = set()
        if opts.shard is not None or opts.finish_only:
            from runner.shards import open_shared_run

            info, done = await open_shared_run(self, project_name, opts)
        elif opts.resume:
            assert opts.run_name is not None
            info, done = await self._resume(project_name, opts.run_name)
        else:
            info = await self.backend.create_experiment(
                project_name=project_name,
                name=exp.name,
                run_name=opts.run_name,
                metadata=metadata,
            )
        uuid, run_name = info["uuid"], info["run_name"]
        started = time.perf_counter()
        self.engine = Engine(
            func=exp.func,
            func_name=func_name,
            make_kwargs=make_kwargs,
            scorers=exp._evals,
            n_workers=_worker_count(opts, exp.data, len(done), is_async_callable(exp.func)),
            experiment_uuid=uuid,
            project_name=exp.project_name or self.settings.project_name,
            project_uuid=info.get("project_uuid"),
            collector=self,
            timeout=opts.timeout,
            retries=opts.retries,
            retry_backoff=opts.retry_backoff,
        )
        items: Iterator[tuple[Row, int]] = (
            (row, t) for row in source for t in range(opts.n_trials) if (row.id, t) not in done
        )
        if opts.shard is not None or opts.finish_only:
            from runner.shards import shard_items

            items = iter(()) if opts.finish_only else shard_items(items, opts.shard)
        self.progress = _progress(exp.name, opts, run_name, exp.data, length)
        loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        Run.active[loop] = self
        sigint = _install_sigint(loop, self.interrupt)
        current_backend.set(route)  # for completion()
        watchdog = asyncio.create_task(self.engine.watch(opts.stall_after, self._stalled))
        status = "completed"
        failure: BaseException | None = None
        try:
            await self.executor.run(
                self.engine, items, resources=exp.resources, route=_backend_route(self.backend, exp, self.settings)
            )
        except asyncio.CancelledError:
            status = "failed"
            failure = KeyboardInterrupt()
            if self.task is not None:
                self.task.uncancel()
        except BaseException as exc:
            status, failure = "failed", exc
        finally:
            watchdog.cancel()
            Run.active.pop(loop, None)
            if sigint:
                loop.remove_signal_handler(signal.SIGINT)
            if self.progress is not None:
                self.progress.close()
        rows_took = time.perf_counter() - started  # the run's own time: its rows, not what follows
        interrupted = self.engine.stopping or isinstance(failure, KeyboardInterrupt)
        if interrupted:
            status = "failed"
        still_running = list(self.engine.running)

        # a shard holds some rows only: dataset-level stats come once, from every row, at `finish`
        dls, details, dl_errors, dl_ci = ({}, {}, {}, {}) if opts.shard is not None else self._dataset_level()
        stats_ok = True
        try:
            if opts.shard is not None:  # a shard never finishes the run: `finish` does, once
                await self.backend.flush()
            else:
                await self.backend.finish_experiment(
                    uuid,
                    status=status,
                    dataset_level_stats=[
                        {
                            "name": s.name,
                            "score": s.score,
                            "reason": _with_ci(s.reason, dl_ci.get(s.name), self.ci_methods.get(s.name)),
                        }
                        for s in details.values()
                    ],
                    dataset_level_errors=dl_errors,
                    scorer_errors=dict(self.tally.scorer_failure_examples),
                )
        except RunnerError as exc:
            stats_ok = False
            # the run cannot finish as it is (results that could not be stored, a full disk):
            # it ends as failed, never left as running, and the error says why
            with contextlib.suppress(Exception):
                await self.backend.finish_experiment(uuid, status="failed", dataset_level_stats=[])
            if failure is None:
                raise
            if isinstance(failure, KeyboardInterrupt):
                raise exc from None
        # logs (or the finish call) the server could not take yet wait in the spool: say so
        spooled_for = getattr(self.backend, "spooled_for", None)
        spooled, spool_path = spooled_for(uuid) if spooled_for is not None else (0, None)
        if spool_path is not None and status == "completed":
            status = "spooled"
        result = Result(
            name=exp.name,
            experiment_uuid=uuid,
            run_name=run_name,
            project_name=exp.project_name or self.settings.project_name,
            status=status,
            scores=self.tally.summaries(),
            dataset_level_stats=dls,
            stats=run_stats(self.tally),
            n_total=self.tally.n_total,
            n_errors=self.tally.n_errors,
            location=self.backend.location,
            duration=rows_took,
            interrupted=interrupted,
            dataset_level_details=details,
            dataset_level_ci=dl_ci,
            dataset_level_errors=dl_errors,
            scorer_errors=dict(self.tally.scorer_failure_examples),
            scorer_scores={
                k: sorted(v) for k, v in self.tally.produces.items() if k in self.tally.scorer_failure_examples
            },
            still_running=still_running,
            stalls=list(self.stalls),
            resumed_rows=len(done),
            spooled=spooled,
            spool_path=spool_path,
            _rows_loader=_rows_loader(exp, self.settings, uuid, self.backend),
        )
        if failure is not None and not isinstance(failure, KeyboardInterrupt):
            raise failure
        if not opts.quiet:
            print(result.summary_text(), file=sys.stderr if interrupted else sys.stdout, flush=True)
        if not stats_ok:  # pragma: no cover - only with a failure already being raised
            pass
        return result

    def _stalled(self, idle: float, running: list[tuple[str, int, float]]) -> None:
        shown = ", ".join(f"row {r} trial {t} ({age:.0f} s)" for r, t, age in running[:10])
        more = f" and {len(running) - 10} more" if len(running) > 10 else ""
        message = f"no row finished for {idle:.0f} s; still running: {shown}{more}"
        self.stalls.append(message)
        print(f"\nwarning: {message}", file=sys.stderr, flush=True)

    async def _resume(
        self, project_name: str, run_name: str, only: Callable[[str], bool] | None = None
    ) -> tuple[dict[str, Any], set[tuple[str, int]]]:
        """Reopen run ``run_name``: which row-trials are done, and their results in the tally.

        Rows stored as successful are kept (errored ones too with ``keep_errors``); the rest are
        deleted so they run again. A dataset whose rows changed since is refused."""
        exp = self.exp
        info = await self.backend.find_run(project_name, run_name)
        if info is None:
            raise ConfigError(
                f"no run called {run_name!r} in project {project_name!r} to resume; "
                "`python -m runner list` shows the runs"
            )
        if info["name"] != exp.name:
            raise ConfigError(f"run {run_name!r} belongs to experiment {info['name']!r}, not {exp.name!r}")
        stored = await self.backend.experiment_rows(info["uuid"])
        if only is not None:  # a shard: its own rows only
            stored = [r for r in stored if only(str((r.get("metadata") or {}).get("row_id")))]
        current = await self._scan()
        changed = sorted(
            {
                str(r["metadata"].get("row_id"))
                for r in stored
                if r["metadata"].get("row_id") in current
                and r["metadata"].get("row_hash") not in (None, current[r["metadata"]["row_id"]][0])
            }
        )
        gone = sorted({str(r["metadata"].get("row_id")) for r in stored} - set(current))
        if changed or gone:
            parts = []
            if changed:
                parts.append(f"{len(changed)} row(s) changed (e.g. row {changed[0]})")
            if gone:
                parts.append(f"{len(gone)} stored row(s) are no longer in the data (e.g. row {gone[0]})")
            raise DatasetError(
                f"cannot resume run {run_name!r}: the dataset changed since it ran: {'; '.join(parts)}. "
                "Start a new run instead"
            )
        done: set[tuple[str, int]] = set()
        rerun: list[str] = []
        for r in stored:
            meta = r.get("metadata") or {}
            key = (str(meta.get("row_id")), int(meta.get("trial", 0)))
            if key in done:  # pragma: no cover - ids are unique per row-trial
                continue
            if r.get("status") == "success" or self.opts.keep_errors:
                done.add(key)
                log = _stored_log(r, current[key[0]][1])
                self.tally.add(log, key[0], [r])
            else:
                rerun.append(r["trace_id"])
        if rerun:
            await self.backend.delete_traces(info["uuid"], rerun)
        return info, done

    async def _scan(self) -> dict[str, tuple[str, Any]]:
        """Row id -> (content hash, target) of every row of the data, read once more."""
        data = self.exp.data
        if isinstance(data, Iterator):
            raise ConfigError(
                "resume needs data that can be read again (a file, a list, a DataFrame or a stored dataset), "
                "not a one-shot iterator"
            )
        source = RowSource(await self._records(), limit=self.opts.limit)
        return {row.id: (row.hash, row.target) for row in source}

    # -- Collector: finished rows go to the tally, the backend and the progress bar -----------
    # One row at a time: the backend's LogBuffer is the one place logs are batched (by size and
    # by age), so a finished row reaches the store within a fraction of a second and the bar
    # moves per row.
    async def add(self, outcome: RowOutcome) -> None:
        self.tally.add(outcome.log, outcome.row.id, outcome.wire)
        await self.backend.log(outcome.wire)
        if self.progress is not None:
            self.progress.update(1)

    def add_threadsafe(self, outcomes: list[RowOutcome], loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            for outcome in outcomes:
                self.tally.add(outcome.log, outcome.row.id, outcome.wire)
            if self.progress is not None:
                self.progress.update(len(outcomes))
        wire = outcomes[0].wire if len(outcomes) == 1 else [w for o in outcomes for w in o.wire]
        # may block while the backend is far behind: the backpressure on worker threads
        log_from_thread = self._log_from_thread
        if log_from_thread is not None:
            log_from_thread(wire, loop)
        else:
            asyncio.run_coroutine_threadsafe(self.backend.log(wire), loop).result()

    async def drain(self) -> None:
        """Nothing waits here: rows were handed on as they finished."""

    def _dataset_level(
        self,
    ) -> tuple[dict[str, float], dict[str, Score], dict[str, str], dict[str, tuple[float | None, float | None]]]:
        values: dict[str, float] = {}
        details: dict[str, Score] = {}
        errors: dict[str, str] = {}
        cis: dict[str, tuple[float | None, float | None]] = {}
        # in row order, not finishing order: the seeded intervals then depend on the data only
        tally = self.tally
        order = sorted(range(len(tally.logs)), key=lambda i: (tally.row_ids[i], tally.logs[i].metadata.get("trial", 0)))
        logs = [self.tally.logs[i] for i in order]
        row_ids = [self.tally.row_ids[i] for i in order]
        for ev in self.exp._dataset_evals:
            name = getattr(ev, "name", None) or scorer_name(ev)
            try:
                got = ev(logs)
                if inspect.isawaitable(got):
                    raise FunctionError("dataset-level evals must be sync functions")
                scores = normalise(name, got)
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            for s in scores:
                values[s.name] = s.score
                details[s.name] = s
            if len(scores) == 1:
                from runner.stats import dataset_stat_interval

                low, high, method = dataset_stat_interval(ev, logs, row_ids)
                if method is not None:
                    cis[scores[0].name] = (low, high)
                    self.ci_methods[scores[0].name] = method
        return values, details, errors, cis


def _stored_log(r: Mapping[str, Any], target: Any) -> Log:
    """The scorer's view of a stored root log (for a resumed run's summary and dataset-level evals)."""
    meta = r.get("metadata") or {}
    output = r.get("output")
    if meta.get("output_is_json") and isinstance(output, str):
        with contextlib.suppress(ValueError):
            output = json.loads(output)
    return Log(
        inputs=r.get("inputs") or {},
        output=output,
        target=target,
        status=r.get("status") or "success",
        error=r.get("error"),
        latency=float(r.get("latency") or 0.0),
        trace_id=r["trace_id"],
        metadata=meta,
        scores=[Score(s["name"], float(s["score"]), s.get("reason")) for s in r.get("scores") or []],
        score_errors=dict(meta.get("scorer_errors") or {}),
    )


def _backend_route(backend: Backend, exp: Experiment, settings: Settings) -> dict[str, str | None]:
    if isinstance(backend, EmbeddedBackend):
        return {"db_path": backend.store.path}
    return {
        "base_url": getattr(backend, "base_url", None) or exp.base_url or settings.base_url,
        "api_key": getattr(backend, "api_key", None) or exp.api_key or settings.api_key,
    }


def _with_ci(
    reason: str | None, ci: tuple[float | None, float | None] | None, method: str | None = None
) -> str | None:
    """The stored reason of a dataset-level stat, with its interval and how it was computed
    appended (Parea's schema has no field for it, and readers of the stored stats should see it)."""
    if ci is None or ci[0] is None or ci[1] is None:
        return reason
    how = "bootstrap over rows" if method in (None, "bootstrap") else method
    text = f"95% CI {interval(ci[0], ci[1])} ({how})"
    return f"{reason}; {text}" if reason else text


def _install_sigint(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        loop.add_signal_handler(signal.SIGINT, handler)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


#: the most worker threads (sync functions) and tasks (async ones) a run starts
MAX_THREADS = 1024
MAX_TASKS = 100_000


def _known_rows(opts: RunOptions, data: Any, length: int = -1) -> int | None:
    """How many rows the data has, when that is known without reading it (``limit`` applied;
    ``length``: the records' length hint, when the data itself has no length)."""
    known = len(data) if hasattr(data, "__len__") and not isinstance(data, (str, bytes)) else None
    if known is None and length >= 0:
        known = length
    if opts.limit is not None and known is not None:
        return min(opts.limit, known)
    return known if known is not None else opts.limit


def _worker_count(opts: RunOptions, data: Any, n_done: int, is_async: bool) -> int:
    """``n_workers``, but never more than the row-trials left to run, nor more than the sane
    maximum (said on stderr when ``n_workers`` asks for more)."""
    n = opts.n_workers
    cap = MAX_TASKS if is_async else MAX_THREADS
    if n > cap:
        kind = "async tasks" if is_async else "threads"
        print(
            f"warning: n_workers={n} is more than a run can use; starting at most {cap} {kind}. "
            "For more concurrency than that, use an async function or an executor across machines",
            file=sys.stderr,
            flush=True,
        )
        n = cap
    rows = _known_rows(opts, data)
    if rows is not None:
        n = min(n, max(1, rows * opts.n_trials - n_done))
    return n


def _progress(name: str, opts: RunOptions, run_name: str, data: Any, length: int = -1) -> Any:
    """A progress bar in a notebook or on a terminal; none in logs and pipes, where it is noise.
    Its total is known whenever the data has a length (``length``: the records' length hint)."""
    if opts.quiet:
        return None
    tqdm_cls = _tqdm_class()
    if tqdm_cls.__module__ == "tqdm.std" and not sys.stderr.isatty():
        return None
    rows = _known_rows(opts, data, length)
    total = None if rows is None else rows * opts.n_trials
    return tqdm_cls(total=total, desc=f"{name} [{run_name}]", unit="row", mininterval=0.2, leave=False)


def _tqdm_class() -> Any:
    if "ipykernel" in sys.modules:
        try:
            import IPython

            ip = IPython.get_ipython()  # type: ignore[attr-defined,no-untyped-call]
            if ip is not None and "IPKernelApp" in ip.config:
                import ipywidgets  # noqa: F401
                from tqdm.notebook import tqdm as tqdm_nb

                return tqdm_nb
        except Exception:
            pass
    from tqdm import tqdm

    return tqdm


def _rows_loader(
    exp: Experiment, settings: Settings, uuid: str, backend: Backend
) -> Callable[[], list[dict[str, Any]]]:
    if isinstance(backend, EmbeddedBackend):
        path = backend.store.path

        def load() -> list[dict[str, Any]]:
            from runner.store import Store

            store = Store(path)
            try:
                return store.experiment_rows(uuid)
            finally:
                store.close()

        return load
    base_url = exp.base_url or settings.base_url or ""
    api_key = exp.api_key or settings.api_key

    def load_http() -> list[dict[str, Any]]:
        from runner.client_datasets import fetch_experiment_rows

        return fetch_experiment_rows(base_url, api_key, uuid)

    return load_http


