"""Where a traced LLM call made outside an experiment row goes: a trace of its own.

The same place :func:`runner.completion` logs such calls: the running experiment's backend, else
``PAREA_BASE_URL`` (``POST /trace_log``, with ``PAREA_API_KEY``), else the embedded store
(``RUNNER_DB``, default ``.runner/runner.db``). One store per file and one HTTP client per server
are kept open; :func:`close` closes them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["close", "write_outside_row"]

_stores: dict[str, Any] = {}
_clients: dict[tuple[str, str | None], Any] = {}
_sink_lock = threading.Lock()


def write_outside_row(log: dict[str, Any]) -> None:
    """Store ``log`` (a root trace) where :func:`runner.completion` logs calls made outside a row.

    A failure to log is reported through the ``runner`` logger, never raised into the caller's
    LLM call."""
    from runner.integrations.llm import _route

    route = _route(None)
    try:
        if route.base_url:
            _post(route.base_url, route.api_key, log)
        else:
            _store_for(route.db).upsert_traces([log], "")
    except Exception:
        logging.getLogger("runner").exception("could not log the LLM call %s", log.get("trace_id"))


def _store_for(db_path: str) -> Any:
    from pathlib import Path

    from runner.store import Store

    key = str(Path(db_path).resolve())
    with _sink_lock:
        store = _stores.get(key)
        if store is None:
            Path(key).parent.mkdir(parents=True, exist_ok=True)
            store = _stores[key] = Store(key)
        return store


def _post(base_url: str, api_key: str | None, log: dict[str, Any]) -> None:
    import httpx

    from runner.backends.http.transport import error_for, headers_for

    with _sink_lock:
        client = _clients.get((base_url, api_key))
        if client is None:
            client = _clients[(base_url, api_key)] = httpx.Client(headers=headers_for(api_key), timeout=30.0)
    url = base_url.rstrip("/") + "/trace_log"
    for attempt in range(3):
        try:
            response = client.post(url, json=log)
        except httpx.TransportError:
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))
            continue
        if response.status_code < 300:
            return
        if response.status_code < 500 or attempt == 2:
            raise error_for("POST", url, response)
        time.sleep(0.2 * (attempt + 1))


def close() -> None:
    """Close the stores and HTTP clients opened to log calls made outside a row."""
    with _sink_lock:
        stores, clients = list(_stores.values()), list(_clients.values())
        _stores.clear()
        _clients.clear()
    for store in stores:
        store.close()
    for client in clients:
        client.close()
