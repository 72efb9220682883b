"""The proxy: a Parea completion request in, a provider call (or a cache hit) and a trace log out.

Example::

    proxy = Proxy(SQLiteCompletionCache(".runner/runner.db"), log_sink=queue.put_nowait)
    response = await proxy.complete(CompletionsSchema.model_validate(body))
    async for text in proxy.stream(request):
        ...
    await proxy.aclose()

A request that cannot work as configured raises :class:`ProxyConfigError` before anything is
sent (for :meth:`Proxy.stream`: when it is called, not when iterated). Every other failure is
an answer with ``status: "error"``, and is logged like a success.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

import httpx

from runner.proxy.cache import CACHE_SEED_KEY, CompletionCache, cache_key, cache_scope
from runner.proxy.errors import ProxyConfigError
from runner.proxy.models import CompletionsResponseSchema, CompletionsSchema, MessageSchema
from runner.proxy.pricing import PriceTable
from runner.proxy.prompts import fill as fill_template
from runner.proxy.providers import (
    PARAM_DEFAULTS,
    PROVIDERS,
    Completion,
    LLMCall,
    ProviderAdapter,
    adapter_for,
)
from runner.proxy.settings import ProxySettings
from runner.proxy.tracelog import build_trace_log, is_sampled
from runner.proxy.upstream import Upstream, UpstreamError, iter_sse

__all__ = ["CompletionStream", "LogSink", "Proxy", "resolve_call"]

logger = logging.getLogger("runner.proxy")

#: Receives the ``TraceLogSchema`` dict of each completion; called on the proxy's loop.
LogSink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class _Prepared:
    """A validated request: the provider call, where to send it, and how to log it."""

    request: CompletionsSchema
    call: LLMCall
    adapter: ProviderAdapter
    api_key: str | None
    base_url: str
    cache_key: str | None  # None: do not use the cache
    trace_id: str
    start_timestamp: str
    start: float  # time.perf_counter()
    log_sink: LogSink | None


@dataclass(frozen=True)
class _Outcome:
    completion: Completion | None
    error: str | None = None
    cache_hit: bool = False


class CompletionStream:
    """The text chunks of a streamed completion, as an async iterator.

    Once exhausted, ``result`` holds the full :class:`CompletionsResponseSchema` (status, error,
    tokens, cost, trace_id) and the trace log has been emitted. Call :meth:`aclose` if you stop
    early (a client went away): the log then says the stream was cut short.
    """

    def __init__(self) -> None:
        self.result: CompletionsResponseSchema | None = None
        self._chunks: AsyncGenerator[str, None] | None = None

    def __aiter__(self) -> CompletionStream:
        return self

    async def __anext__(self) -> str:
        assert self._chunks is not None
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()


class Proxy:
    """Serves completion requests against the configured providers.

    ``cache`` (``None``: no caching) is not closed by the proxy; ``log_sink`` receives one
    ``TraceLogSchema``-shaped dict per completion and should only enqueue it. Use one proxy per
    event loop.
    """

    def __init__(
        self,
        cache: CompletionCache | None,
        *,
        settings: ProxySettings | None = None,
        log_sink: LogSink | None = None,
    ) -> None:
        self.settings = settings if settings is not None else ProxySettings.from_env()
        self.cache = cache
        self.prices = PriceTable(self.settings.prices)
        self._log_sink = log_sink
        self._upstream = Upstream(self.settings)
        self._adapters = {
            name: adapter_for(name, anthropic_max_tokens=self.settings.anthropic_max_tokens)
            for name in PROVIDERS
        }
        self._inflight: dict[str, asyncio.Task[_Outcome]] = {}

    async def __aenter__(self) -> Proxy:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel calls in flight and close the HTTP client."""
        for task in list(self._inflight.values()):
            task.cancel()
        await self._upstream.aclose()

    # --- complete ------------------------------------------------------------------------------

    async def complete(self, req: CompletionsSchema, *, log_sink: LogSink | None = None,
                       tenant: str = "") -> CompletionsResponseSchema:
        """Answer ``req`` from the cache or the provider, log it, and return the response.

        ``log_sink``, if given, receives this call's log instead of the proxy's sink (a server
        passes one per request, to log under the caller's tenant). ``tenant`` scopes the cache:
        answers cached for one tenant never answer another.
        """
        p = self._prepare(req, log_sink, tenant)
        return self._finish(p, await self._outcome(p))

    async def _outcome(self, p: _Prepared) -> _Outcome:
        key = p.cache_key
        if key is None or self.cache is None:
            return await self._call(p)
        if (hit := self._lookup(key)) is not None:
            return _Outcome(hit, cache_hit=True)
        task = self._inflight.get(key)
        if task is not None:  # an identical call is in flight: share its answer
            shared = await asyncio.shield(task)
            return _Outcome(shared.completion, shared.error, cache_hit=shared.error is None)
        task = asyncio.create_task(self._call(p, store=key))
        self._inflight[key] = task
        task.add_done_callback(lambda _: self._inflight.pop(key, None))
        # shielded: a cancelled caller does not cancel the call the others wait for
        return await asyncio.shield(task)

    async def _call(self, p: _Prepared, store: str | None = None) -> _Outcome:
        request = p.adapter.build(p.call, api_key=p.api_key, base_url=p.base_url, stream=False)
        try:
            completion = await self._upstream.complete(p.adapter, request)
        except UpstreamError as exc:
            return _Outcome(None, str(exc))
        if store is not None:
            await self._store(store, completion, p.call.provider)
        return _Outcome(completion)

    def _lookup(self, key: str | None) -> Completion | None:
        if key is None or self.cache is None:
            return None
        try:
            return self.cache.get(key)
        except Exception:  # a broken cache must not turn into failed completions
            logger.exception("could not read the completion cache; calling the provider")
            return None

    async def _store(self, key: str, completion: Completion, provider: str) -> None:
        if self.cache is None:
            return
        try:
            await asyncio.to_thread(self.cache.put, key, completion, provider=provider)
        except Exception:  # a full disk must not turn a good answer into an error
            logger.exception("could not store a completion in the cache")

    # --- stream --------------------------------------------------------------------------------

    def stream(self, req: CompletionsSchema, *, log_sink: LogSink | None = None, tenant: str = "") -> CompletionStream:
        """The completion of ``req`` as text chunks (see :class:`CompletionStream`).

        Not a coroutine: configuration errors raise here, before a response has started.
        A cache hit is one chunk with the whole content. Identical concurrent streams each call
        the provider (single-flight applies to :meth:`complete`). ``log_sink`` as for
        :meth:`complete` (and ``tenant``).
        """
        p = self._prepare(req, log_sink, tenant)
        stream = CompletionStream()
        stream._chunks = self._stream_chunks(p, stream)
        return stream

    async def _stream_chunks(self, p: _Prepared, stream: CompletionStream) -> AsyncGenerator[str, None]:
        outcome: _Outcome | None = None
        first_token: float | None = None
        parser = p.adapter.stream_parser(p.call.model)
        try:
            if (hit := self._lookup(p.cache_key)) is not None:
                outcome = _Outcome(hit, cache_hit=True)
                first_token = time.perf_counter() - p.start
                if hit.content:
                    yield hit.content
                return
            request = p.adapter.build(p.call, api_key=p.api_key, base_url=p.base_url, stream=True)
            name = p.call.provider
            try:
                async with self._upstream.open_stream(p.adapter, request) as response:
                    async for event, data in iter_sse(response):
                        text = parser.feed(event, data)
                        if text:
                            if first_token is None:
                                first_token = time.perf_counter() - p.start
                            yield text
                        if parser.done or parser.error:
                            break
                if parser.error:
                    raise UpstreamError(f"{name} sent an error event: {parser.error}")
                if not parser.done:
                    raise UpstreamError(f"{name} ended the stream before its final event")
                if tail := parser.tail():
                    yield tail
            except UpstreamError as exc:
                outcome = _Outcome(parser.result(), str(exc))
            except httpx.TransportError as exc:
                outcome = _Outcome(parser.result(), f"{name} stream broke: {type(exc).__name__}: {exc}")
            except ValueError as exc:
                outcome = _Outcome(parser.result(), f"{name} sent an event this proxy cannot read: {exc}")
            else:
                completion = parser.result()
                outcome = _Outcome(completion)
                if p.cache_key is not None:
                    await self._store(p.cache_key, completion, name)
        finally:
            if outcome is None:  # closed or cancelled by the consumer
                outcome = _Outcome(parser.result(), "stream closed by the client before the end")
            stream.result = self._finish(p, outcome, time_to_first_token=first_token)

    # --- shared --------------------------------------------------------------------------------

    def _prepare(self, req: CompletionsSchema, log_sink: LogSink | None = None, tenant: str = "") -> _Prepared:
        """Validate ``req`` and resolve it to a provider call; raises :class:`ProxyConfigError`."""
        start = time.perf_counter()
        call = resolve_call(req)
        api_key, base_url = self.settings.resolve(call.provider, req.provider_api_key)
        key = None
        if req.cache and self.cache is not None:
            scope = cache_scope(tenant, api_key, base_url)
            key = cache_key(call, (req.metadata or {}).get(CACHE_SEED_KEY), scope=scope)
        return _Prepared(
            request=req,
            call=call,
            adapter=self._adapters[call.provider],
            api_key=api_key,
            base_url=base_url,
            cache_key=key,
            trace_id=req.trace_id or req.inference_id or str(uuid.uuid4()),
            start_timestamp=_now(),
            start=start,
            log_sink=log_sink if log_sink is not None else self._log_sink,
        )

    def _finish(self, p: _Prepared, outcome: _Outcome, *,
                time_to_first_token: float | None = None) -> CompletionsResponseSchema:
        latency = time.perf_counter() - p.start
        c = outcome.completion or Completion("", p.call.model)
        cost = 0.0
        if not outcome.cache_hit and c.input_tokens + c.output_tokens > 0:
            cost = self.prices.cost(c.input_tokens, c.output_tokens, c.model, p.call.model)
        response = CompletionsResponseSchema(
            content=c.content,
            latency=latency,
            input_tokens=c.input_tokens,
            output_tokens=c.output_tokens,
            total_tokens=c.input_tokens + c.output_tokens,
            cost=cost,
            model=c.model or p.call.model,
            provider=p.call.provider,
            cache_hit=outcome.cache_hit,
            status="error" if outcome.error else "success",
            error=outcome.error,
            trace_id=p.trace_id,
            start_timestamp=p.start_timestamp,
            end_timestamp=_now(),
            inference_id=p.trace_id,
        )
        if p.log_sink is not None:
            log = build_trace_log(p.request, p.call, response, time_to_first_token=time_to_first_token)
            if is_sampled(p.request.log_sample_rate, log["root_trace_id"]):
                try:
                    p.log_sink(log)
                except Exception:  # the answer matters more than its log
                    logger.exception("log_sink failed for trace %s", p.trace_id)
        return response


