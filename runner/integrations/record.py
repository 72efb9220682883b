"""One LLM call made through a wrapped SDK client, recorded as one span.

:class:`LLMCallRecord` is opened before the SDK call and closed once with the answer, the error,
or the end (or abandonment) of a stream. Inside an experiment row the span is a child of the
current span and goes out with the row; outside a row it is a trace of its own, written where
:func:`runner.completion` would log it (the running experiment's backend, else
``PAREA_BASE_URL``, else the embedded store ``RUNNER_DB``), in the project ``RUNNER_PROJECT``.

The SDK's own retries are counted on its HTTP client (:func:`count_attempts`): one span per
call, with ``metadata["attempts"]`` and the status of each attempt.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from runner.pipeline.tracing import Span, TraceRun, current_span

__all__ = [
    "LLMCallRecord", "StreamAccumulator", "TracedAsyncStream", "TracedStream", "configuration", "count_attempts",
    "install_hooks", "jsonable", "traced_method",
]

#: the attempts of the SDK call running in this context: one HTTP status (or 0) per request sent
_attempts: ContextVar[list[int] | None] = ContextVar("runner_llm_attempts", default=None)

#: set on the traced replacement of an SDK method, so that wrapping twice is harmless
TRACED_MARK = "__runner_traced__"

#: OpenAI / Anthropic parameter names -> Parea ``model_params`` names
_PARAM_NAMES = {"temperature": "temp", "max_tokens": "max_length", "max_completion_tokens": "max_length"}
#: request fields that are not sampling parameters
_NOT_PARAMS = frozenset({
    "model", "messages", "system", "tools", "tool_choice", "functions", "function_call", "stream",
    "stream_options", "extra_headers", "extra_query", "extra_body", "timeout", "metadata", "user",
})


def jsonable(value: Any) -> Any:
    """``value`` with SDK objects (pydantic models, iterables of them) turned into plain JSON data."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return jsonable(dump(mode="json", exclude_none=True))
    if isinstance(value, (set, frozenset)) or (hasattr(value, "__iter__") and not isinstance(value, bytes)):
        return [jsonable(v) for v in value]
    return str(value)


def configuration(provider: str, kwargs: Mapping[str, Any], messages: list[Any]) -> dict[str, Any]:
    """The Parea ``configuration`` of an SDK call: model, provider, params, messages, tools."""
    params: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _NOT_PARAMS or value is None or type(value).__name__ == "NotGiven":
            continue
        params[_PARAM_NAMES.get(key, key)] = jsonable(value)
    config: dict[str, Any] = {
        "model": str(kwargs.get("model") or ""),
        "provider": provider,
        "model_params": params,
        "messages": jsonable(messages),
    }
    tools = kwargs.get("tools") or kwargs.get("functions")
    if tools and type(tools).__name__ != "NotGiven":
        config["functions"] = jsonable(tools)
    choice = kwargs.get("tool_choice") or kwargs.get("function_call")
    if choice and type(choice).__name__ != "NotGiven":
        config["function_call"] = jsonable(choice)
    return config


class count_attempts:
    """Within the block, each request the SDK's HTTP client sends is one attempt (see
    :func:`install_hooks`); ``attempts`` is their statuses (0: no answer)."""

    def __init__(self) -> None:
        self.attempts: list[int] = []
        self._token: Any = None

    def __enter__(self) -> count_attempts:
        self._token = _attempts.set(self.attempts)
        return self

    def __exit__(self, *exc: object) -> None:
        _attempts.reset(self._token)


def _on_request(request: Any) -> None:
    attempts = _attempts.get()
    if attempts is not None:
        attempts.append(0)


def _on_response(response: Any) -> None:
    attempts = _attempts.get()
    if attempts:
        attempts[-1] = int(response.status_code)


async def _aon_request(request: Any) -> None:
    _on_request(request)


async def _aon_response(response: Any) -> None:
    _on_response(response)


def install_hooks(http_client: Any, is_async: bool) -> None:
    """Count attempts on an SDK's httpx client (its event hooks; once per client)."""
    hooks = getattr(http_client, "event_hooks", None)
    if not isinstance(hooks, dict) or getattr(http_client, "_runner_hooked", False):
        return
    on_request, on_response = (_aon_request, _aon_response) if is_async else (_on_request, _on_response)
    hooks.setdefault("request", []).append(on_request)
    hooks.setdefault("response", []).append(on_response)
    http_client.event_hooks = hooks
    http_client._runner_hooked = True


class LLMCallRecord:
    """The span of one SDK call, from the request to its end. Close it once with :meth:`succeed`,
    :meth:`fail` or :meth:`abandon`; later calls do nothing."""

    def __init__(self, name: str, config: dict[str, Any], attempts: list[int]) -> None:
        parent = current_span()
        if parent is not None:
            self.span = Span(name, parent.run, parent)
        else:
            self.span = Span(name, TraceRun(None, _project_name()), None)
        self.in_row = parent is not None
        self.config = config
        self.attempts = attempts
        self.time_to_first_token: float | None = None
        self._t0 = time.perf_counter()
        self._closed = False
        self._lock = threading.Lock()

    def first_token(self) -> None:
        if self.time_to_first_token is None:
            self.time_to_first_token = time.perf_counter() - self._t0

    def succeed(self, output: Any, input_tokens: int, output_tokens: int, model: str | None) -> None:
        self.span.output = output
        self._close(input_tokens, output_tokens, model)

    def fail(self, exc: BaseException, input_tokens: int = 0, output_tokens: int = 0, model: str | None = None,
             output: Any = None) -> None:
        self.span.output = output
        self.span.fail(exc)
        self._close(input_tokens, output_tokens, model)

    def abandon(self, output: Any, input_tokens: int, output_tokens: int, model: str | None) -> None:
        """The stream was closed (or dropped) before its end: what arrived is logged, as an error."""
        if self._closed:
            return
        self.span.output = output
        self.span.status = "error"
        self.span.error = "stream closed by the client before the end"
        self.span.metadata["stream_abandoned"] = True
        self._close(input_tokens, output_tokens, model)

    def _close(self, input_tokens: int, output_tokens: int, model: str | None) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        span = self.span
        if model:
            self.config["model"] = model
        requested = str(self.config.get("model") or "")
        span.record_usage(input_tokens, output_tokens, _cost(input_tokens, output_tokens, model or "", requested))
        span.metadata["attempts"] = max(1, len(self.attempts))
        if len(self.attempts) > 1:
            span.metadata["attempt_statuses"] = list(self.attempts)
        span.finish()
        log = span.to_wire()
        log["configuration"] = self.config
        if self.time_to_first_token is not None:
            log["time_to_first_token"] = self.time_to_first_token
        if self.in_row:
            span.run.children.append(log)
        else:
            from runner.integrations.sink import write_outside_row

            write_outside_row(log)


