"""An OpenAI-compatible gateway: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Any OpenAI-compatible client (the ``openai`` SDK, LangChain's ``ChatOpenAI``, LiteLLM) pointed
at ``base_url="http://HOST:PORT/v1"`` gets the proxy's caching, retries, cost accounting and
logging with no code change::

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="<a server API key>")
    client.chat.completions.create(model="anthropic/claude-3-5-haiku-latest", messages=[...])

* **The provider** is the model's prefix (``openai/gpt-4o-mini``, ``anthropic/claude-...``, any
  provider :mod:`runner.proxy.providers` serves), else inferred from the name (``claude-*``,
  ``gpt-*``, ``o1``...), else ``RUNNER_GATEWAY_PROVIDER`` (default ``openai``).
* **The key** is one of the server's API keys, as ``Authorization: Bearer <key>`` (the SDKs'
  header; ``x-api-key`` works too); provider keys stay in the server's environment.
* **The call** goes through the same :class:`runner.proxy.Proxy` as ``POST /completion``:
  the completion cache (per tenant: the tenant is part of the cache key), single flight,
  retries on 429 and 5xx, the price table; it holds a slot of the process-wide adaptive
  limiter of its provider, so a provider still rate-limiting after the retries lowers how many
  calls are in flight. Every call is stored as a trace of its own
  under the caller's tenant (``trace_name`` ``gateway-<provider>``, project
  ``RUNNER_PROJECT`` or ``default``), and its id is the response's ``id``.
* **Errors** come in OpenAI's format (``{"error": {"message", "type", "code"}}``): 400 for a
  request that cannot work, 401 without a valid key, 429 when the provider was still
  rate-limiting after the retries (with ``Retry-After``), 502 for any other provider failure.

Parameters are read with OpenAI's names (``temperature``, ``top_p``, ``max_tokens`` /
``max_completion_tokens``, ``frequency_penalty``, ``presence_penalty``, ``response_format``,
``seed``, ``stop`` ...), ``tools``/``tool_choice`` included; a function call comes back as the
message's ``tool_calls``. Assistant ``tool_calls`` and ``tool`` results in the request's history
are passed on as their text only. ``n`` > 1 and ``logprobs`` are not supported (400).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from runner.names import new_id
from runner.proxy import (
    CACHE_SEED_KEY,
    PROVIDERS,
    CompletionsResponseSchema,
    CompletionsSchema,
    ProxyConfigError,
    is_rate_limited,
)
from runner.server.auth import KeyRing
from runner.server.deps import OwnerDep, StoreDep
from runner.server.routes_completion import proxy_for
from runner.store import Store

__all__ = ["PREFIX", "BearerAuthMiddleware", "router", "to_completion_request"]

#: Where the OpenAI-compatible routes (and OTLP's ``/v1/traces``) live.
PREFIX = "/v1"
DEFAULT_PROVIDER_ENV = "RUNNER_GATEWAY_PROVIDER"

router = APIRouter(prefix=PREFIX, tags=["openai-compatible"])

#: OpenAI names -> Parea ``model_params`` names; others not in _NOT_PARAMS pass through as given
_PARAMS: dict[str, str] = {"temperature": "temp", "max_tokens": "max_length", "max_completion_tokens": "max_length"}
_NOT_PARAMS = frozenset({
    "model", "messages", "stream", "stream_options", "tools", "tool_choice", "functions", "function_call",
    "user", "metadata", "store", "n", "logprobs", "top_logprobs", "parallel_tool_calls", "service_tier",
})
_STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class GatewayError(Exception):
    """An error answered in OpenAI's format."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.headers = status, kind, code, headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": str(self), "type": self.kind, "param": None, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _provider_and_model(model: Any) -> tuple[str, str]:
    if not isinstance(model, str) or not model.strip():
        raise GatewayError(400, 'model is required: e.g. "openai/gpt-4o-mini" or "anthropic/claude-3-5-haiku-latest"')
    prefix, sep, rest = model.partition("/")
    if sep and prefix in PROVIDERS and rest:
        return prefix, rest
    name = model.lower()
    if name.startswith("claude"):
        return "anthropic", model
    if name.startswith(("gpt-", "o1", "o3", "o4", "chatgpt-")):
        return "openai", model
    default = os.environ.get(DEFAULT_PROVIDER_ENV) or "openai"
    if default not in PROVIDERS:
        raise GatewayError(500, f"{DEFAULT_PROVIDER_ENV}={default!r} is not a provider this server serves; "
                                f"use one of {', '.join(sorted(PROVIDERS))}", "server_error")
    return default, model


