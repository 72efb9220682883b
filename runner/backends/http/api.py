"""A small synchronous client of a Parea-compatible server (datasets, prompts, reading runs
back), with the same retry policy as the asynchronous backend (:mod:`runner.backends.http.transport`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from runner.backends.http.transport import (
    Attempt,
    encode,
    error_for,
    headers_for,
    is_retryable,
    parse_extensions,
    policy,
    unreachable,
)

__all__ = ["SyncApi", "fetch_experiment_rows"]


class SyncApi:
    """A small synchronous client of a Parea-compatible server, with the backend's retries."""

    def __init__(self, base_url: str, api_key: str | None, *, max_retries: int = 5, backoff: float = 0.25) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff = backoff
        self.client = httpx.Client(base_url=self.base_url + "/", headers=headers_for(api_key), timeout=60.0)

    def __enter__(self) -> SyncApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def request(
        self, method: str, path: str, body: Any = None, *, accept: frozenset[int] = frozenset()
    ) -> httpx.Response:
        content = None if body is None else encode(body)
        url = self.base_url + path
        attempts = 0

        def once() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            try:
                response = self.client.request(method, path.lstrip("/"), content=content)
            except httpx.TransportError as exc:
                raise Attempt(unreachable(method, url, exc, attempts)) from exc
            if response.status_code < 400 or response.status_code in accept:
                return response
            if is_retryable(response.status_code):
                raise Attempt(error_for(method, url, response), response)
            raise error_for(method, url, response)

        try:
            return policy(self.max_retries, backoff=self.backoff).call(once)
        except Attempt as exc:  # no attempt left
            raise exc.final from exc.__cause__

    def extensions(self) -> frozenset[str]:
        response = self.request("GET", "/", accept=frozenset({404, 405}))
        try:
            return parse_extensions(response.json()) if response.status_code < 400 else frozenset()
        except ValueError:
            return frozenset()


def fetch_experiment_rows(base_url: str, api_key: str | None, experiment_uuid: str) -> list[dict[str, Any]]:
    """The root trace logs of an experiment on a server, synchronously (to read results later)."""
    with SyncApi(base_url, api_key) as api:
        rows: list[dict[str, Any]] = api.request(
            "POST", f"/experiment/{quote(experiment_uuid, safe='')}/trace_logs", {}
        ).json()
    for row in rows:
        row.pop("children_logs", None)
    return rows