def resolve_call(req: CompletionsSchema) -> LLMCall:
    """The provider call ``req`` asks for: model, provider, rendered messages, params, functions.

    No settings are needed (no key, no URL), so a client can describe a request exactly as the
    proxy will, e.g. to build the same trace log. Raises :class:`ProxyConfigError` for a request
    that can never work: no model, no messages, an unknown provider, a deployed prompt.
    """
    cfg = req.llm_configuration
    messages = [*(cfg.history or []), *(cfg.messages or [])]
    if req.deployment_id and not messages:
        raise ProxyConfigError(
            f"deployment {req.deployment_id} was not resolved to a prompt: send it to a server's "
            "POST /completion (or use runner.proxy.prompts.apply_deployment), or send llm_configuration "
            "(model, provider, messages) instead of deployment_id"
        )
    model = cfg.model or (cfg.model_params.model if cfg.model_params else None)
    if not model:
        raise ProxyConfigError("llm_configuration.model is required")
    provider = cfg.provider.value if cfg.provider else _infer_provider(model)
    if provider not in PROVIDERS:
        raise ProxyConfigError(
            f"provider {provider!r} is not supported by this server; "
            f"use one of {', '.join(sorted(PROVIDERS))}"
        )
    if not messages:
        raise ProxyConfigError("llm_configuration.messages is empty: nothing to send")
    return LLMCall(
        provider=provider,
        model=model,
        messages=[_render(m, req.llm_inputs) for m in messages],
        params=_params(req),
        functions=cfg.functions or None,
        function_call=cfg.function_call,
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _infer_provider(model: str) -> str:
    name = model.lower()
    if name.startswith("claude"):
        return "anthropic"
    if name.startswith(("gpt-", "o1", "o3", "o4", "chatgpt-")):
        return "openai"
    raise ProxyConfigError(
        f"llm_configuration.provider is required for model {model!r} "
        f"(one of {', '.join(sorted(PROVIDERS))})"
    )


def _params(req: CompletionsSchema) -> dict[str, Any]:
    """Model params as sent: non-null, non-default, Parea names, extras kept, no ``model``."""
    mp = req.llm_configuration.model_params
    if mp is None:
        return {}
    params = mp.model_dump(exclude_none=True, exclude={"model"})
    for name, default in PARAM_DEFAULTS.items():
        if params.get(name) == default:
            del params[name]
    return params


def _render(message: MessageSchema, inputs: dict[str, Any] | None) -> dict[str, Any]:
    """``{"role", "content"}`` with ``{{name}}`` filled from ``inputs`` (unknown names kept,
    ``\\{{`` a literal ``{{``; see :func:`runner.proxy.prompts.fill`)."""

    def fill(text: str) -> str:
        return fill_template(text, inputs)

    content: Any = message.content
    if isinstance(content, str):
        content = fill(content)
    elif isinstance(content, list):
        content = [
            {**part, "text": fill(part["text"])}
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            else part
            for part in content
        ]
    return {"role": message.role.value, "content": content}

