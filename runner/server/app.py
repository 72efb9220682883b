"""The FastAPI app: the Parea REST API over a :class:`runner.store.Store`.

>>> from runner.store import Store
>>> app = create_app(Store(":memory:"), api_keys=["secret"])

Errors the store raises on purpose become the status codes of the Parea API, always with a
``{"detail": ...}`` body: unknown ids 404, an invalid or taken run name 400, a bad dataset 400,
a store failure 503. Schema errors keep FastAPI's 422 body.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from runner.errors import BackendError, ConfigError, NotFoundError, RunNameError
from runner.schema import API_PREFIX, TraceLogSchema
from runner.server import routes_completion, routes_datasets, routes_experiments, routes_traces
from runner.server.auth import AuthMiddleware, KeyRing
from runner.server.routes_traces import ExperimentCheck
from runner.store import Store

__all__ = ["EXTENSIONS", "SERVER_NAME", "VERSION", "create_app"]

SERVER_NAME = "runner"
VERSION = "0.1.0"

#: What this server offers beyond the Parea API, as advertised by ``GET /``:
#: ``trace_logs_batch`` — ``POST /trace_logs/batch`` with ``{"logs": [...]}``, one transaction;
#: ``collections`` — ``GET /collections`` lists datasets;
#: ``experiment_uuid`` — ``POST /experiment`` takes a client-chosen ``uuid``, making retries safe;
#: ``delete_traces`` — ``POST /experiment/{uuid}/delete_traces`` removes root traces (resumed runs).
EXTENSIONS = ("trace_logs_batch", "collections", "experiment_uuid", "delete_traces")


def create_app(store: Store, *, api_keys: Iterable[str] = ()) -> FastAPI:
    """The app serving ``store`` under ``/api/parea/v1``; with ``api_keys``, one tenant per key.

    The store stays the caller's: the app neither opens nor closes it."""
    keys = KeyRing(api_keys)
    app = FastAPI(
        title="runner",
        version=VERSION,
        description="The Parea REST API (and a few extensions) over the runner's SQLite store.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.store = store
    app.state.experiment_check = ExperimentCheck()

    @app.get(API_PREFIX + "/", tags=["health"])
    async def health() -> dict[str, str]:
        """Health check; also names the extensions this server offers (comma-separated)."""
        return {"status": "ok", "server": SERVER_NAME, "version": VERSION, "extensions": ",".join(EXTENSIONS)}

    for module in (routes_experiments, routes_traces, routes_datasets, routes_completion):
        app.include_router(module.router, prefix=API_PREFIX)

    def detail(status: int, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

        return handler

    # the most specific class wins: Starlette looks handlers up along the exception's MRO
    app.add_exception_handler(NotFoundError, detail(404))
    app.add_exception_handler(RunNameError, detail(400))
    app.add_exception_handler(ConfigError, detail(400))
    app.add_exception_handler(BackendError, detail(503, {"Retry-After": "1"}))
    app.add_exception_handler(sqlite3.OperationalError, detail(503, {"Retry-After": "1"}))
    app.add_middleware(AuthMiddleware, keys=keys, prefix=API_PREFIX)

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
