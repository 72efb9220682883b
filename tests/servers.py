"""Real servers for tests: uvicorn in a thread on a free loopback port, over a real SQLite file.

>>> with start_server(tmp_path / "runner.db", api_keys=["k"]) as server:  # doctest: +SKIP
...     httpx.get(server.base_url + "/", headers={"x-api-key": "k"})

``start_app`` serves any ASGI app (e.g. the runner's app wrapped to misbehave) the same way.
``serving`` gives a test a server and an httpx client on its API root; ``experiment`` and ``log``
build the payloads the server tests post.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from runner.schema import API_PREFIX
from runner.server import create_app
from runner.store import Store

__all__ = ["ServerHandle", "experiment", "log", "serving", "start_app", "start_server"]


class _Server(uvicorn.Server):
    """uvicorn's server, checking for ``should_exit`` every 10 ms instead of every 100 ms, so a
    test's server stops in a few milliseconds."""

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter += 1
            await asyncio.sleep(0.01)


class ServerHandle:
    """A running server: ``url`` (``http://127.0.0.1:PORT``), ``base_url`` (+ the API prefix)."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, port: int, store: Store | None) -> None:
        self._server = server
        self._thread = thread
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = self.url + API_PREFIX
        #: the store behind the app (``None`` for ``start_app``)
        self.store = store

    def stop(self) -> None:
        """Stop serving, wait for the thread, and close the store (idempotent)."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if self.store is not None:
            self.store.close()
            self.store = None

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_app(app: Any, *, store: Store | None = None, timeout: float = 10.0) -> ServerHandle:
    """Serve ``app`` on a free 127.0.0.1 port from a daemon thread; returns once it accepts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # uvicorn sets TCP_NODELAY only on sockets it binds itself; accepted sockets inherit it from
    # this one. Without it a response written in two segments waits ~40 ms for a delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the test server on port {port} did not start")
        time.sleep(0.005)
    return ServerHandle(server, thread, port, store)


def start_server(db_path: str | Path, api_keys: Sequence[str] = ()) -> ServerHandle:
    """The runner's server over the store at ``db_path``, with these API keys."""
    store = Store(db_path)
    try:
        return start_app(create_app(store, api_keys=api_keys), store=store)
    except BaseException:
        store.close()
        raise


@contextmanager
def serving(db_path: str | Path, api_keys: Sequence[str] = (), **headers: str) -> Iterator[httpx.Client]:
    """A server over ``db_path`` and an httpx client on its API root, for one test."""
    with (
        start_server(db_path, api_keys) as handle,
        httpx.Client(base_url=handle.base_url + "/", headers=headers, timeout=10) as client,
    ):
        yield client


def experiment(api: httpx.Client, project: str = "proj", name: str = "exp", **fields: Any) -> dict[str, Any]:
    """Create (or get) ``project`` and a new experiment in it; returns the ``ExperimentSchema``."""
    project_uuid = api.post("/project", json={"name": project}).json()["uuid"]
    response = api.post("/experiment", json={"name": name, "project_uuid": project_uuid, **fields})
    assert response.status_code == 200, response.text
    return dict(response.json())


def log(trace_id: str, parent: str | None = None, root: str | None = None, **fields: Any) -> dict[str, Any]:
    """A trace log: a root unless ``parent`` is given (the root then defaults to the parent)."""
    body: dict[str, Any] = {
        "trace_id": trace_id,
        "start_timestamp": fields.pop("start_timestamp", "2024-05-30T13:48:34+00:00"),
        "parent_trace_id": parent or trace_id,
        "root_trace_id": root or parent or trace_id,
    }
    body.update(fields)
    return body
