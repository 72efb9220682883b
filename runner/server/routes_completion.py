"""``POST /completion`` and ``POST /completion/stream``: LLM calls through the server.

Both take a ``CompletionsSchema`` (``llm_configuration``: ``model``, ``provider``,
``model_params``, ``messages``, ``history``, ``functions``, ``function_call``) and are served by
one :class:`runner.proxy.Proxy` per app (made on the first call, closed at shutdown), whose
completion cache lives in the store (the SQLite file, or a table of the PostgreSQL database
that every server worker shares). Provider keys and base URLs come from the
server's environment (``OPENAI_API_KEY``, ``ANTHROPIC_BASE_URL`` ...; see
:mod:`runner.proxy.settings`); a request that cannot be served as configured gets 400 with a
``detail`` naming what to set, and one naming an experiment the caller cannot see gets 404.

Every completion is stored as a trace log under the caller's tenant, before the answer is sent
(``trace_id``, ``parent_trace_id``, ``root_trace_id``, ``experiment_uuid`` as the request names
them; ``log_omit*`` and ``log_sample_rate`` honoured), so an LLM call made inside an experiment
row adds its tokens and cost to the row's root trace. Concurrent completions commit their logs
together (:class:`runner.server.group_commit.GroupWriter`: one transaction per round, each
request still answered only after its own log is committed).

``/completion`` answers with the ``CompletionsResponseSchema``. A provider failure is not an
HTTP error: it is a 200 whose ``status`` is ``"error"`` (Parea's behaviour). When the provider
was still rate-limiting (429) after the server's retries, that 200 also carries a
``Retry-After`` header: how long this server holds back calls to that provider, so a client
(the runner's workers, on every machine of a cluster) waits as long before asking again.

``/completion/stream`` answers with server-sent events (``text/event-stream``, lines ending
in CRLF)::

    data: {"chunk": "Hel"}

    data: {"chunk": "lo!"}

    event: result
    data: {"chunk": "", "result": {...the CompletionsResponseSchema...}}

one event per text chunk, then one ``result`` event with the full response (tokens, cost,
status, error). The final event also carries an empty ``chunk``, and every event is one
``data`` line: the official SDK's ``p.stream()`` reads the first ``data`` line of what it
receives and yields its ``chunk``, so it sees the text and then ``""``. A provider failure
after the stream started shows only in the final response.

With a ``deployment_id`` (and ``llm_inputs``), the deployed prompt version fills
``llm_configuration`` first; what the request sets itself wins (see
:mod:`runner.server.routes_prompts`). An unknown deployment is a 404, a missing template
variable a 422 naming it, both before any provider call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from runner.proxy import (
    CompletionCache,
    CompletionsResponseSchema,
    CompletionsSchema,
    MemoryCompletionCache,
    Proxy,
    ProxySettings,
    SQLiteCompletionCache,
    StoreCompletionCache,
)
from runner.server.deps import OwnerDep, StoreDep
from runner.server.group_commit import GroupWriter
from runner.server.routes_prompts import resolve_deployment
from runner.store import Store
from runner.store.postgres import is_postgres_url

__all__ = ["aclose_proxy", "proxy_for", "router"]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await aclose_proxy(app)


router = APIRouter(tags=["completion"], lifespan=_lifespan)

_STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def proxy_for(app: Any) -> Proxy:
    """The app's proxy, made on first use from the server's environment (one per app)."""
    proxy: Proxy | None = getattr(app.state, "completion_proxy", None)
    if proxy is None:
        store: Store = app.state.store
        cache: CompletionCache
        if store.path == ":memory:":
            cache = MemoryCompletionCache()
        elif is_postgres_url(store.path):  # in the database: shared by the server's workers
            cache = StoreCompletionCache(store)
        else:
            cache = SQLiteCompletionCache(store.path)
        proxy = Proxy(cache, settings=ProxySettings.from_env())
        app.state.completion_proxy = proxy
    return proxy


async def aclose_proxy(app: Any) -> None:
    """Close the app's proxy and its cache connections, if it made one (at shutdown)."""
    proxy: Proxy | None = getattr(app.state, "completion_proxy", None)
    if proxy is not None:
        app.state.completion_proxy = None
        await proxy.aclose()
        if proxy.cache is not None:
            proxy.cache.close()


