"""Trace context: spans, ``@trace``, ids, depth and execution order.

The current span lives in a :class:`contextvars.ContextVar`, so it follows ``await``, task groups
and (because the engine runs sync functions with a copied context) worker threads. A span opened
inside a row becomes a child log of that row's root trace; outside a row, ``@trace`` just calls
the function.

>>> @trace
... def retrieve(question: str) -> list[str]:
...     return ["doc"]
>>> @trace(eval_funcs=[lambda log: 1.0], name="answer-step")
... async def step(q: str) -> str:
...     return q
"""

from __future__ import annotations

import functools
import inspect
import itertools
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar, overload

from runner._json import dumps_value
from runner.backends.target import Target
from runner.names import new_id
from runner.scoring import Log, Score, call_scorer, call_scorer_sync, validate_scorers

if TYPE_CHECKING:
    from runner.proxy.prompts import DeployedPrompt

__all__ = ["Span", "TraceRun", "current_prompt", "current_span", "current_target", "span", "trace"]

F = TypeVar("F", bound=Callable[..., Any])

_current: ContextVar[Span | None] = ContextVar("runner_current_span", default=None)

#: where the running experiment stores its results, for helpers such as ``completion()``; set by the run
current_target: ContextVar[Target | None] = ContextVar("runner_target", default=None)
#: the prompt version of the running ``Experiment(prompt=...)``, which ``completion()`` uses
current_prompt: ContextVar[DeployedPrompt | None] = ContextVar("runner_prompt", default=None)


_iso_cache: tuple[int, str] = (-1, "")


