"""The server: the Parea REST API over the runner's SQLite store.

``python -m runner serve`` (or ``python -m runner.server``) runs :func:`serve`; tests and
embedders call :func:`create_app` with a store they opened themselves.

>>> from runner.store import Store
>>> from runner.server import create_app
>>> app = create_app(Store("results.db"), api_keys=["my-key"])  # doctest: +SKIP
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

from runner.errors import ConfigError
from runner.server.app import BODY_TIMEOUT, EXTENSIONS, create_app
from runner.server.slow_clients import HEADER_TIMEOUT, MAX_CONNECTIONS

__all__ = ["EXTENSIONS", "check_bind", "create_app", "serve"]

#: what the web UI's first views import (numpy for the summaries, scipy.special for compare's paired
#: tests, which avoid scipy.stats and its ~0.7 s import): ``serve`` loads them on a background
#: thread as it starts (:mod:`runner.prefetch`)
PAGE_MODULES = ("numpy", "numpy.ma", "scipy.special")


def check_bind(host: str, api_keys: Sequence[str]) -> None:
    """Refuse to serve beyond this machine without an API key (a :class:`ConfigError`)."""
    if api_keys:
        return
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return
    except ValueError:
        pass
    raise ConfigError(
        f"refusing to serve on {host!r} without an API key: anyone who can reach it could read and "
        "write your results. Pass --api-key KEY (or set RUNNER_API_KEYS), or serve on 127.0.0.1"
    )


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    db: str | Path,
    api_keys: Sequence[str] = (),
    log_level: str = "info",
    access_log: bool = False,
    allowed_hosts: Sequence[str] = (),
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    workers: int = 1,
    migrate: bool = True,
) -> None:
    """Serve the store at ``db`` until interrupted. Raises :class:`ConfigError` for a bad setup.

    Requests are answered for a loopback ``Host``, the bound address and ``allowed_hosts``;
    headers must arrive within ``header_timeout`` s, a body within ``body_timeout`` s of silence
    (and at 1 KB/s on average past that); at most ``max_connections`` are open at once (in each
    worker).
    ``workers`` > 1 runs that many server processes (PostgreSQL only); ``migrate=False`` refuses
    a PostgreSQL database whose schema is not current instead of upgrading it."""
    import os

    import uvicorn

    from runner.prefetch import prefetch
    from runner.server.slow_clients import uvicorn_options
    from runner.server.workers import PROTOCOL, check_workers, run_workers, worker_env
    from runner.store import Store

    check_bind(host, api_keys)
    check_workers(db, workers)
    from runner.store.postgres import is_postgres_url

    store = Store(db, migrate=migrate) if is_postgres_url(db) else Store(db)  # type: ignore[call-arg]
    shown_db = getattr(store, "shown", store.path)
    shown = f"[{host}]" if ":" in host else host
    keys = f"{len(set(api_keys))} API key(s)" if api_keys else "no API key (loopback only)"
    where = f"at http://{shown}:{port}/api/parea/v1 with {keys}"
    bound = [] if host in ("0.0.0.0", "::", "") else [host]
    hosts = [*bound, *allowed_hosts]
    if workers > 1:
        url = store.path
        store.close()  # each worker opens its own
        os.environ.update(worker_env(url, list(api_keys), hosts, body_timeout, header_timeout, max_connections))
        print(f"runner: serving {shown_db} {where}, {workers} workers", flush=True)
        run_workers(
            uvicorn.Config(
                "runner.server.workers:make_app", factory=True, workers=workers, host=host, port=port,
                log_level=log_level, access_log=access_log, timeout_keep_alive=5, http=PROTOCOL,
            )
        )
        return
    try:
        app = create_app(store, api_keys=api_keys, allowed_hosts=hosts, body_timeout=body_timeout)
        prefetch(*PAGE_MODULES)  # the web UI's first run page and compare find them loaded
        print(f"runner: serving {shown_db} {where}", flush=True)
        print(f"runner: web UI at http://{shown}:{port}/ (Ctrl-C stops the server)", flush=True)
        uvicorn.run(
            app, host=host, port=port, log_level=log_level, access_log=access_log,
            **uvicorn_options(header_timeout, max_connections),
        )
    finally:
        store.close()
