"""API keys: who may call the server, and which tenant each caller is.

With no key configured the server is open (it then binds only a loopback address) and every
request acts as the store's default owner ``""`` — the same owner the embedded backend writes
as, so ``serve`` shows what local runs recorded. With keys configured, every request under
``/api/parea/v1`` must carry one of them in ``x-api-key`` (the official SDK's header) or
``x-user-id`` (the header Parea's docs name), and the key's tenant is :func:`key_owner` of it:
a stable, non-reversible id, so the database never holds the keys themselves.

The check is a pure ASGI middleware rather than a FastAPI dependency so that it runs before the
body is read: a request without a valid key gets 401, never a 422 about its body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["AuthMiddleware", "KeyRing", "key_owner"]

_HEADERS = (b"x-api-key", b"x-user-id")


def key_owner(key: str) -> str:
    """The tenant id of an API key: a prefix of its SHA-256, stable across restarts."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:24]


class KeyRing:
    """The configured API keys, held as the tenant ids they map to."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._owners = {key_owner(k) for k in keys if k}

    @property
    def enabled(self) -> bool:
        return bool(self._owners)

    def __len__(self) -> int:
        return len(self._owners)

    def has_owner(self, owner: str) -> bool:
        """Whether ``owner`` is the tenant of one of the configured keys."""
        return owner in self._owners

    def owner_for(self, key: str) -> str | None:
        """The tenant of ``key`` if it is configured, else ``None``.

        Keys are compared by their hashes, so the lookup's timing says nothing about the keys."""
        owner = key_owner(key)
        return owner if owner in self._owners else None


class AuthMiddleware:
    """Rejects requests under ``prefix`` without a configured key; records the caller's owner.

    The owner is left in ``scope["state"]["owner"]`` (``request.state.owner`` in a route)."""

    def __init__(self, app: ASGIApp, *, keys: KeyRing, prefix: str) -> None:
        self.app = app
        self.keys = keys
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        if not self.keys.enabled:
            state["owner"] = ""
            await self.app(scope, receive, send)
            return
        if not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)  # docs and the OpenAPI schema hold no data
            return
        presented = [v.decode("latin-1") for k, v in scope["headers"] if k in _HEADERS]
        for key in presented:
            owner = self.keys.owner_for(key)
            if owner is not None:
                state["owner"] = owner
                await self.app(scope, receive, send)
                return
        detail = (
            "this API key is not accepted by the server; check PAREA_API_KEY / --api-key"
            if presented
            else "missing API key: send one of the server's keys in the x-api-key header"
        )
        body = orjson.dumps({"detail": detail})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"APIKey"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
