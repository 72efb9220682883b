"""The connection limits of :func:`runner.server.slow_clients.protocol` on both of uvicorn's
HTTP/1.1 protocols: the httptools one ``serve`` uses, and the h11 one it falls back to (the
``serve`` process itself is tested in ``test_server_hardening``)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from runner.server.slow_clients import base_protocol, protocol
from tests.serve_process import closed_by_server


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


@contextmanager
def _serving(base: type[asyncio.Protocol], header_timeout: float) -> Iterator[int]:
    """A server on ``base`` with these header timeout and at most 5 connections; yields its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    app = Starlette(routes=[Route("/", _hello)])
    config = uvicorn.Config(app, log_level="warning", lifespan="off", http=protocol(header_timeout, 5, base))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


BASES = pytest.mark.parametrize("base", [HttpToolsProtocol, H11Protocol], ids=["httptools", "h11"])


@pytest.fixture(params=[HttpToolsProtocol, H11Protocol], ids=["httptools", "h11"])
def limited(request: pytest.FixtureRequest) -> Iterator[int]:
    """Headers due within 0.5 s, at most 5 connections."""
    with _serving(request.param, 0.5) as port:
        yield port


def test_serve_uses_the_c_parser() -> None:
    assert base_protocol() is HttpToolsProtocol
    assert protocol().__name__ == "TimedHttpToolsProtocol"


def test_a_silent_connection_is_closed_and_the_server_answers(limited: int) -> None:
    with socket.create_connection(("127.0.0.1", limited), timeout=10) as silent:
        assert closed_by_server(silent, within=20)
    assert httpx.get(f"http://127.0.0.1:{limited}/", timeout=20).text == "hello"


def test_a_header_that_never_ends_is_cut_off(limited: int) -> None:
    with socket.create_connection(("127.0.0.1", limited), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = False
        deadline = time.monotonic() + 20
        while not closed and time.monotonic() < deadline:
            try:
                s.sendall(b"X")
                closed = closed_by_server(s, within=0.2)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        assert closed


def test_keep_alive_requests_are_answered_one_after_another(limited: int) -> None:
    # the timer is re-armed after each response and disarmed by each request's headers
    with httpx.Client(base_url=f"http://127.0.0.1:{limited}", timeout=20) as client:
        assert [client.get("/").text for _ in range(3)] == ["hello"] * 3


@BASES
def test_connections_past_the_cap_are_closed_at_once(base: type[asyncio.Protocol]) -> None:
    with _serving(base, 600) as port:
        _past_the_cap(port)


def _past_the_cap(port: int) -> None:
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(5)]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            # the 6th is aborted on arrival (the 5 silent ones hold their slots for 600 s):
            # the server closes it, and it gets no answer
            extra.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            extra.settimeout(20)
            try:
                data = extra.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            assert data == b""
    finally:
        for s in held:
            s.close()
