"""The FastAPI app: the Parea REST API over a :class:`runner.store.Store`.

>>> from runner.store import Store
>>> app = create_app(Store(":memory:"), api_keys=["secret"])

Errors the store raises on purpose become the status codes of the Parea API, always with a
``{"detail": ...}`` body: unknown ids 404, an invalid or taken run name 400, a bad dataset 400,
a store failure 503. Schema errors keep FastAPI's 422 body.

Bodies are bounded before any route sees them (:class:`BodyLimitMiddleware`): more than
``max_body_bytes`` (16 MiB by default) is a 413, JSON nested deeper than :data:`MAX_JSON_DEPTH`
levels a 422, and so is an integer the store cannot hold (beyond 64 bits), a non-finite number
(``NaN``, ``Infinity``, ``1e999``), a lone UTF-16 surrogate or a NUL character anywhere in a
JSON body (:mod:`runner.server.json_values`), each with the field's location.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from typing import Any

import anyio
import orjson
from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runner.errors import BackendError, ConfigError, ConflictError, NotFoundError, RunNameError
from runner.schema import API_PREFIX, TraceLogSchema
from runner.server import (
    langchain,
    routes_completion,
    routes_datasets,
    routes_experiments,
    routes_openai,
    routes_otlp,
    routes_prompts,
    routes_traces,
    ui,
)
from runner.server.auth import AuthMiddleware, KeyRing
from runner.server.browser import BrowserGuard, Sessions, allowed_host_list
from runner.server.json_values import bad_value
from runner.server.routes_traces import ExperimentCheck
from runner.store import Store

__all__ = [
    "BODY_TIMEOUT",
    "EXTENSIONS",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "SERVER_NAME",
    "VERSION",
    "BodyLimitMiddleware",
    "create_app",
    "json_too_deep",
]

SERVER_NAME = "runner"
VERSION = "0.1.0"

#: What this server offers beyond the Parea API, as advertised by ``GET /``:
#: ``trace_logs_batch`` — ``POST /trace_logs/batch`` with ``{"logs": [...]}``, one transaction;
#: ``collections`` — ``GET /collections`` lists datasets;
#: ``experiment_uuid`` — ``POST /experiment`` takes a client-chosen ``uuid``, making retries safe;
#: ``delete_traces`` — ``POST /experiment/{uuid}/delete_traces`` removes root traces (resumed runs);
#: ``prompts`` — versioned prompts and deployments under ``/prompts`` and ``/deployments`` (routes_prompts);
#: ``run_errors`` — ``POST /experiment/{uuid}/finished`` takes ``dataset_level_errors`` and
#: ``scorer_errors`` (name → message), stored with the run and listed by ``POST /experiments``.
EXTENSIONS = ("trace_logs_batch", "collections", "experiment_uuid", "delete_traces", "prompts", "run_errors")

#: The largest request body read (bytes); the runner's client splits its batches at 8 MB.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: How deep a JSON body may nest: the trace log routes' parser (pydantic's) stops at 200 levels,
#: and so does :class:`BodyLimitMiddleware` for every other route, below the store's JSON
#: encoder's own limit (254) and Python's recursion limit.
MAX_JSON_DEPTH = 200
#: seconds a request body may go silent; past it, it must also average 1 KB/s (:data:`MIN_BODY_RATE`)
BODY_TIMEOUT = 30.0
MIN_BODY_RATE = 1024


def create_app(
    store: Store,
    *,
    api_keys: Iterable[str] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    allowed_hosts: Iterable[str] = (),
    body_timeout: float = BODY_TIMEOUT,
) -> FastAPI:
    """The app serving ``store`` under ``/api/parea/v1``; with ``api_keys``, one tenant per key;
    request bodies above ``max_body_bytes`` get 413, and 408 if ``body_timeout`` seconds pass
    without a byte of them (or, past that, they arrive slower than 1 KB/s). Only requests whose ``Host`` is a loopback
    name or one of ``allowed_hosts`` are answered (see :mod:`runner.server.browser`).

    The store stays the caller's: the app neither opens nor closes it. No interactive API docs
    are served (they would load scripts from a CDN); the OpenAPI document is at
    ``/api/parea/v1/openapi.json``."""
    api_keys = [k for k in api_keys if k]
    keys = KeyRing(api_keys)
    app = FastAPI(
        title="runner",
        version=VERSION,
        description="The Parea REST API (and a few extensions) over the runner's SQLite store.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = store
    app.state.experiment_check = ExperimentCheck()

    @app.get(API_PREFIX + "/", tags=["health"])
    async def health() -> dict[str, str]:
        """Health check; also names the extensions this server offers (comma-separated)."""
        return {"status": "ok", "server": SERVER_NAME, "version": VERSION, "extensions": ",".join(EXTENSIONS)}

    for module in (routes_experiments, routes_traces, routes_datasets, routes_completion, langchain, routes_prompts):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(routes_openai.router)  # the OpenAI-compatible gateway at /v1 (issue 19)
    app.include_router(routes_otlp.router)  # OTLP/HTTP traces in at /v1/traces (issue 19)
    ui.mount(app, keys, Sessions(api_keys))  # the web UI's pages at /, over the same store, for the same keys

    def detail(status: int, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

        return handler

    # the most specific class wins: Starlette looks handlers up along the exception's MRO
    app.add_exception_handler(NotFoundError, detail(404))
    app.add_exception_handler(ConflictError, detail(409))
    app.add_exception_handler(RunNameError, detail(400))
    app.add_exception_handler(ConfigError, detail(400))
    app.add_exception_handler(BackendError, detail(503, {"Retry-After": "1"}))
    app.add_exception_handler(sqlite3.OperationalError, detail(503, {"Retry-After": "1"}))
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(OverflowError, _out_of_range)  # sqlite3: an int beyond 64 bits
    app.add_exception_handler(TypeError, _out_of_range)  # orjson: the same, when storing JSON
    # inside AuthMiddleware (added last, so outermost): a request without a key gets 401 unread
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=max_body_bytes,
        max_depth=MAX_JSON_DEPTH,
        timeout=body_timeout,
        json_prefix=API_PREFIX + "/",
        # these routes parse their bodies with pydantic's own depth limit (see ingest.py): a
        # second scan of the largest bodies would only cost time
        self_checked=frozenset({("POST", API_PREFIX + "/trace_log"), ("POST", API_PREFIX + "/trace_logs/batch")}),
    )
    # inside AuthMiddleware: a request without a key gets its 401 first
    app.add_middleware(BrowserGuard, api_prefix=API_PREFIX + "/", machine_prefixes=("/v1/",))
    app.add_middleware(AuthMiddleware, keys=keys, prefix=API_PREFIX)
    app.add_middleware(routes_openai.BearerAuthMiddleware, keys=keys)  # /v1: Authorization: Bearer
    # outermost: a foreign Host header is refused before anything else is looked at
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_host_list(allowed_hosts), www_redirect=False)

    def openapi() -> dict[str, Any]:
        # the trace log routes read their bodies themselves (the fast path) and refer to
        # TraceLogSchema by name: put it, and what it refers to, in the components
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            log_schema = TraceLogSchema.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(log_schema.pop("$defs", {}))
            components["TraceLogSchema"] = log_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, also when the rejected input is bytes that are not UTF-8 (which FastAPI's own
    handler would fail to encode: a 500)."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {**e, "input": e["input"].decode("utf-8", "replace")} if isinstance(e.get("input"), bytes) else e
        for e in exc.errors()
    ]
    return await request_validation_exception_handler(request, RequestValidationError(errors))


async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
    """422 for a number the store cannot hold (validation let it through: JSON has no bound)."""
    if isinstance(exc, TypeError) and "64-bit" not in str(exc):
        raise exc  # a bug: the usual 500
    msg = "a number in the body is out of range: integers must fit in 64 bits (send a float or a string)"
    return JSONResponse({"detail": [{"type": "value_error", "loc": ["body"], "msg": msg}]}, status_code=422)


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"{}[]")
_STEP = bytes.maketrans(b"{[}]", b"\x02\x02\x00\x00")  # a byte - 1 is then +1 or -1


def json_too_deep(body: bytes, limit: int) -> bool:
    """Whether the JSON ``body`` nests objects and arrays deeper than ``limit`` levels.

    In C-speed passes over the bytes (escapes, then strings, then everything but brackets
    dropped) and one Python pass over the brackets left: no parsing, so no recursion."""
    if body.count(b"{") + body.count(b"[") <= limit:
        return False
    outside = b"".join(body.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])
    depth = 0
    for step in outside.translate(None, _NOT_BRACKETS).translate(_STEP):
        depth += step - 1
        if depth > limit:
            return True
    return False


def _json_problem(body: bytes, max_depth: int) -> str | None:
    try:
        body.decode()
    except UnicodeDecodeError as exc:  # FastAPI would say 400 "There was an error parsing the body"
        return f"the body is not UTF-8 (byte {exc.start}): JSON must be"
    if json_too_deep(body, max_depth):
        return f"the JSON body is nested deeper than {max_depth} levels"
    return None


class BodyLimitMiddleware:
    """Reads each request body before the app does: 413 past ``max_bytes``; 422 for a body that is
    not UTF-8 or nests JSON past ``max_depth``, on paths under ``json_prefix`` (the API) except the
    ``self_checked`` (method, path) routes, whose parser checks both itself.

    A body declared too large is drained (up to 16 times the limit) before the 413 is sent, so
    that a client still writing it reads the answer instead of a reset connection."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        max_depth: int,
        json_prefix: str = "/",
        self_checked: frozenset[tuple[str, str]] = frozenset(),
        timeout: float = BODY_TIMEOUT,
    ) -> None:
        self.app = app
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.json_prefix = json_prefix
        self.self_checked = self_checked

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._drain(receive, min(int(declared), 16 * self.max_bytes))
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        started = time.monotonic()
        while more:
            message = None
            with anyio.move_on_after(self.timeout):
                message = await receive()
            elapsed = time.monotonic() - started
            if message is None or (elapsed > self.timeout and size < MIN_BODY_RATE * elapsed):
                detail = (
                    f"the request body arrived too slowly (silent for {self.timeout:g} s, or under "
                    f"{MIN_BODY_RATE} bytes/s after it): send it at once"
                )
                await _send_json(send, 408, {"detail": detail})
                return
            if message["type"] == "http.disconnect":
                return  # the client went away: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            more = bool(message.get("more_body", False))
            if size > self.max_bytes:
                if more:
                    await self._drain(receive, 16 * self.max_bytes - size)
                await self._too_large(send)
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        if scope["path"].startswith(self.json_prefix):
            if (scope["method"], scope["path"]) not in self.self_checked:
                problem = _json_problem(body, self.max_depth)
                if problem is not None:
                    await _send_json(send, 422, {"detail": [{"type": "json_invalid", "loc": ["body"], "msg": problem}]})
                    return
            bad = bad_value(body)  # non-finite numbers, lone surrogates: on every route
            if bad is not None:
                errors = [{"type": "value_error", "loc": ["body", *bad[0]], "msg": bad[1]}]
                await _send_json(send, 422, {"detail": errors})
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)

    async def _drain(self, receive: Receive, budget: int) -> None:
        while budget > 0:
            message = await receive()
            budget -= len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    async def _too_large(self, send: Send) -> None:
        detail = f"the request body is larger than {self.max_bytes} bytes; send fewer logs per request"
        await _send_json(send, 413, {"detail": detail})


async def _send_json(send: Send, status: int, body: Any) -> None:
    raw = orjson.dumps(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    if status in (408, 413):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})
