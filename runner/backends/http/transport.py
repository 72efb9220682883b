"""The I/O-free core of the Parea API client: headers, encoding, the retry policy, errors.

Shared by :class:`runner.backends.http.backend.HttpBackend` (async), the sync helpers of
``runner.cli.datasets`` and ``runner.integrations.llm``; :mod:`runner.backends.http.backend` re-exports all of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from runner._json import json_default, nul_free
from runner.errors import BackendError, NotFoundError
from runner.ratelimit import parse_retry_after
from runner.retrying import Retry, RetryPolicy

__all__ = [
    "MAX_BATCH_BYTES",
    "Attempt",
    "ServerUnavailable",
    "detail_of",
    "encode",
    "error_for",
    "finite_scores",
    "headers_for",
    "is_retryable",
    "parse_extensions",
    "policy",
    "retry_delay",
    "unreachable",
]

_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER = 60.0
#: batches above this are split in two (the server refuses bodies above 16 MiB)
MAX_BATCH_BYTES = 8 * 1024 * 1024


class ServerUnavailable(BackendError):
    """The server did not answer usefully — no connection, a timeout, 408, 429 or 5xx — after the
    retries: worth trying again later (what is not sent then goes to the spool)."""


def headers_for(api_key: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json"}
    if api_key:
        headers["x-api-key"] = api_key
    return headers


def _encode(body: Any) -> bytes:
    return orjson.dumps(body, default=json_default, option=_JSON_OPTIONS)


def encode(body: Any) -> bytes:
    """A request body's JSON, with every NUL character and lone surrogate in it as U+FFFD: the
    server refuses both (422), and both stores keep such text so (:func:`runner._json.nul_free`),
    so a run's names, metadata and logs read back alike through every door."""
    return nul_free(body, _encode)[0]


def is_retryable(status_code: int) -> bool:
    return status_code in _RETRY_STATUSES or status_code >= 500


def policy(max_retries: int = 5, *, backoff: float = 0.25, max_backoff: float = 10.0) -> RetryPolicy:
    """The retry policy of calls to a server (:class:`runner.retrying.RetryPolicy`)."""
    return RetryPolicy(max_retries=max_retries, backoff=backoff, max_backoff=max_backoff,
                       max_retry_after=_MAX_RETRY_AFTER)


def retry_delay(attempt: int, response: httpx.Response | None, *, backoff: float, max_backoff: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): the policy's wait, at least ``Retry-After``."""
    after = None if response is None else parse_retry_after(response.headers.get("retry-after"))
    return policy(backoff=backoff, max_backoff=max_backoff).delay(attempt, after)


class Attempt(Retry):
    """One HTTP attempt failed in a way another may not (no connection, a timeout, 408, 429, 5xx);
    ``final`` is the error raised when no attempt is left."""

    def __init__(self, final: BaseException, response: httpx.Response | None = None) -> None:
        after = None if response is None else parse_retry_after(response.headers.get("retry-after"))
        super().__init__(str(final), after)
        self.final = final


def detail_of(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI's 422: name each bad field
        parts = []
        for err in detail[:5]:
            if isinstance(err, dict):
                loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
                parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
            else:
                parts.append(str(err))
        more = f" (and {len(detail) - 5} more)" if len(detail) > 5 else ""
        return "; ".join(parts) + more
    return str(detail)


def error_for(method: str, url: str, response: httpx.Response) -> BackendError:
    """The error to raise for a refused request, with the server's ``detail``."""
    detail = detail_of(response)
    status = response.status_code
    if status == 404:
        return NotFoundError(f"{method} {url}: {detail}{_prefix_hint(url)}")
    if status in (401, 403):
        return BackendError(
            f"{method} {url} was refused ({status}): {detail}; check the API key (--api-key or PAREA_API_KEY)"
        )
    return BackendError(f"{method} {url} failed with {status}: {detail}")


#: where the Parea API lives on a server; a base URL without it gets 404 for every path
API_PREFIX = "/api/parea/v1"


def _prefix_hint(url: str) -> str:
    """For a 404 from a base URL that lacks the API prefix: the base URL to give instead."""
    parsed = httpx.URL(url)
    if API_PREFIX in parsed.path:
        return ""
    root = str(parsed.copy_with(path="/", query=None, fragment=None)).rstrip("/")
    return (
        f"; the base URL has no {API_PREFIX}: a Parea-compatible server serves its API under it, "
        f"so give --base-url (or PAREA_BASE_URL) {root}{API_PREFIX}"
    )


def unreachable(method: str, url: str, exc: Exception, attempts: int) -> ServerUnavailable:
    return ServerUnavailable(
        f"{method} {url} failed after {attempts} attempt(s): {type(exc).__name__}: {exc or 'no response'}; "
        "is the server running (python -m runner serve) and is the base URL right?"
    )


def parse_extensions(health: Any) -> frozenset[str]:
    """The extensions a ``GET /`` body advertises (``"a,b"``); none for a plain Parea server."""
    if not isinstance(health, dict):
        return frozenset()
    raw = health.get("extensions")
    if not isinstance(raw, str):
        return frozenset()
    return frozenset(x.strip() for x in raw.split(",") if x.strip())


def finite_scores(log: dict[str, Any]) -> dict[str, Any]:
    # NaN/inf cannot travel as JSON numbers (orjson would send null and the batch would be
    # refused); the store drops them too, so both doors keep the same scores.
    scores = log.get("scores")
    if scores and any(not _is_finite(s.get("score")) for s in scores if isinstance(s, Mapping)):
        log = {
            **log,
            "scores": [s for s in scores if not isinstance(s, Mapping) or _is_finite(s.get("score"))],
        }
    return log


def _is_finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except TypeError:
        return True  # not a float (bool, int, str): the server coerces or refuses it