def iso(ts: float) -> str:
    """``ts`` as ISO 8601 UTC with microseconds; the date-and-second part is cached (hot path)."""
    global _iso_cache
    sec = int(ts)
    cached_sec, prefix = _iso_cache
    if sec != cached_sec:
        prefix = datetime.fromtimestamp(sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        _iso_cache = (sec, prefix)
    return f"{prefix}.{int((ts - sec) * 1e6):06d}+00:00"


class TraceRun:
    """Shared by every span of one root trace: its counter and where finished children go."""

    __slots__ = (
        "_order", "children", "experiment_uuid", "project_name", "project_uuid", "root_metadata",
        "target",
    )

    def __init__(
        self,
        experiment_uuid: str | None,
        project_name: str | None,
        target: Any = None,
        project_uuid: str | None = None,
    ) -> None:
        self.experiment_uuid = experiment_uuid
        self.project_name = project_name
        self.project_uuid = project_uuid
        self.target = target
        self._order = itertools.count()
        #: finished child logs, in the order they ended (list.append is atomic)
        self.children: list[dict[str, Any]] = []
        #: the root span's metadata (row id, trial), readable from every span of the run
        self.root_metadata: dict[str, Any] = {}

    def next_order(self) -> int:
        return next(self._order)


class Span:
    """One traced step. The root span of a row is made by the engine; children by ``@trace``."""

    __slots__ = (
        "cost", "depth", "end", "error", "execution_order", "input_tokens", "inputs", "metadata", "name",
        "output", "output_tokens", "parent_trace_id", "root_trace_id", "run", "score_errors", "scores",
        "start", "status", "tags", "trace_id",
    )

    def __init__(
        self,
        name: str,
        run: TraceRun,
        parent: Span | None,
        inputs: dict[str, Any] | None = None,
        trace_id: str | None = None,
    ) -> None:
        self.trace_id = trace_id or new_id()
        self.name = name
        self.run = run
        if parent is None:
            self.parent_trace_id = self.root_trace_id = self.trace_id
            self.depth = 0
        else:
            self.parent_trace_id = parent.trace_id
            self.root_trace_id = parent.root_trace_id
            self.depth = parent.depth + 1
        self.execution_order = run.next_order()
        self.inputs = inputs or {}
        self.output: Any = None
        self.status = "success"
        self.error: str | None = None
        self.scores: list[Score] = []
        self.score_errors: dict[str, str] = {}
        self.metadata: dict[str, Any] = {}
        if parent is None:
            run.root_metadata = self.metadata
        self.tags: list[str] = []
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.start = time.time()
        self.end: float | None = None

    def record_usage(self, input_tokens: int = 0, output_tokens: int = 0, cost: float = 0.0) -> None:
        """Add LLM token counts and cost to this span (they add up to the root on the backend)."""
        self.input_tokens += int(input_tokens)
        self.output_tokens += int(output_tokens)
        self.cost += float(cost)

    def fail(self, exc: BaseException) -> None:
        self.status = "error"
        self.error = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

    def finish(self) -> None:
        if self.end is None:
            self.end = time.time()

    @property
    def latency(self) -> float:
        return (self.end if self.end is not None else time.time()) - self.start

    def as_log(self) -> Log:
        return Log(
            inputs=self.inputs, output=self.output, target=self.run.target, status=self.status,
            error=self.error, latency=self.latency, trace_id=self.trace_id, metadata=self.metadata,
            scores=list(self.scores), score_errors=dict(self.score_errors),
        )

    def to_wire(self) -> dict[str, Any]:
        """This span as a ``TraceLogSchema`` dict (fields that would be ``null`` are left out)."""
        self.finish()
        end = self.end
        assert end is not None
        run = self.run
        meta = self.metadata
        if self.score_errors:
            meta = {**meta, "scorer_errors": self.score_errors}
        output = self.output
        wire: dict[str, Any] = {
            "trace_id": self.trace_id,
            "parent_trace_id": self.parent_trace_id,
            "root_trace_id": self.root_trace_id,
            "trace_name": self.name,
            "inputs": self.inputs,
            "status": self.status,
            "start_timestamp": iso(self.start),
            "end_timestamp": iso(end),
            "latency": end - self.start,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "cost": self.cost,
            "scores": [
                {"name": s.name, "score": s.score}
                if s.reason is None
                else {"name": s.name, "score": s.score, "reason": s.reason}
                for s in self.scores
            ],
            "metadata": meta,
            "tags": self.tags,
            "depth": self.depth,
            "execution_order": self.execution_order,
        }
        if output is not None:
            if isinstance(output, str):
                wire["output"] = output
            else:
                wire["output"] = dumps_value(output)
                meta = wire["metadata"] = {**meta, "output_is_json": True}
        if self.depth == 0 and run.target is not None:
            wire["target"] = dumps_value(run.target)
        if self.error is not None:
            wire["error"] = self.error
        if run.experiment_uuid is not None:
            wire["experiment_uuid"] = run.experiment_uuid
        if run.project_name is not None:
            wire["project_name"] = run.project_name
        if run.project_uuid is not None:
            wire["project_uuid"] = run.project_uuid
        return wire


def current_span() -> Span | None:
    """The span the caller runs in, or ``None`` outside any experiment row."""
    return _current.get()


def _bind_inputs(sig: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    if sig is None:
        return {"args": list(args), **kwargs} if args else dict(kwargs)
    try:
        bound = sig.bind_partial(*args, **kwargs)
    except TypeError:
        return {"args": list(args), **kwargs}
    out: dict[str, Any] = {}
    for k, v in bound.arguments.items():
        if k in ("self", "cls"):
            continue
        param = sig.parameters[k]
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            out.update(v)
        else:
            out[k] = v
    return out


@contextmanager
def span(name: str, inputs: dict[str, Any] | None = None) -> Iterator[Span | None]:
    """Open a child span around a block: ``with span("retrieve", {"q": q}) as s: s.output = docs``.

    Yields ``None`` outside an experiment row (nothing is recorded then)."""
    parent = _current.get()
    if parent is None:
        yield None
        return
    s = Span(name, parent.run, parent, inputs)
    token = _current.set(s)
    try:
        yield s
    except BaseException as exc:
        s.fail(exc)
        raise
    finally:
        _current.reset(token)
        s.finish()
        s.run.children.append(s.to_wire())


@overload
def trace(func: F, /) -> F: ...


@overload
def trace(
    func: None = None,
    /,
    *,
    name: str | None = None,
    eval_funcs: Sequence[Callable[..., Any]] | None = None,
    metadata: dict[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    access_output_of_func: Callable[[Any], Any] | None = None,
    log_omit_inputs: bool = False,
    log_omit_outputs: bool = False,
) -> Callable[[F], F]: ...


def trace(
    func: F | None = None,
    /,
    *,
    name: str | None = None,
    eval_funcs: Sequence[Callable[..., Any]] | None = None,
    metadata: dict[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    access_output_of_func: Callable[[Any], Any] | None = None,
    log_omit_inputs: bool = False,
    log_omit_outputs: bool = False,
) -> F | Callable[[F], F]:
    """Record calls of a function as child spans of the current row's trace.

    Usable bare (``@trace``) or Parea-style (``@trace(name=..., eval_funcs=[...], metadata=...,
    tags=...)``). ``eval_funcs`` are scorers run on the span's log when the call returns; their
    scores are attached to the span and roll up to the root. Works on sync and async functions.
    """
    scorers = validate_scorers(list(eval_funcs or ()), "@trace(eval_funcs=...)")

    def decorate(fn: F) -> F:
        span_name: str = name or str(getattr(fn, "__name__", "span"))
        try:
            sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None

        def open_span(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Span | None:
            parent = _current.get()
            if parent is None:
                return None
            inputs = {} if log_omit_inputs else _bind_inputs(sig, args, kwargs)
            s = Span(span_name, parent.run, parent, inputs)
            if metadata:
                s.metadata.update(metadata)
            if tags:
                s.tags.extend(tags)
            return s

        def close(s: Span, result: Any) -> None:
            s.output = access_output_of_func(result) if access_output_of_func else result

        def emit(s: Span) -> None:
            log = s.to_wire()
            if log_omit_outputs:
                log["output"] = None
            s.run.children.append(log)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                s = open_span(args, kwargs)
                if s is None:
                    return await fn(*args, **kwargs)
                token = _current.set(s)
                try:
                    result = await fn(*args, **kwargs)
                    close(s, result)
                    return result
                except BaseException as exc:
                    s.fail(exc)
                    raise
                finally:
                    _current.reset(token)
                    s.finish()
                    if s.status == "success":
                        for sc in scorers:
                            got, failed = await call_scorer(sc, s.as_log())
                            s.scores.extend(got)
                            s.score_errors.update({f.name: f.error for f in failed})
                    emit(s)

            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            s = open_span(args, kwargs)
            if s is None:
                return fn(*args, **kwargs)
            token = _current.set(s)
            try:
                result = fn(*args, **kwargs)
                close(s, result)
                return result
            except BaseException as exc:
                s.fail(exc)
                raise
            finally:
                _current.reset(token)
                s.finish()
                if s.status == "success":
                    for sc in scorers:
                        got, failed = call_scorer_sync(sc, s.as_log())
                        s.scores.extend(got)
                        s.score_errors.update({f.name: f.error for f in failed})
                emit(s)

        return wrapper  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate


def set_current(s: Span | None) -> Any:
    """Make ``s`` the current span; returns the token for :func:`reset_current` (engine use)."""
    return _current.set(s)


def reset_current(token: Any) -> None:
    _current.reset(token)
