"""One execution of a plan: the dataset, the engine, the executor, and finishing.

``Experiment.run()``/``arun()`` resolve the plan (:class:`runner.pipeline.plan.RunPlan`) and
open its backend, then hand over to :class:`Run`, which streams the rows through the engine on
the plan's executor (finished rows go one way, to the :class:`runner.pipeline.sink.Sink`),
resumes an interrupted run when asked (:mod:`runner.pipeline.resume`), computes the
dataset-level evals and finishes the experiment on the backend. Orchestration only.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import operator
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from runner.backends.base import Backend
from runner.errors import DatasetError, FunctionError, RunnerError
from runner.options import RunOptions
from runner.pipeline.checks import warn_missing_target
from runner.pipeline.dataset import Row, RowSource, check_columns, check_unique_ids
from runner.pipeline.engine import Engine, is_async_callable
from runner.pipeline.heap import heap_frozen
from runner.pipeline.plan import RunPlan
from runner.pipeline.resume import open_shared_run, records, resume
from runner.pipeline.shards import shard_items
from runner.pipeline.sink import Sink
from runner.pipeline.tracing import current_prompt, current_target
from runner.results.format import interval
from runner.results.result import Result, Tally, run_stats
from runner.scoring import Score, normalise, scorer_name

__all__ = ["Run"]


class Run:
    """One execution of a plan: dataset, engine, executor, finishing."""

    active: ClassVar[dict[asyncio.AbstractEventLoop, Run]] = {}

    def __init__(self, plan: RunPlan, backend: Backend) -> None:
        self.plan = plan
        self.opts = plan.options
        self.backend = backend
        self.tally = Tally(keep_logs=bool(plan.dataset_evals))
        self.sink = Sink(backend, self.tally)
        self.engine: Engine | None = None
        self.interrupts = 0
        self.task: asyncio.Task[Any] | None = None
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

    async def execute(self) -> Result:
        plan, opts = self.plan, self.opts
        func_name = plan.func_name
        from runner.pipeline.executors import resolve_executor
        from runner.prefetch import SUMMARY_MODULES, prefetch

        prefetch(*SUMMARY_MODULES)  # the summary's imports load while the rows run

        self.executor = resolve_executor(opts.executor)  # a bad executor fails before anything is created
        rows = await records(plan, self.backend)
        length = operator.length_hint(rows, -1)  # a stored dataset's rows come as a list
        source = RowSource(rows, limit=opts.limit)
        first = source.peek()
        if first is None:
            raise DatasetError(f"Experiment {plan.name!r}: the dataset has no rows")
        make_kwargs = check_columns(plan.func, [c for c in first if c != "target"], func_name)
        if "id" in first and not isinstance(plan.data, Iterator):
            # a repeated id would merge two rows in the store: refuse before any row runs
            check_unique_ids(itertools.islice(await records(plan, self.backend), opts.limit))
        warn_missing_target(first, plan.scorers, f"Experiment {plan.name!r}")

        current_prompt.set(plan.prompt)  # for completion(); None clears an earlier run's in this context
        done: set[tuple[str, int]] = set()
        if opts.shard is not None or opts.finish_only:
            info, done = await open_shared_run(plan, self.backend, self.tally)
        elif opts.resume:
            assert opts.run_name is not None
            info, done = await resume(plan, self.backend, self.tally, opts.run_name)
        else:
            info = await self.backend.create_experiment(
                project_name=plan.project_name,
                name=plan.name,
                run_name=opts.run_name,
                metadata=plan.metadata,
            )
        uuid, run_name = info["uuid"], info["run_name"]
        started = time.perf_counter()
        self.engine = Engine(
            func=plan.func,
            func_name=func_name,
            make_kwargs=make_kwargs,
            scorers=list(plan.scorers),
            n_workers=_worker_count(opts, plan.data, len(done), is_async_callable(plan.func)),
            experiment_uuid=uuid,
            project_name=plan.project_name,
            project_uuid=info.get("project_uuid"),
            collector=self.sink,
            timeout=opts.timeout,
            retries=opts.retries,
            retry_backoff=opts.retry_backoff,
        )
        items: Iterator[tuple[Row, int]] = (
            (row, t) for row in source for t in range(opts.n_trials) if (row.id, t) not in done
        )
        if opts.shard is not None or opts.finish_only:
            items = iter(()) if opts.finish_only else shard_items(items, opts.shard)
        self.sink.progress = _progress(plan.name, opts, run_name, plan.data, length)
        loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        Run.active[loop] = self
        sigint = _install_sigint(loop, self.interrupt)
        current_target.set(plan.target)  # for completion()
        watchdog = asyncio.create_task(self.engine.watch(opts.stall_after, self._stalled))
        status = "completed"
        failure: BaseException | None = None
        try:
            with heap_frozen():
                await self.executor.run(self.engine, items, resources=plan.resources, target=plan.target)
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
            if self.sink.progress is not None:
                self.sink.progress.close()
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
        spooled, spool_path = self.backend.spooled_for(uuid)
        if spool_path is not None and status == "completed":
            status = "spooled"
        result = Result(
            name=plan.name,
            experiment_uuid=uuid,
            run_name=run_name,
            project_name=plan.project_name,
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
            _rows_loader=self.backend.rows_loader(uuid),
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
        for ev in self.plan.dataset_evals:
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
                from runner.results.stats import dataset_stat_interval

                low, high, method = dataset_stat_interval(ev, logs, row_ids)
                if method is not None:
                    cis[scores[0].name] = (low, high)
                    self.ci_methods[scores[0].name] = method
        return values, details, errors, cis


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