async def _check_experiment(request: Request, store: Store, owner: str, body: CompletionsSchema) -> None:
    """404 before any provider call for an experiment the caller cannot log to."""
    if body.experiment_uuid is not None:
        check = request.app.state.experiment_check
        await run_in_threadpool(check.check, store, owner, [{"experiment_uuid": body.experiment_uuid}])


def _writer(app: Any, store: Store) -> GroupWriter:
    """The app's group-commit writer of completion logs (one per app and store)."""
    writer: GroupWriter | None = getattr(app.state, "completion_log_writer", None)
    if writer is None or writer.store is not store:
        writer = app.state.completion_log_writer = GroupWriter(store)
    return writer


async def _store_logs(request: Request, store: Store, owner: str, logs: list[dict[str, Any]]) -> None:
    if logs:
        batch: list[Mapping[str, Any]] = list(logs)
        logs.clear()
        await _writer(request.app, store).write(owner, batch)


@router.post("/completion", response_model=CompletionsResponseSchema)
async def completion(body: CompletionsSchema, request: Request, store: StoreDep, owner: OwnerDep) -> Response:
    """Call the provider (or answer from the cache), log the call as a trace, return the response."""
    proxy = proxy_for(request.app)
    await _check_experiment(request, store, owner, body)
    body = await resolve_deployment(store, owner, body)
    logs: list[dict[str, Any]] = []
    answer = await proxy.complete(body, log_sink=logs.append, tenant=owner)
    await _store_logs(request, store, owner, logs)
    return Response(orjson.dumps(answer.model_dump()), media_type="application/json",
                    headers=_retry_after(answer))


def _retry_after(answer: CompletionsResponseSchema) -> dict[str, str] | None:
    """``Retry-After`` for an answer that failed on the provider's 429: what is left of this
    process's pause for that provider (the proxy's limiter ``llm:<provider>``), in whole seconds."""
    import math

    from runner.proxy import is_rate_limited
    from runner.ratelimit import limiter_for

    if answer.status == "success" or not answer.error or not is_rate_limited(answer.error):
        return None
    provider = answer.error.split(" ", 1)[0]  # "<provider> returned HTTP 429: ..."
    pause = limiter_for(f"llm:{provider}").paused_for()
    return {"retry-after": str(math.ceil(pause))} if pause > 0 else None


@router.post(
    "/completion/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "chunks, then the full response"}},
)
async def completion_stream(
    body: CompletionsSchema, request: Request, store: StoreDep, owner: OwnerDep
) -> StreamingResponse:
    """The completion as server-sent events: ``data: {"chunk": ...}`` lines, then ``event: result``."""
    proxy = proxy_for(request.app)
    await _check_experiment(request, store, owner, body)
    body = await resolve_deployment(store, owner, body)
    logs: list[dict[str, Any]] = []
    stream = proxy.stream(body, log_sink=logs.append, tenant=owner)  # configuration errors: 400 before streaming

    async def events() -> AsyncIterator[bytes]:
        finished = False
        try:
            async for text in stream:
                yield b"data: " + orjson.dumps({"chunk": text}) + b"\r\n\r\n"
            finished = True
        finally:
            if not finished:  # the client went away: log what was said, even while cancelled
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
                    await _store_logs(request, store, owner, logs)
        await _store_logs(request, store, owner, logs)
        result = stream.result.model_dump() if stream.result is not None else None
        yield b"event: result\r\ndata: " + orjson.dumps({"chunk": "", "result": result}) + b"\r\n\r\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers=_STREAM_HEADERS)
