"""LLM calls from user code: :func:`completion` and :func:`acompletion`, traced automatically.

>>> from runner import completion
>>> def answer(question: str) -> str:
...     return completion(question, model="gpt-4o-mini").content                # doctest: +SKIP

Called inside an experiment row, a completion becomes a child span of the current span: it gets
its own ``trace_id``, the row's ``root_trace_id`` and ``experiment_uuid``, the right ``depth``
and ``execution_order``, and its log (configuration, messages, output, tokens, cost, latency,
``cache_hit``) is stored with the row, so the row's tokens and cost add up at its root. Outside
a row it is logged as a trace of its own.

**Where the call goes.** The running experiment's backend decides: an experiment writing to a
server (``base_url=`` or ``PAREA_BASE_URL``) sends it to that server's ``POST /completion``,
which calls the provider and logs it under the same ``trace_id`` (a log upsert: the row's copy
and the server's are the same log, stored once). An embedded experiment calls the provider from
this process, through the same proxy code the server uses (:mod:`runner.proxy`), with its
completion cache in the experiment's SQLite file. Outside an experiment, ``PAREA_BASE_URL``
chooses, else the embedded store (``RUNNER_DB``, default ``.runner/runner.db``). Provider keys
and base URLs come from the usual variables (``OPENAI_API_KEY``, ``ANTHROPIC_BASE_URL`` ...,
see :mod:`runner.proxy.settings`) of the process that calls the provider.

**One loop for every call.** All calls run on one background event loop thread, which keeps
one proxy per SQLite file and one HTTP client per server: a sync ``completion()`` on a worker
thread does not start an event loop per call, concurrent identical calls from different rows
share one provider call, and connections are reused. :func:`close` (also run at exit) shuts it.

**Errors.** A request that can never work raises :class:`~runner.proxy.ProxyConfigError` (a
``ConfigError``, naming the env var to set) before anything is sent. A completion that comes
back with ``status: "error"`` raises :class:`~runner.errors.CompletionError` (the response is
``err.response``; the failed call is still logged), or :class:`~runner.errors.RateLimitError`
when the provider was still rate-limiting after the proxy's retries, so ``retries=`` on the
experiment can run the row again later. A server that refuses the request raises
:class:`~runner.errors.BackendError` with its ``detail`` (429 after retries: ``RateLimitError``).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from runner.backends.target import Target, resolve_target
from runner.errors import BackendError, CompletionError, ConfigError, RateLimitError
from runner.names import new_id
from runner.pipeline.tracing import Span, current_span, current_target

if TYPE_CHECKING:
    import httpx

    from runner.proxy import CompletionCache, CompletionsResponseSchema, CompletionsSchema, LLMCall, Proxy
    from runner.proxy.http_pool import ClientPool
    from runner.ratelimit import Slot
    from runner.store import Store

__all__ = ["LLMRoute", "acompletion", "close", "completion"]

T = TypeVar("T")

#: Message lists as ``completion()`` takes them: a prompt string, or ``{"role", "content"}`` dicts.
Messages = str | Sequence[Mapping[str, Any]] | Sequence[Any] | None

#: ``completion(**kwargs)``: these go into ``llm_configuration``; any other ``CompletionsSchema``
#: field (``llm_inputs``, ``tags``, ``target``, ``log_omit``, ``provider_api_key`` ...) is sent as is.
_CONFIG_KWARGS = frozenset({"history"})
_NOT_KWARGS = frozenset({"llm_configuration", "stream"})

_HTTP_RETRIES = 3
#: Completions of one provider in flight at once, process-wide (the adaptive limiter's ceiling;
#: it halves on 429s). The embedded proxy's own pool allows 1,000 connections by default.
_MAX_IN_FLIGHT = 1000
#: Connections to one server: below ``serve``'s default ``--max-connections`` (512), past which
#: it closes new connections at once.
_HTTP_MAX_CONNECTIONS = 500


#: where :func:`completion` sends calls: a server's ``/completion`` (``base_url`` set), or the
#: in-process proxy caching in the store ``db``
LLMRoute = Target


# -- the public API ------------------------------------------------------------------------------
def completion(
    messages: Messages = None,
    *,
    model: str | None = None,
    provider: str | None = "openai",
    model_params: Mapping[str, Any] | None = None,
    functions: Sequence[Any] | None = None,
    function_call: str | Mapping[str, str] | None = None,
    cache: bool = True,
    name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> CompletionsResponseSchema:
    """Send one chat completion and return the full response (``.content``, tokens, ``.cost`` ...).

    ``messages`` is a prompt string (one user message) or a list of ``{"role", "content"}``
    dicts; ``{{name}}`` placeholders are filled from ``llm_inputs=``. ``model_params`` uses the
    Parea names (``temp``, ``top_p``, ``max_length``, ``response_format``, plus any provider
    parameter such as ``seed``); ``provider=None`` infers it from the model name. ``cache=False``
    always calls the provider. ``name`` names the span (default ``llm-<provider>``).

    **Stored prompts.** ``deployment_id="p-..."`` with ``llm_inputs={...}`` calls the version that
    deployment serves (model, provider, params, messages); inside an ``Experiment(prompt=...)``,
    ``completion(llm_inputs={...})`` with no model and no messages calls the experiment's prompt
    version. Arguments given override the stored fields (``provider`` only together with
    ``model``); a template variable missing from ``llm_inputs`` raises
    :class:`~runner.errors.ConfigError` naming it; the trace's metadata records ``prompt``
    (``NAME@VERSION``), ``prompt_version`` and ``deployment_id``.

    Inside an experiment with ``n_trials > 1`` each trial after the first gets its own cache
    entry (``metadata["cache_seed"]`` is the trial index unless you set it), so trials are
    fresh samples and re-runs are cached.

    >>> r = completion([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    ...                model="claude-3-5-haiku-latest", provider="anthropic",
    ...                model_params={"temp": 0, "max_length": 50})                # doctest: +SKIP
    >>> r.content, r.input_tokens, r.output_tokens, r.cost, r.cache_hit         # doctest: +SKIP
    """
    span = current_span()
    call = _prepare(span, messages, model, provider, model_params, functions, function_call, cache, name,
                    metadata, kwargs)
    response, log = _worker.submit(_worker.run(call)).result()
    return _finish(call, response, log)


async def acompletion(
    messages: Messages = None,
    *,
    model: str | None = None,
    provider: str | None = "openai",
    model_params: Mapping[str, Any] | None = None,
    functions: Sequence[Any] | None = None,
    function_call: str | Mapping[str, str] | None = None,
    cache: bool = True,
    name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> CompletionsResponseSchema:
    """:func:`completion` for async code: the same arguments, the same response and errors."""
    span = current_span()
    call = _prepare(span, messages, model, provider, model_params, functions, function_call, cache, name,
                    metadata, kwargs)
    response, log = await asyncio.wrap_future(_worker.submit(_worker.run(call)))
    return _finish(call, response, log)


def close() -> None:
    """Close the in-process proxies, caches and HTTP clients :func:`completion` uses.

    Runs at interpreter exit; call it yourself after changing provider settings in the
    environment (the next call starts afresh and reads them again)."""
    _worker.close()


# -- one call: prepared in the caller, run on the background loop, finished in the caller ----------
@dataclass(frozen=True)
class _Call:
    span: Span | None
    route: LLMRoute
    request: CompletionsSchema
    #: the resolved provider call, for the row's copy of a log the server makes (HTTP only)
    llm_call: LLMCall | None


def _prepare(
    span: Span | None,
    messages: Messages,
    model: str | None,
    provider: str | None,
    model_params: Mapping[str, Any] | None,
    functions: Sequence[Any] | None,
    function_call: str | Mapping[str, str] | None,
    cache: bool,
    name: str | None,
    metadata: Mapping[str, Any] | None,
    kwargs: dict[str, Any],
) -> _Call:
    from pydantic import ValidationError

    from runner.pipeline.tracing import current_prompt
    from runner.proxy import CACHE_SEED_KEY, CompletionsSchema, resolve_call
    from runner.proxy.prompts import apply_deployment

    fields = set(CompletionsSchema.model_fields) - _NOT_KWARGS
    unknown = sorted(set(kwargs) - fields - _CONFIG_KWARGS)
    if unknown:
        raise ConfigError(
            f"completion() got unexpected keyword argument(s) {', '.join(unknown)}; besides its own it accepts "
            f"history and the fields of a Parea completion request: {', '.join(sorted(fields))}"
        )
    deployed = bool(kwargs.get("deployment_id"))
    version = current_prompt.get() if not deployed and model is None and messages is None else None
    if model is None and not deployed and version is None:
        raise ConfigError(
            "completion() needs model=... (and messages), or deployment_id=... for a deployed prompt, "
            "or to run inside an Experiment(prompt='NAME@VERSION')"
        )
    config: dict[str, Any] = {
        "model": model,
        # a stored prompt brings its provider: only an overriding model brings another
        "provider": provider if model is not None or not (deployed or version) else None,
        "model_params": dict(model_params) if model_params is not None else None,
        "messages": _messages(messages),
        "functions": list(functions) if functions is not None else None,
        "function_call": function_call,
    }
    body: dict[str, Any] = {"cache": cache, "trace_name": name, "trace_id": new_id()}
    meta = dict(metadata or {})
    if span is not None:
        run = span.run
        body.update(
            parent_trace_id=span.trace_id,
            root_trace_id=span.root_trace_id,
            experiment_uuid=run.experiment_uuid,
            project_name=run.project_name or "default",
            project_uuid=run.project_uuid,
        )
        # the proxy's trace log reads depth and execution order from the metadata
        meta.update(depth=span.depth + 1, execution_order=run.next_order())
        trial = run.root_metadata.get("trial")
        if cache and trial and CACHE_SEED_KEY not in meta:
            meta[CACHE_SEED_KEY] = trial
    body["metadata"] = meta or None
    for key, value in kwargs.items():
        (config if key in _CONFIG_KWARGS else body)[key] = value
    try:
        request = CompletionsSchema.model_validate({**body, "llm_configuration": config})
    except ValidationError as exc:
        raise ConfigError(f"completion(): invalid request: {_first_error(exc)}") from None
    if version is not None:
        request = apply_deployment(request, version)  # checks llm_inputs strictly
    route = _route(span)
    # over HTTP, check here what the server would refuse, and keep the call to log the row's copy
    # (a deployment is resolved by the server: it logs the call, the row keeps no copy)
    llm_call = resolve_call(request) if route.base_url and not request.deployment_id else None
    return _Call(span, route, request, llm_call)


def _messages(messages: Messages) -> list[Any] | None:
    if messages is None:
        return None
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if isinstance(messages, Mapping):
        raise ConfigError("completion(): messages must be a prompt string or a list of messages, not one dict")
    return list(messages)


def _first_error(exc: Any) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])


def _finish(call: _Call, response: CompletionsResponseSchema, log: dict[str, Any] | None) -> CompletionsResponseSchema:
    from runner.proxy import is_rate_limited
    from runner.proxy.tracelog import build_trace_log, is_sampled

    if call.span is not None:
        if log is None and call.llm_call is not None:
            # the server logged it; the row carries the same log, so the upsert stores it once
            built = build_trace_log(call.request, call.llm_call, response)
            log = built if is_sampled(call.request.log_sample_rate, built["root_trace_id"]) else None
        if log is not None:
            call.span.run.children.append(_without_nulls(log))
    if response.status != "success":
        cls = RateLimitError if is_rate_limited(response.error) else CompletionError
        raise cls(f"{response.provider} {response.model} completion failed: {response.error}", response)
    return response


def _without_nulls(log: dict[str, Any]) -> dict[str, Any]:
    # the runner's logs carry no nulls: a null would also erase the field in the store's merge
    return {k: v for k, v in log.items() if v is not None}


# -- which backend -------------------------------------------------------------------------------
def _route(span: Span | None) -> Target:
    """The running experiment's door (the run sets it in the context: rows, their threads and
    their scorers all see it), else the one :func:`runner.backends.target.resolve_target` picks."""
    target = current_target.get()
    if target is not None:
        return target
    return resolve_target()


# -- the background loop ---------------------------------------------------------------------------
@dataclass
class _Embedded:
    proxy: Proxy
    cache: CompletionCache
    #: opened on the first call made outside a row, whose log is stored as a trace of its own
    store: Store | None = None


class _Worker:
    """One event loop thread for every completion of the process, and what lives on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._atexit = False
        # touched on the loop thread only
        self._embedded: dict[str, _Embedded] = {}
        self._clients: dict[tuple[str, str | None], ClientPool] = {}

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._running_loop())

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=self._serve, args=(loop,), name="runner-llm", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
                if not self._atexit:
                    atexit.register(self.close)
                    self._atexit = True
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if threading.current_thread() is thread:  # pragma: no cover - close() from a completion
            raise RuntimeError("runner.integrations.llm.close() cannot be called from the completion loop itself")
        # at exit a stuck close must not hang the interpreter: give up after a while
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._aclose(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    async def _aclose(self) -> None:
        embedded, self._embedded = self._embedded, {}
        clients, self._clients = self._clients, {}
        for e in embedded.values():
            await e.proxy.aclose()
            e.cache.close()
            if e.store is not None:
                e.store.close()
        for client in clients.values():
            await client.aclose()

    # -- on the loop -------------------------------------------------------------------------
    async def run(self, call: _Call) -> tuple[CompletionsResponseSchema, dict[str, Any] | None]:
        """The response, and the log to attach to the row (``None``: none, or the server made it).

        Each call holds a slot of the process-wide adaptive limiter of its provider: a provider
        (or server) still rate-limiting after its retries halves how many calls are in flight
        across every row of every run in the process, instead of each worker hammering it."""
        from runner.proxy import is_rate_limited
        from runner.ratelimit import limiter_for

        route = call.route
        provider = call.request.llm_configuration.provider if call.request.llm_configuration else None
        key = str(getattr(provider, "value", provider) or "default")
        async with limiter_for(f"llm:{key}", _MAX_IN_FLIGHT).slot() as slot:
            try:
                if route.base_url:
                    result: tuple[CompletionsResponseSchema, dict[str, Any] | None] = (
                        await self._over_http(route.base_url, route.api_key, call.request, slot),
                        None,
                    )
                else:
                    result = await self._in_process(route.db, call)
            except RateLimitError:
                slot.rate_limited(None)
                raise
            if result[0].status != "success" and is_rate_limited(result[0].error):
                slot.rate_limited(None)
            else:
                slot.succeeded()
            return result

    async def _in_process(self, db_path: str, call: _Call) -> tuple[CompletionsResponseSchema, dict[str, Any] | None]:
        state = self._embedded_for(db_path)
        request = call.request
        if request.deployment_id:
            request = await asyncio.to_thread(self._resolve_deployment, state, db_path, request)
        logs: list[dict[str, Any]] = []
        response = await state.proxy.complete(request, log_sink=logs.append)
        log = logs[0] if logs else None
        if log is not None and call.span is None and db_path != ":memory:":
            if state.store is None:
                from runner.store import Store

                state.store = Store(db_path)
            await asyncio.to_thread(state.store.upsert_traces, [_without_nulls(log)], "")
            log = None
        return response, log

    @staticmethod
    def _resolve_deployment(state: _Embedded, db_path: str, request: CompletionsSchema) -> CompletionsSchema:
        """``request`` with its deployment (in the SQLite file ``db_path``) applied."""
        from runner.proxy.prompts import DeployedPrompt, apply_deployment
        from runner.store import Store

        if state.store is None:
            state.store = Store(db_path)
        assert request.deployment_id is not None
        d = state.store.get_deployment(request.deployment_id)
        return apply_deployment(request, DeployedPrompt(d["deployment_id"], d["name"], d["version"], d["spec"]))

    def _embedded_for(self, db_path: str) -> _Embedded:
        from runner.store.postgres import is_postgres_url

        remote = db_path == ":memory:" or is_postgres_url(db_path)
        key = db_path if remote else str(Path(db_path).resolve())
        state = self._embedded.get(key)
        if state is None:
            from runner.proxy import MemoryCompletionCache, Proxy, ProxySettings, SQLiteCompletionCache
            from runner.proxy.cache import StoreCompletionCache
            from runner.store import Store

            settings = ProxySettings.from_env()
            cache: CompletionCache = (
                MemoryCompletionCache() if key == ":memory:"
                else StoreCompletionCache(Store(key), close_store=True) if remote  # in the database
                else SQLiteCompletionCache(key)
            )
            state = self._embedded[key] = _Embedded(Proxy(cache, settings=settings), cache)
        return state

    async def _over_http(self, base_url: str, api_key: str | None, request: CompletionsSchema,
                         slot: Slot | None = None) -> CompletionsResponseSchema:
        import httpx
        import orjson

        from runner.backends.http.transport import Attempt, error_for, headers_for, is_retryable, policy
        from runner.proxy import CompletionsResponseSchema
        from runner.proxy.http_pool import ClientPool

        base_url = base_url.rstrip("/")
        client = self._clients.get((base_url, api_key))
        if client is None:
            # no read timeout of our own: the server bounds each provider call and its retries
            client = ClientPool(_HTTP_MAX_CONNECTIONS, headers=headers_for(api_key),
                                timeout=httpx.Timeout(None, connect=10.0, pool=None))
            self._clients[(base_url, api_key)] = client
        url = base_url + "/completion"
        body = orjson.dumps(request.model_dump(mode="json", exclude_none=True))
        attempts = 0

        async def once() -> CompletionsResponseSchema:
            nonlocal attempts
            attempts += 1
            try:
                response = await client.post(url, content=body)
            except httpx.TransportError as exc:
                raise Attempt(BackendError(
                    f"POST {url} failed after {attempts} attempts: {type(exc).__name__}: {exc}; "
                    "is the server running, and is the base URL right?"
                )) from None
            if response.status_code == 200:
                answer = CompletionsResponseSchema.model_validate_json(response.content)
                if slot is not None and answer.status != "success" and response.headers.get("retry-after"):
                    # the provider still rate-limited the server after its retries: the server
                    # says how long it holds back, and every call here (and on the cluster) waits
                    slot.rate_limited(response.headers["retry-after"])
                return answer
            if response.status_code == 429 and slot is not None:
                # every call to this provider in the process (or the cluster) waits out the Retry-After
                slot.rate_limited(response.headers.get("retry-after"))
            if is_retryable(response.status_code):
                raise Attempt(_refused(url, response, error_for("POST", url, response)), response)
            raise _refused(url, response, error_for("POST", url, response))

        paused = slot.limiter.paused_for if slot is not None else None
        try:
            return await policy(_HTTP_RETRIES, backoff=0.5, max_backoff=8.0).acall(once, floor=paused)
        except Attempt as exc:  # no attempt left
            raise exc.final from None


def _refused(url: str, response: httpx.Response, default: BackendError) -> Exception:
    """The error for a non-2xx answer of a server's ``/completion``."""
    from runner.proxy import ProxyConfigError

    status = response.status_code
    if status == 429:
        return RateLimitError(f"the server at {url} is rate-limiting completions (429) after retries: {default}")
    if status in (400, 422):
        return ProxyConfigError(f"the server refused the completion: {default}")
    return default


_worker = _Worker()
