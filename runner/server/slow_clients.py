"""Clients that connect and then say nothing, or say it very slowly, are cut off.

uvicorn times out idle keep-alive connections, but a connection that sends nothing (or a header
a byte at a time) holds a file descriptor forever: a few thousand of them make a server
unreachable. :func:`protocol` is uvicorn's HTTP/1.1 protocol with two limits more:

* the request line and headers must arrive within ``header_timeout`` seconds of the connection
  (or of the previous response), else the connection is closed;
* past ``max_connections`` open connections, a new one is closed at once (instead of holding a
  descriptor until the process runs out of them).

The protocol is uvicorn's ``httptools`` one (its C parser, a dependency of the runner) when that
imports, else its pure-Python ``h11`` one: the C parser costs a fraction of h11's CPU per request,
which is what a server answering a thousand cached completions at once spends its time on.

Bodies are timed by :class:`runner.server.app.BodyLimitMiddleware` (``body_timeout``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["HEADER_TIMEOUT", "MAX_CONNECTIONS", "base_protocol", "protocol"]

#: seconds the request line and headers may take
HEADER_TIMEOUT = 10.0
#: open connections at most (below the usual limit of 1,024 file descriptors)
MAX_CONNECTIONS = 512


def base_protocol() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol if ``httptools`` imports, else its h11 one."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is a dependency; a build without it still serves
        return H11Protocol
    return HttpToolsProtocol


def protocol(header_timeout: float = HEADER_TIMEOUT, max_connections: int = MAX_CONNECTIONS,
             base: type[asyncio.Protocol] | None = None) -> type[asyncio.Protocol]:
    """uvicorn's ``http=`` protocol class (``base``, default :func:`base_protocol`) with these limits."""
    parent: Any = base or base_protocol()

    class TimedProtocol(parent):  # type: ignore[misc,valid-type]
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.abort()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if self.cycle is None or self.cycle.response_complete:  # still waiting for headers
                self.transport.close()

        # the headers are in: the body has its own timeout (h11 and httptools say so differently)
        def handle_events(self) -> None:  # h11
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()

        def on_headers_complete(self) -> None:  # httptools
            super().on_headers_complete()
            self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    TimedProtocol.__name__ = TimedProtocol.__qualname__ = f"Timed{parent.__name__}"
    return TimedProtocol


def uvicorn_options(header_timeout: float, max_connections: int) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` for these limits."""
    return {"http": protocol(header_timeout, max_connections), "timeout_keep_alive": 5}