def _text(content: Any) -> Any:
    """A message's content as the proxy takes it: a string or content parts, never null."""
    return "" if content is None else content


def _message(m: Any) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise GatewayError(400, "messages must be a list of {\"role\", \"content\"} objects")
    role = m.get("role")
    if role == "developer":
        role = "system"
    content = _text(m.get("content"))
    if role == "assistant" and m.get("tool_calls") and not content:
        content = json.dumps([c.get("function") for c in m["tool_calls"] if isinstance(c, dict)])
    return {"role": role, "content": content}


def to_completion_request(body: Any, project: str, owner: str = "") -> tuple[CompletionsSchema, str]:
    """An OpenAI chat completion request as the proxy's :class:`CompletionsSchema`; and the
    model name to answer with. Raises :class:`GatewayError` (400) for what cannot be served.

    The caller's tenant is part of the cache key (as the cache seed), so tenants never read
    each other's cached answers."""
    if not isinstance(body, dict):
        raise GatewayError(400, "the body must be a JSON object (an OpenAI chat completion request)")
    provider, model = _provider_and_model(body.get("model"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise GatewayError(400, "messages must be a non-empty list of {\"role\", \"content\"} objects")
    if (body.get("n") or 1) != 1:
        raise GatewayError(400, "n > 1 is not supported by this gateway: send n requests")
    if body.get("logprobs"):
        raise GatewayError(400, "logprobs are not supported by this gateway")
    params: dict[str, Any] = {}
    for key, value in body.items():
        if key not in _NOT_PARAMS and value is not None:
            params[_PARAMS.get(str(key), str(key))] = value
    config: dict[str, Any] = {
        "model": model,
        "provider": provider,
        "messages": [_message(m) for m in messages],
        "model_params": params,
    }
    tools = body.get("tools")
    if tools:
        config["functions"] = [t.get("function") for t in tools if isinstance(t, dict) and t.get("function")]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        config["function_call"] = {"name": str(choice["function"].get("name"))}
    elif isinstance(choice, str):
        config["function_call"] = choice
    request = {
        "trace_id": new_id(),
        "llm_configuration": config,
        "project_name": project,
        "trace_name": f"gateway-{provider}",
        "end_user_identifier": body.get("user") if isinstance(body.get("user"), str) else None,
        "metadata": {"gateway": "openai", "requested_model": body.get("model"),
                     **({CACHE_SEED_KEY: f"tenant:{owner}"} if owner else {})},
    }
    try:
        return CompletionsSchema.model_validate(request), str(body.get("model"))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(x) for x in err["loc"] if x not in ("llm_configuration",))
        raise GatewayError(400, f"invalid request: {loc}: {err['msg']}") from None


def _tool_calls(content: str) -> list[dict[str, Any]] | None:
    """The proxy's function-call content (``[{"name", "arguments"}]``) as OpenAI ``tool_calls``."""
    if not content.startswith("[{"):
        return None
    try:
        calls = json.loads(content)
    except ValueError:
        return None
    if not all(isinstance(c, dict) and "name" in c and "arguments" in c for c in calls):
        return None
    return [
        {"id": f"call_{i}", "type": "function",
         "function": {"name": c["name"], "arguments": c["arguments"] if isinstance(c["arguments"], str)
                      else json.dumps(c["arguments"])}}
        for i, c in enumerate(calls)
    ]


def _usage(r: CompletionsResponseSchema) -> dict[str, int]:
    return {"prompt_tokens": r.input_tokens, "completion_tokens": r.output_tokens, "total_tokens": r.total_tokens}


def _failure(r: CompletionsResponseSchema) -> GatewayError:
    if is_rate_limited(r.error):
        return GatewayError(429, f"the provider is rate-limiting after retries: {r.error}", "rate_limit_error",
                            "rate_limit_exceeded", {"retry-after": "1"})
    return GatewayError(502, f"the provider call failed: {r.error}", "upstream_error")


def _completion_body(r: CompletionsResponseSchema, model: str, with_tools: bool) -> dict[str, Any]:
    calls = _tool_calls(r.content) if with_tools else None
    message: dict[str, Any] = {"role": "assistant", "content": None if calls else r.content}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{r.trace_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": _usage(r),
        "system_fingerprint": None,
        # not OpenAI's: what the gateway knows about the call
        "runner": {"trace_id": r.trace_id, "cache_hit": r.cache_hit, "cost": r.cost, "provider": r.provider},
    }


async def _store_logs(store: Store, owner: str, logs: list[dict[str, Any]]) -> None:
    if logs:
        batch = logs[:]
        logs.clear()
        await run_in_threadpool(store.upsert_traces, batch, owner)


def _project() -> str:
    return os.environ.get("RUNNER_PROJECT") or "default"


@router.post("/chat/completions", response_model=None)
async def chat_completions(request: Request, store: StoreDep, owner: OwnerDep) -> Response:
    """OpenAI's chat completion endpoint, served by the proxy (``stream: true`` included)."""
    from runner.ratelimit import limiter_for

    try:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise GatewayError(400, f"the body is not valid JSON: {exc}") from None
        req, model = to_completion_request(body, _project(), owner)
        proxy = proxy_for(request.app)
        logs: list[dict[str, Any]] = []
        with_tools = bool(req.llm_configuration.functions)
        provider = str(req.llm_configuration.provider.value if req.llm_configuration.provider else "openai")
        if body.get("stream"):
            try:
                stream = proxy.stream(req, log_sink=logs.append)
            except ProxyConfigError as exc:
                raise GatewayError(400, str(exc)) from None
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(_events(stream, str(req.trace_id), store, owner, logs, model, usage),
                                     media_type="text/event-stream", headers=_STREAM_HEADERS)
        async with limiter_for(f"llm:{provider}").slot() as slot:
            try:
                answer = await proxy.complete(req, log_sink=logs.append)
            except ProxyConfigError as exc:
                raise GatewayError(400, str(exc)) from None
            if answer.status != "success" and is_rate_limited(answer.error):
                slot.rate_limited(None)
            else:
                slot.succeeded()
        await _store_logs(store, owner, logs)
        if answer.status != "success":
            raise _failure(answer)
        return Response(orjson.dumps(_completion_body(answer, model, with_tools)), media_type="application/json")
    except GatewayError as exc:
        return exc.response()


def _chunk(trace_id: str, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": f"chatcmpl-{trace_id}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def _events(stream: Any, trace_id: str, store: Store, owner: str, logs: list[dict[str, Any]], model: str,
                  include_usage: bool) -> AsyncIterator[bytes]:
    import anyio

    finished = False
    try:
        first = True
        async for text in stream:
            if first:
                yield _chunk(trace_id, model, {"role": "assistant", "content": ""})
                first = False
            yield _chunk(trace_id, model, {"content": text})
        finished = True
    finally:
        if not finished:  # the client went away: log what was said, even while cancelled
            with anyio.CancelScope(shield=True):
                await stream.aclose()
                await _store_logs(store, owner, logs)
    await _store_logs(store, owner, logs)
    result: CompletionsResponseSchema | None = stream.result
    if result is not None and result.status != "success":
        err = _failure(result)
        yield b"data: " + orjson.dumps({"error": {"message": str(err), "type": err.kind, "code": err.code}}) + b"\n\n"
        return
    yield _chunk(trace_id, model, {}, "stop")
    if include_usage and result is not None:
        body = {"id": f"chatcmpl-{trace_id}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "choices": [], "usage": _usage(result)}
        yield b"data: " + orjson.dumps(body) + b"\n\n"
    yield b"data: [DONE]\n\n"


@router.get("/models")
async def models() -> dict[str, Any]:
    """The priced models, as ``provider/model`` ids (any other model name works too)."""
    from runner.proxy import DEFAULT_PRICES

    data = []
    for name in sorted(DEFAULT_PRICES):
        provider = "anthropic" if name.startswith("claude") else "openai"
        data.append({"id": f"{provider}/{name}", "object": "model", "created": 0, "owned_by": provider})
    return {"object": "list", "data": data}


class BearerAuthMiddleware:
    """Requests under ``/v1`` carry one of the server's keys as ``Authorization: Bearer`` (or
    ``x-api-key``); the key's tenant goes to ``scope["state"]["owner"]``, as for the Parea API.

    Without keys configured the server is open and the owner is ``""``. A request without a
    valid key gets OpenAI's 401 body."""

    def __init__(self, app: ASGIApp, *, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not self.keys.enabled or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        presented: list[str] = []
        for name, value in scope["headers"]:
            text = value.decode("latin-1").strip()
            if name == b"authorization" and text[:7].lower() == "bearer ":
                presented.append(text[7:].strip())
            elif name in (b"x-api-key", b"x-user-id"):
                presented.append(text)
        for key in presented:
            owner = self.keys.owner_for(key)
            if owner is not None:
                scope.setdefault("state", {})["owner"] = owner
                await self.app(scope, receive, send)
                return
        message = ("this API key is not accepted by the server; use one of its --api-key keys" if presented
                   else "missing API key: send one of the server's keys as 'Authorization: Bearer <key>'")
        await GatewayError(401, message, "invalid_request_error", "invalid_api_key",
                           {"www-authenticate": "Bearer"}).response()(scope, receive, send)
