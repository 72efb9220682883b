"""``Experiment``: what to run, and ``run()`` / ``arun()`` to run it.

>>> from runner import Experiment
>>> from evals import exact_match
>>> exp = Experiment(name="qa", data=[{"question": "2+2", "target": "4"}],
...                  func=lambda question: "4", evals=[exact_match])
>>> result = exp.run(run_name="baseline-1")        # doctest: +SKIP
>>> result.scores["exact_match"].mean               # doctest: +SKIP
1.0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError, FunctionError
from runner.options import RUN_OPTIONS, RunOptions, check_positive_int, check_seconds
from runner.scoring import reject_factory, validate_scorers
from runner.settings import Settings

# The engine, the store and asyncio load when an experiment runs, not when runner is imported.
if TYPE_CHECKING:
    from runner.backends.base import Backend
    from runner.backends.target import Target
    from runner.pipeline.plan import RunPlan
    from runner.results.result import Result

__all__ = ["Experiment", "afinish", "finish"]


@dataclass
class Experiment:
    """An evaluation: a dataset, a function to run on each row, and the scorers to apply.

    ``data`` is a list of dicts, a pandas DataFrame, a path to a .csv/.jsonl/.json file, any
    iterable of dicts, or the name (or integer id) of a dataset stored on the backend. Each row's
    columns except ``target`` are passed to ``func`` as keyword arguments.

    ``evals`` are per-row scorers ``f(log) -> float | bool | Score | list[Score] | None``;
    ``dataset_level_evals`` take the list of all root logs (``evals.dataset`` has ready ones).
    Results go to the embedded SQLite store unless ``base_url`` (or ``PAREA_BASE_URL``) names
    a Parea-compatible server.

    Limits: ``timeout`` seconds per row (and per scorer call) — a row past it is stored as the
    error ``timeout after N s``; ``retries`` re-runs a row whose function raised or timed out,
    with exponential backoff from ``retry_backoff`` seconds; ``stall_after`` seconds without any
    row finishing makes the run name the rows still running.

    ``fail_under``, ``max_error_rate`` and ``strict`` are the command line's gates
    (``--fail-under`` ...); ``result.gates`` says which passed (a failed gate does not raise).

    ``otlp_endpoint`` additionally sends the finished run's spans, with each score as a
    ``gen_ai.evaluation.result`` event, to an OpenTelemetry collector (``pip install 'runner[otel]'``).
    """

    name: str
    data: Any
    func: Callable[..., Any]
    evals: Sequence[Callable[..., Any]] = ()
    dataset_level_evals: Sequence[Callable[..., Any]] = ()
    n_trials: int = 1
    n_workers: int | None = None
    metadata: Mapping[str, Any] | None = None
    project_name: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    db: str | Path | None = None
    timeout: float | None = None
    retries: int = 0
    retry_backoff: float = 1.0
    stall_after: float = 300.0
    #: also export the run's spans to this OTLP/HTTP traces endpoint (or ``RUNNER_OTLP_ENDPOINT``);
    #: see :mod:`runner.integrations.otlp_export`
    otlp_endpoint: str | None = None
    #: gates checked after the run, as on the command line; ``result.gates`` says which passed
    #: (see :mod:`runner.results.gate_report`): score name -> minimum mean, ...
    fail_under: Mapping[str, float] | None = None
    #: ... the largest tolerated fraction of errored row-trials, ...
    max_error_rate: float | None = None
    #: ... and whether ``fail_under`` needs the 95 % CI lower bound (not the mean) to clear the bar
    strict: bool = False
    #: a stored prompt version, ``NAME@VERSION`` or ``NAME`` (the version its deployment serves):
    #: ``completion(llm_inputs=...)`` in a row calls it, and the run's metadata records it
    prompt: str | None = None
    #: where rows run (see :func:`runner.pipeline.executors.resolve_executor`): None is this process
    executor: Any = None
    #: Dask worker resources each row needs, e.g. ``{"GPU": 1}`` (Dask executor only)
    resources: Mapping[str, float] | None = None
    _evals: list[Callable[..., Any]] = field(init=False, repr=False)
    _dataset_evals: list[Callable[..., Any]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"Experiment name must be a non-empty string, got {self.name!r}")
        if not callable(self.func):
            raise FunctionError(f"Experiment {self.name!r}: func must be callable, got {self.func!r}")
        if isinstance(self.evals, (str, bytes)) or not isinstance(self.evals, Iterable):
            raise FunctionError(f"Experiment {self.name!r}: evals must be a list of scorers, got {self.evals!r}")
        self._evals = validate_scorers(list(self.evals), f"Experiment {self.name!r}: evals")
        self._dataset_evals = []
        for ev in self.dataset_level_evals:
            reject_factory(ev, f"Experiment {self.name!r}: dataset_level_evals")
            if not callable(ev):
                raise FunctionError(
                    f"Experiment {self.name!r}: dataset_level_evals must be callables taking the list of "
                    f"logs, got {ev!r}; did you forget the parentheses, e.g. balanced_accuracy()?"
                )
            self._dataset_evals.append(ev)
        check_positive_int("n_trials", self.n_trials)
        if self.n_workers is not None:
            check_positive_int("n_workers", self.n_workers)
        if self.metadata is not None and not isinstance(self.metadata, Mapping):
            raise ConfigError(f"metadata must be a dict, got {type(self.metadata).__name__}")
        if self.timeout is not None:
            check_seconds("timeout", self.timeout)
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ConfigError(f"retries must be a whole number >= 0, got {self.retries!r}")
        check_seconds("retry_backoff", self.retry_backoff)
        from runner.results.gate_report import gates_of

        gates_of(self.fail_under, self.max_error_rate, self.strict)  # bad gates fail here, not after the run
        check_seconds("stall_after", self.stall_after)
        if self.prompt is not None:
            from runner.proxy.prompts import parse_ref

            if not isinstance(self.prompt, str):
                raise ConfigError(
                    f"Experiment {self.name!r}: prompt must be 'NAME@VERSION' or 'NAME', got {self.prompt!r}"
                )
            parse_ref(self.prompt)
        if self.resources is not None and (
            not isinstance(self.resources, Mapping)
            or not all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in self.resources.items())
        ):
            raise ConfigError(f"resources must be a dict of name -> amount, e.g. {{'GPU': 1}}, got {self.resources!r}")

    # -- entry points -------------------------------------------------------------------------
    def run(self, run_name: str | None = None, **options: Any) -> Result:
        """Run the experiment and return its :class:`Result`.

        Works the same in a script and in a notebook cell (where an event loop is already
        running: the run then happens on a worker thread with its own loop).

        Options (each overrides the Experiment's own setting for this run): ``limit`` (first N
        rows), ``n_workers``, ``n_trials``, ``quiet``, ``timeout``, ``retries``,
        ``retry_backoff``, ``stall_after``, the gates ``fail_under``, ``max_error_rate`` and
        ``strict``, ``executor`` (``"dask"``, ``"dask://HOST:8786"`` or a
        ``distributed.Client``: rows run on a Dask cluster); ``resume=True`` continues the run called
        ``run_name`` (rows already stored as successful are not run again; errored ones are,
        unless ``keep_errors=True``).
        """
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(run_name, **options))
        return _run_in_thread(self, run_name, options)

    async def arun(self, run_name: str | None = None, **options: Any) -> Result:
        """Run the experiment from async code; same result as :meth:`run`."""
        return await self._arun(run_name, options)

    async def _arun(self, run_name: str | None, options: Mapping[str, Any], finish_only: bool = False) -> Result:
        from runner.integrations.otlp_export import export_run, resolve_endpoint
        from runner.pipeline.checks import declared_scores, preflight
        from runner.pipeline.run import Run
        from runner.results.gate_report import check_gates, gates_of, notify

        options = dict(options)
        gates = gates_of(options.pop("fail_under", self.fail_under), options.pop("max_error_rate", self.max_error_rate),
                         options.pop("strict", self.strict))
        settings = Settings.from_env()
        opts = self._options(run_name, settings, options)
        if finish_only:
            opts = dataclasses.replace(opts, finish_only=True)
        otlp_endpoint = resolve_endpoint(self.otlp_endpoint)
        target = self.target(settings)
        preflight(self.name, self.data, self.func, target)  # before the backend exists: a refused run creates nothing
        plan = await self.plan(opts, target, settings)
        backend = self._backend(target)
        try:
            result = await Run(plan, backend).execute()
            if gates:
                result.gates = check_gates(gates, result, known=declared_scores(self))
            if otlp_endpoint is not None:
                await export_run(backend, result.experiment_uuid, otlp_endpoint, experiment_name=self.name,
                                 run_name=result.run_name)
            notify(result)
            return result
        finally:
            await backend.aclose()

    # -- resolution ---------------------------------------------------------------------------
    def _options(self, run_name: str | None, settings: Settings, options: Mapping[str, Any]) -> RunOptions:
        unknown = set(options) - RUN_OPTIONS
        if unknown:
            raise ConfigError(
                f"unknown run option(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(RUN_OPTIONS))}"
            )
        if run_name is not None:
            if not isinstance(run_name, str):
                raise ConfigError(f"run_name must be a string, got {run_name!r}")
            from runner.store import validate_run_name

            validate_run_name(run_name)
        limit = options.get("limit")
        if limit is not None:
            check_positive_int("limit", limit)
        n_workers = options.get("n_workers") or self.n_workers or settings.n_workers
        n_trials = options.get("n_trials") or self.n_trials
        timeout = options.get("timeout", self.timeout)
        retries = options.get("retries", self.retries)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries must be a whole number >= 0, got {retries!r}")
        resume = bool(options.get("resume", False))
        if resume and run_name is None:
            raise ConfigError("resume needs the run name of the run to continue (run_name=... or --run-name)")
        return RunOptions(
            run_name=run_name,
            limit=limit,
            n_workers=check_positive_int("n_workers", n_workers),
            n_trials=check_positive_int("n_trials", n_trials),
            quiet=bool(options.get("quiet", settings.quiet)),
            timeout=None if timeout is None else check_seconds("timeout", timeout),
            retries=retries,
            retry_backoff=check_seconds("retry_backoff", options.get("retry_backoff", self.retry_backoff)),
            stall_after=check_seconds("stall_after", options.get("stall_after", self.stall_after)),
            resume=resume,
            keep_errors=bool(options.get("keep_errors", False)),
            executor=options.get("executor", self.executor),
            shard=options.get("shard"),
        )

    def target(self, settings: Settings | None = None) -> Target:
        """Where this experiment's results go: its own ``base_url``/``db`` (a config file's
        value, or the flag filled in), else the environment, else the embedded default."""
        from runner.backends.target import resolve_target

        return resolve_target(base_url=self.base_url, api_key=self.api_key, db=self.db, settings=settings)

    def _backend(self, target: Target) -> Backend:
        """The backend of ``target`` (a seam for tests that need test-sized batches and waits)."""
        from runner.backends import open_backend

        return open_backend(target)

    async def plan(self, opts: RunOptions, target: Target, settings: Settings) -> RunPlan:
        """The run :class:`runner.pipeline.run.Run` executes: this experiment, resolved.

        Loads the prompt version ``prompt`` names (once: the whole run uses it) from ``target``."""
        import asyncio

        from runner.pipeline.plan import RunPlan
        from runner.results.result import mapping_str

        metadata = mapping_str(self.metadata or {})
        prompt = None
        if self.prompt is not None:
            from runner.backends.prompts import load_run_prompt

            prompt = await asyncio.to_thread(load_run_prompt, self.prompt, target)
            metadata.update(mapping_str(prompt.metadata))
        return RunPlan(
            name=self.name,
            data=self.data,
            func=self.func,
            scorers=tuple(self._evals),
            dataset_evals=tuple(self._dataset_evals),
            project_name=self.project_name or settings.project_name,
            metadata=metadata,
            options=opts,
            target=target,
            prompt=prompt,
            resources=self.resources,
        )


async def afinish(exp: Experiment, run_name: str, *, quiet: bool = False, limit: int | None = None) -> Result:
    """Finish the sharded run ``run_name`` of ``exp``: every row stored, stats from all of them
    (see :mod:`runner.pipeline.shards`).

    Raises :class:`runner.pipeline.shards.IncompleteRunError` naming the missing rows when some
    shard has not stored its rows yet. Finishing twice is harmless (the same stats are sent again)."""
    return await exp._arun(
        run_name, {"quiet": quiet, "resume": True, "keep_errors": True, "limit": limit}, finish_only=True
    )


def finish(exp: Experiment, run_name: str, *, quiet: bool = False) -> Result:
    """:func:`afinish` from sync code."""
    import asyncio

    return asyncio.run(afinish(exp, run_name, quiet=quiet))


def _run_in_thread(exp: Experiment, run_name: str | None, options: Mapping[str, Any]) -> Result:
    """Run ``exp`` on a worker thread with its own loop (a loop already runs in this thread)."""
    import asyncio
    import contextvars
    import threading

    from runner.pipeline.run import Run

    box: dict[str, Any] = {}
    ready = threading.Event()
    loop_box: dict[str, asyncio.AbstractEventLoop] = {}
    context = contextvars.copy_context()  # the caller's context variables reach the run

    def target() -> None:
        loop = asyncio.new_event_loop()
        loop_box["loop"] = loop
        ready.set()
        try:
            box["result"] = context.run(loop.run_until_complete, exp.arun(run_name, **options))
        except BaseException as exc:
            box["error"] = exc
        finally:
            loop.close()

    t = threading.Thread(target=target, name=f"runner-{exp.name}", daemon=True)
    t.start()
    ready.wait()
    interrupts = 0
    while t.is_alive():
        try:
            t.join(0.1)
        except KeyboardInterrupt:
            interrupts += 1
            run = Run.active.get(loop_box["loop"])
            if run is not None:
                loop_box["loop"].call_soon_threadsafe(run.interrupt)
            if interrupts >= 2:
                t.join(5)
                break
    if "error" in box:
        raise box["error"]
    if "result" not in box:
        raise KeyboardInterrupt
    result: Result = box["result"]
    return result

