"""``serve --workers N``: N uvicorn worker processes on one port, each with its own store.

The parent process checks (and migrates) the database once, then uvicorn spawns the workers,
which build their app with :func:`make_app` from what the parent left in the environment
(``RUNNER_SERVE_DB``, ``RUNNER_SERVE_KEYS``; children of this process only). Only PostgreSQL
takes several writers at once: with SQLite, :func:`check_workers` refuses more than one.

Each worker cuts off slow clients as the single-process server does
(:mod:`runner.server.slow_clients`): headers within ``--header-timeout`` seconds, at most
``--max-connections`` open connections per worker. uvicorn builds the workers' protocol from an
import string, so it is :data:`WorkerProtocol`, made from the environment on first use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from runner.errors import ConfigError

__all__ = ["PROTOCOL", "check_workers", "make_app", "run_workers", "worker_env"]

#: the import string of the workers' HTTP protocol (uvicorn's ``http=``)
PROTOCOL = "runner.server.workers:WorkerProtocol"


def check_workers(db: str | Path, workers: int) -> None:
    """Refuse ``workers`` > 1 on a SQLite store (a :class:`ConfigError`)."""
    from runner.store.postgres import is_postgres_url

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}")
    if workers > 1 and not is_postgres_url(db):
        raise ConfigError(
            f"--workers {workers} needs a PostgreSQL store (--db postgresql://USER:PASS@HOST/DB): a SQLite "
            "file takes one writer at a time, so serve it with one worker (the default)"
        )


def worker_env(
    db: str, api_keys: list[str], allowed_hosts: list[str], body_timeout: float, header_timeout: float,
    max_connections: int,
) -> dict[str, str]:
    return {
        "RUNNER_SERVE_DB": db,
        "RUNNER_SERVE_KEYS": orjson.dumps(api_keys).decode(),
        "RUNNER_SERVE_HOSTS": orjson.dumps(allowed_hosts).decode(),
        "RUNNER_SERVE_BODY_TIMEOUT": str(body_timeout),
        "RUNNER_SERVE_HEADER_TIMEOUT": str(header_timeout),
        "RUNNER_SERVE_MAX_CONNECTIONS": str(max_connections),
    }


def __getattr__(name: str) -> Any:
    """``WorkerProtocol``: :func:`runner.server.slow_clients.protocol` with the limits the parent
    left in the environment (read in the worker, which imports it through :data:`PROTOCOL`)."""
    if name == "WorkerProtocol":
        from runner.server.slow_clients import HEADER_TIMEOUT, MAX_CONNECTIONS, protocol

        return protocol(
            float(os.environ.get("RUNNER_SERVE_HEADER_TIMEOUT", HEADER_TIMEOUT)),
            int(os.environ.get("RUNNER_SERVE_MAX_CONNECTIONS", MAX_CONNECTIONS)),
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_workers(config: Any) -> None:
    """What ``uvicorn.run`` does for several workers, with ``TCP_NODELAY`` on the listening socket
    (the accepted ones inherit it): without it a response written in two segments waits ~40 ms
    for the client's delayed ACK."""
    import socket

    from uvicorn.supervisors import Multiprocess

    sock = config.bind_socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[sock]).run()


def make_app():  # type: ignore[no-untyped-def]
    """The app of one worker process (uvicorn's ``factory``)."""
    from runner.server.app import create_app
    from runner.store import Store

    store = Store(os.environ["RUNNER_SERVE_DB"], migrate=False)  # type: ignore[call-arg]
    from runner.prefetch import prefetch
    from runner.server import PAGE_MODULES

    prefetch(*PAGE_MODULES)  # as a single-process serve does
    return create_app(
        store,
        api_keys=orjson.loads(os.environ.get("RUNNER_SERVE_KEYS", "[]")),
        allowed_hosts=orjson.loads(os.environ.get("RUNNER_SERVE_HOSTS", "[]")),
        body_timeout=float(os.environ.get("RUNNER_SERVE_BODY_TIMEOUT", "30")),
    )
