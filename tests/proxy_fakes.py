"""Fake LLM providers on real sockets, for the proxy's tests and benchmark.

``FakeProvider.running("openai")`` serves an OpenAI-compatible ``POST /v1/chat/completions``;
``FakeProvider.running("anthropic")`` an Anthropic-compatible ``POST /v1/messages``. Each runs
uvicorn in a thread on a free 127.0.0.1 port and:

* answers from the request: ``"echo: <last user message>"``, with one token per word
  (input: every word of every message and of ``system``; output: the words of the answer);
  when ``tool_choice`` names a function it calls it with ``{"echo": <last user message>}``;
* streams in the provider's real SSE format when the body says ``"stream": true``;
* counts calls and keeps every request body and headers;
* injects faults on demand: :meth:`FakeProvider.fail` (N times a status, optionally with
  ``Retry-After``) and :meth:`FakeProvider.slow` (N times a delay before answering).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

Dialect = Literal["openai", "anthropic"]


@dataclass
class Fault:
    status: int | None = None  # None: answer normally (after the delay)
    delay: float = 0.0
    retry_after: str | None = None
    message: str = "injected failure"


class FakeProvider:
    """State of one fake server; thread-safe, since tests and the server thread share it."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.url = ""  # set once running: "http://127.0.0.1:<port>"
        self.calls = 0
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        #: The client port of each request: how many connections the callers opened.
        self.peers: list[int] = []
        #: Seconds every answer waits (for single-flight tests).
        self.delay = 0.0
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """What the proxy's settings take as this provider's base URL."""
        return f"{self.url}/v1" if self.dialect == "openai" else self.url

    def fail(self, status: int, times: int = 1, *, retry_after: str | None = None,
             message: str = "injected failure") -> None:
        with self._lock:
            self._faults.extend(Fault(status, 0.0, retry_after, message) for _ in range(times))

    def slow(self, seconds: float, times: int = 1) -> None:
        with self._lock:
            self._faults.extend(Fault(None, seconds) for _ in range(times))

    def reset(self) -> None:
        with self._lock:
            self.calls = 0
            self.requests.clear()
            self.headers.clear()
            self.peers.clear()
            self._faults.clear()
            self.delay = 0.0

    def _record(self, body: dict[str, Any], headers: dict[str, str]) -> Fault | None:
        with self._lock:
            self.calls += 1
            self.requests.append(body)
            self.headers.append(headers)
            return self._faults.popleft() if self._faults else None

    # --- the app -------------------------------------------------------------------------------

    def app(self) -> Starlette:
        path = "/v1/chat/completions" if self.dialect == "openai" else "/v1/messages"
        return Starlette(routes=[Route(path, self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        body = json.loads(await request.body())
        fault = self._record(body, dict(request.headers))
        if request.client is not None:
            with self._lock:
                self.peers.append(request.client.port)
        delay = self.delay + (fault.delay if fault else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if fault and fault.status:
            headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
            return JSONResponse(self._error_body(fault.status, fault.message), fault.status, headers)
        answer = _answer(body, self.dialect)
        if body.get("stream"):
            events = _openai_events(body, answer) if self.dialect == "openai" else _anthropic_events(answer)
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(_openai_body(answer) if self.dialect == "openai" else _anthropic_body(answer))

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        if self.dialect == "anthropic":
            return {"type": "error", "error": {"type": "api_error", "message": message}}
        return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}

    # --- running -------------------------------------------------------------------------------

    @classmethod
    @contextmanager
    def running(cls, dialect: Dialect) -> Iterator[FakeProvider]:
        fake = cls(dialect)
        with serve(fake.app()) as url:
            fake.url = url
            yield fake


@contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this; without it, Nagle + delayed ACK add ~40 ms to each answer.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the fake provider server did not start")
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def main() -> None:
    """``python tests/proxy_fakes.py openai|anthropic``: serve until killed; print the URL."""
    import sys

    dialect: Dialect = "anthropic" if sys.argv[1:] == ["anthropic"] else "openai"
    with FakeProvider.running(dialect) as fake:
        print(fake.url, flush=True)
        threading.Event().wait()


# --- answers ------------------------------------------------------------------------------------


@dataclass
class _Answer:
    model: str
    text: str
    tool: str | None
    arguments: dict[str, Any]
    input_tokens: int
    output_tokens: int


def _words(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _answer(body: dict[str, Any], dialect: Dialect) -> _Answer:
    messages = body.get("messages") or []
    last_user = next((_words(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    prompt = " ".join(_words(m.get("content")) for m in messages) + " " + _words(body.get("system"))
    choice = body.get("tool_choice") or {}
    tool = None
    if isinstance(choice, dict):
        tool = choice.get("name") or (choice.get("function") or {}).get("name")
    text = "" if tool else f"echo: {last_user}"
    arguments = {"echo": last_user}
    output = len(text.split()) if text else len(json.dumps(arguments).split())
    return _Answer(str(body.get("model")), text, tool, arguments, len(prompt.split()), output)


def _openai_body(a: _Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": a.text or None}
    if a.tool:
        message["tool_calls"] = [{"id": "call_1", "type": "function",
                                  "function": {"name": a.tool, "arguments": json.dumps(a.arguments)}}]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": a.model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if a.tool else "stop"}],
        "usage": {"prompt_tokens": a.input_tokens, "completion_tokens": a.output_tokens,
                  "total_tokens": a.input_tokens + a.output_tokens},
    }


def _anthropic_body(a: _Answer) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": a.text}] if a.text else []
    if a.tool:
        content.append({"type": "tool_use", "id": "toolu_1", "name": a.tool, "input": a.arguments})
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": content,
        "stop_reason": "tool_use" if a.tool else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": a.input_tokens, "output_tokens": a.output_tokens},
    }


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [words[0], *(" " + w for w in words[1:])] if text else []


def _sse(data: dict[str, Any] | str, event: str | None = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


async def _openai_events(body: dict[str, Any], a: _Answer) -> AsyncIterator[str]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": a.model}
    yield _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "finish_reason": None}]})
    for piece in _pieces(a.text):
        await asyncio.sleep(0)
        yield _sse({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    if a.tool:
        call = {"index": 0, "id": "call_1", "type": "function",
                "function": {"name": a.tool, "arguments": json.dumps(a.arguments)}}
        delta = {"tool_calls": [call]}
        yield _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    yield _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": a.input_tokens, "completion_tokens": a.output_tokens,
                 "total_tokens": a.input_tokens + a.output_tokens}
        yield _sse({**base, "choices": [], "usage": usage})
    yield _sse("[DONE]")


async def _anthropic_events(a: _Answer) -> AsyncIterator[str]:
    message: dict[str, Any] = {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": a.model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": a.input_tokens, "output_tokens": 1},
    }
    yield _sse({"type": "message_start", "message": message}, "message_start")
    yield _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
               "content_block_start")
    yield _sse({"type": "ping"}, "ping")
    for piece in _pieces(a.text):
        await asyncio.sleep(0)
        delta = {"type": "text_delta", "text": piece}
        yield _sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
    yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    yield _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": a.output_tokens}}, "message_delta")
    yield _sse({"type": "message_stop"}, "message_stop")


if __name__ == "__main__":
    main()
