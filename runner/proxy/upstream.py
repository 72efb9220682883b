"""Sending provider requests: one shared pool of ``httpx`` clients, retries, server-sent events.

Retried, with exponential backoff and full jitter, up to ``max_retries`` times: HTTP 429 and 5xx,
timeouts and connection errors. A ``Retry-After`` header (seconds or an HTTP date; OpenAI's
``retry-after-ms`` too) replaces the computed backoff. Any other 4xx ends the call at once.
Each 429 is also told to the process-wide limiter of the provider (:mod:`runner.ratelimit`,
key ``"llm:<provider>"``), and no attempt starts while that limiter is paused by a
``Retry-After``: one call's 429 holds back every call to that provider in the process (and, on a
Dask cluster, in every worker process: see ``runner.pipeline.executor_ratelimit``).
A call that fails for good raises :class:`UpstreamError`, whose message becomes the response's
``error``. A stream is retried only until its first byte: after that, what was said is said.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
import orjson

from runner.proxy.http_pool import ClientPool
from runner.proxy.providers import Completion, ProviderAdapter, UpstreamRequest
from runner.proxy.settings import ProxySettings
from runner.retrying import Retry, RetryPolicy

__all__ = ["Upstream", "UpstreamError", "is_rate_limited", "iter_sse", "parse_retry_after"]

logger = logging.getLogger("runner.proxy")
T = TypeVar("T")


class UpstreamError(Exception):
    """The provider call failed for good; ``str(err)`` is the message for the response."""


#: The start of the error of a call whose last attempt got HTTP 429 (see :func:`_check`).
_RATE_LIMITED = re.compile(r"^[\w.-]+ returned HTTP 429: ")


def is_rate_limited(error: str | None) -> bool:
    """Whether a response's ``error`` says the provider was still rate-limiting (HTTP 429) when
    the proxy gave up. Clients use it to tell "slow down and retry later" from other failures."""
    return bool(error) and _RATE_LIMITED.match(error or "") is not None


class _Retryable(Retry):
    def __init__(self, message: str, retry_after: float | None = None, *, rate_limited: bool = False) -> None:
        super().__init__(message, retry_after)
        self.rate_limited = rate_limited


def parse_retry_after(headers: httpx.Headers, now: datetime | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    if ms := headers.get("retry-after-ms"):
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


async def iter_sse(response: httpx.Response) -> AsyncIterator[tuple[str | None, str]]:
    """``(event, data)`` for each server-sent event of a streamed response (parsed by ``httpx-sse``;
    ``event`` is ``None`` for an event without an ``event:`` field, and events without data are
    skipped). A response that is not ``text/event-stream`` is an :class:`UpstreamError`."""
    from httpx_sse import EventSource, SSEError

    try:
        async for sse in EventSource(response).aiter_sse():
            if sse.data:
                yield (None if sse.event == "message" else sse.event), sse.data
    except SSEError as exc:
        raise UpstreamError(f"the provider's stream from {response.url} is not server-sent events: {exc}") from None


class Upstream:
    """The shared HTTP client and the retry policy around it."""

    def __init__(self, settings: ProxySettings) -> None:
        self._settings = settings
        # shards of httpx clients: one client with hundreds of requests in flight spends more CPU
        # in httpcore's pool bookkeeping than on the requests (see runner.proxy.http_pool)
        self._pool = ClientPool(
            settings.max_connections,
            max_keepalive_connections=settings.max_keepalive_connections,
            # pool=None: beyond max_connections requests queue rather than fail
            timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout, pool=None),
            headers={"user-agent": "runner-proxy", "content-type": "application/json"},
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def complete(self, adapter: ProviderAdapter, request: UpstreamRequest) -> Completion:
        """Send ``request``; the parsed completion, or :class:`UpstreamError`."""
        name = adapter.spec.name

        async def attempt() -> Completion:
            try:
                response = await self._pool.post(
                    request.url, content=orjson.dumps(request.body), headers=request.headers
                )
            except httpx.TransportError as exc:  # timeouts included
                raise _transport_error(name, request.url, exc) from None
            _check(adapter, response)
            try:
                return adapter.parse(orjson.loads(response.content))
            except (ValueError, LookupError, TypeError, AttributeError) as exc:
                raise UpstreamError(f"{name} answered with a body this proxy cannot read: {exc!r}") from None

        return await self._retrying(name, attempt)

    @asynccontextmanager
    async def open_stream(self, adapter: ProviderAdapter, request: UpstreamRequest,
                          ) -> AsyncIterator[httpx.Response]:
        """A streamed 2xx response to ``request`` (retried until then), closed on exit."""
        name = adapter.spec.name
        async with self._pool.client() as client:  # held until the response is closed

            async def attempt() -> httpx.Response:
                built = client.build_request(
                    "POST", request.url, content=orjson.dumps(request.body), headers=request.headers
                )
                try:
                    response = await client.send(built, stream=True)
                    if response.is_success:
                        return response
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
                except httpx.TransportError as exc:
                    raise _transport_error(name, request.url, exc) from None
                _check(adapter, response)
                raise AssertionError("unreachable: _check raises on every non-2xx status")

            response = await self._retrying(name, attempt)
            try:
                yield response
            finally:
                await response.aclose()

    async def _retrying(self, name: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, retried by the one retry policy (:mod:`runner.retrying`): a ``Retry-After``
        is waited out (up to ``backoff_max``), and so is a pause this process's limiter was told of."""
        from runner.ratelimit import limiter_for, note_rate_limited

        settings = self._settings
        limiter = limiter_for(f"llm:{name}")
        policy = RetryPolicy(max_retries=settings.max_retries, backoff=settings.backoff_base,
                             max_backoff=settings.backoff_max, max_retry_after=settings.backoff_max,
                             exact_retry_after=True)

        async def once() -> T:
            while (pause := limiter.paused_for()) > 0:  # a Retry-After this process was told of
                await asyncio.sleep(pause)
            try:
                return await attempt()
            except _Retryable as exc:
                if exc.rate_limited:
                    note_rate_limited(exc.retry_after, key=limiter.name)
                raise

        def told(n: int, exc: BaseException, delay: float) -> None:
            logger.info("%s; retry %d/%d in %.3fs", exc, n, settings.max_retries, delay)

        try:
            return await policy.acall(once, floor=limiter.paused_for, before_sleep=told)
        except _Retryable as exc:  # no attempt left
            n = settings.max_retries
            tries = "1 attempt" if n == 0 else f"{n + 1} attempts"
            raise UpstreamError(f"{exc} (gave up after {tries})") from None


def _check(adapter: ProviderAdapter, response: httpx.Response) -> None:
    """Raise for a non-2xx response: retryable for 429 and 5xx, final otherwise."""
    if response.is_success:
        return
    body: Any = None
    with suppress(ValueError):
        body = orjson.loads(response.content)
    message = f"{adapter.spec.name} returned HTTP {response.status_code}: " + adapter.error_message(
        body, response.text
    )
    if response.status_code == 429 or response.status_code >= 500:
        raise _Retryable(message, parse_retry_after(response.headers), rate_limited=response.status_code == 429)
    raise UpstreamError(message)


def _transport_error(name: str, url: str, exc: httpx.TransportError) -> _Retryable:
    if isinstance(exc, httpx.TimeoutException):
        return _Retryable(f"{name} timed out ({type(exc).__name__}) at {url}")
    return _Retryable(f"cannot reach {name} at {url}: {type(exc).__name__}: {exc}")