class StreamAccumulator:
    """What the chunks of a stream said so far; each SDK module says how to read its chunks."""

    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.model: str | None = None

    def feed(self, record: LLMCallRecord, chunk: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def output(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self, record: LLMCallRecord, *, complete: bool, error: BaseException | None = None) -> None:
        args = (self.output(), self.input_tokens, self.output_tokens, self.model)
        if error is not None:
            record.fail(error, self.input_tokens, self.output_tokens, self.model, output=args[0])
        elif complete:
            record.succeed(*args)
        else:
            record.abandon(*args)


class TracedStream:
    """An SDK's sync ``Stream``, recording its chunks; everything else is passed through. The span
    is written at the end of the stream, at :meth:`close` (or the ``with`` block's end), or when
    the stream is dropped unfinished."""

    def __init__(self, stream: Any, record: LLMCallRecord, acc: StreamAccumulator) -> None:
        self._stream = stream
        self._record = record
        self._acc = acc

    def __iter__(self) -> TracedStream:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._stream)
        except StopIteration:
            self._acc.close(self._record, complete=True)
            raise
        except Exception as exc:
            self._acc.close(self._record, complete=False, error=exc)
            raise
        self._acc.feed(self._record, chunk)
        return chunk

    def __enter__(self) -> TracedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stream.close()
        self._acc.close(self._record, complete=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __del__(self) -> None:
        record = self.__dict__.get("_record")
        if record is not None:
            self._acc.close(record, complete=False)


class TracedAsyncStream:
    """:class:`TracedStream` for an SDK's ``AsyncStream``."""

    def __init__(self, stream: Any, record: LLMCallRecord, acc: StreamAccumulator) -> None:
        self._stream = stream
        self._record = record
        self._acc = acc

    def __aiter__(self) -> TracedAsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._stream.__anext__()
        except StopAsyncIteration:
            self._acc.close(self._record, complete=True)
            raise
        except Exception as exc:
            self._acc.close(self._record, complete=False, error=exc)
            raise
        self._acc.feed(self._record, chunk)
        return chunk

    async def __aenter__(self) -> TracedAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._stream.close()
        self._acc.close(self._record, complete=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __del__(self) -> None:
        record = self.__dict__.get("_record")
        if record is not None:
            self._acc.close(record, complete=False)


def traced_method(
    create: Any,
    start: Callable[[dict[str, Any], list[int]], LLMCallRecord],
    finish: Callable[[LLMCallRecord, Any], None],
    accumulator: Callable[[], StreamAccumulator],
    is_async: bool,
) -> Any:
    """``create`` (an SDK's bound method) recording each call: ``start`` opens the record from the
    call's keyword arguments, ``finish`` closes it from the answer; ``stream=True`` answers are
    wrapped in a :class:`TracedStream` / :class:`TracedAsyncStream` reading with ``accumulator``."""
    if is_async:

        @functools.wraps(create)
        async def atraced(*args: Any, **kwargs: Any) -> Any:
            with count_attempts() as counter:
                record = start(kwargs, counter.attempts)
                try:
                    result = await create(*args, **kwargs)
                except BaseException as exc:
                    record.fail(exc)
                    raise
            if kwargs.get("stream") is True:
                return TracedAsyncStream(result, record, accumulator())
            finish(record, result)
            return result

        setattr(atraced, TRACED_MARK, True)
        return atraced

    @functools.wraps(create)
    def traced(*args: Any, **kwargs: Any) -> Any:
        with count_attempts() as counter:
            record = start(kwargs, counter.attempts)
            try:
                result = create(*args, **kwargs)
            except BaseException as exc:
                record.fail(exc)
                raise
        if kwargs.get("stream") is True:
            return TracedStream(result, record, accumulator())
        finish(record, result)
        return result

    setattr(traced, TRACED_MARK, True)
    return traced


_prices: Any = None


def _cost(input_tokens: int, output_tokens: int, *models: str) -> float:
    """USD from the proxy's price table (``RUNNER_PRICES_FILE`` overrides included)."""
    global _prices
    if input_tokens + output_tokens <= 0:
        return 0.0
    if _prices is None:
        from runner.proxy.pricing import PriceTable
        from runner.proxy.settings import ProxySettings

        try:
            overrides = ProxySettings.from_env().prices
        except Exception:  # a broken prices file must not break the user's LLM call
            overrides = {}
        _prices = PriceTable(overrides)
    return float(_prices.cost(input_tokens, output_tokens, *models))


def _project_name() -> str:
    from runner.settings import Settings

    return Settings.from_env().project_name
