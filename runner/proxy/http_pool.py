"""Many concurrent requests over httpx without paying for httpcore's pool bookkeeping.

httpcore 1.0's connection pool walks every connection (and, for each queued request, every
connection again) each time a request starts or a response closes, and closes any idle
connection as soon as the pool holds more than ``max_keepalive_connections`` connections, busy
or not. With hundreds of requests in flight on one ``httpx.AsyncClient`` that is quadratic: in
the issue 22 benchmark (1,000 concurrent requests to a provider answering after 100 ms) the
client spent ~12 ms of CPU per request in ``_assign_requests_to_connections``, so calls waited
seconds for CPU rather than for the provider; and under load every request opened a new TCP
connection instead of reusing one.

:class:`ClientPool` keeps the per-event work small and the connections alive:

* it holds ``ceil(max_connections / per_client)`` clients of at most ``per_client`` connections
  each and, unless ``max_keepalive_connections`` says fewer (spread over the clients), keeps
  every connection it opened (httpx still closes one idle for ``keepalive_expiry`` seconds);
* a request borrows the least busy client (:meth:`ClientPool.client`), so no client ever has
  more requests than connections and httpcore never queues;
* past ``max_connections`` requests at once, callers wait in FIFO order on one semaphore.

Example::

    pool = ClientPool(max_connections=1000, timeout=httpx.Timeout(30.0))
    async with pool.client() as client:
        response = await client.post(url, content=body)
    await pool.aclose()
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

__all__ = ["PER_CLIENT", "ClientPool"]

#: Connections per ``httpx.AsyncClient``: small enough that httpcore's per-event walk is cheap.
#: (1,000 concurrent cached completions through ``serve``: the caller spent 2.8 ms of CPU per call
#: with 32, 1.4 ms with 8, 1.1 ms with 4; most of the difference is ``has_expired`` polling each
#: idle connection's socket. 4 made ``serve`` accept more connections; 8 is the balance.)
PER_CLIENT = 8


class ClientPool:
    """``httpx.AsyncClient`` shards behind one bound of ``max_connections`` requests at once.

    ``client_kwargs`` (``timeout``, ``headers`` ...) go to every client; ``limits`` is set by the
    pool. Use on one event loop (the semaphore is made on first use, on that loop).
    """

    def __init__(self, max_connections: int, *, max_keepalive_connections: int | None = None,
                 per_client: int = PER_CLIENT, **client_kwargs: Any) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        if per_client < 1:
            raise ValueError(f"per_client must be at least 1, got {per_client}")
        if "limits" in client_kwargs:
            raise ValueError("ClientPool sets the limits of its clients: pass max_connections instead")
        self.max_connections = max_connections
        per = min(per_client, max_connections)
        shards = math.ceil(max_connections / per)
        keep = per if max_keepalive_connections is None else max(1, math.ceil(max_keepalive_connections / shards))
        limits = httpx.Limits(max_connections=per, max_keepalive_connections=min(per, keep))
        self._clients = [httpx.AsyncClient(limits=limits, **client_kwargs) for _ in range(shards)]
        self._busy = [0] * shards
        self._gate: asyncio.Semaphore | None = None

    @property
    def clients(self) -> list[httpx.AsyncClient]:
        """The shards (for inspection; borrow one with :meth:`client`)."""
        return list(self._clients)

    @property
    def in_flight(self) -> int:
        """Requests holding a client now."""
        return sum(self._busy)

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        """Borrow the least busy client for one request (a stream: until its response is closed)."""
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.max_connections)
        async with self._gate:
            i = min(range(len(self._busy)), key=self._busy.__getitem__)
            self._busy[i] += 1
            try:
                yield self._clients[i]
            finally:
                self._busy[i] -= 1

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """``POST`` on a borrowed client; the body is read before the client is given back."""
        async with self.client() as client:
            return await client.post(url, **kwargs)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
