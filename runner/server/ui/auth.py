"""Who is looking at the pages: with API keys configured, one of the keys, kept in a cookie.

A browser cannot send ``x-api-key`` on a page load, so the pages take the key once — from the
login form, or from ``?key=...`` in a link — and keep it in an HttpOnly cookie; the URL is then
reloaded without the key, so that it stays out of the address bar and the history. Every page
then reads as that key's tenant, exactly as the API does (:func:`runner.server.auth.key_owner`),
so a key sees the same runs in the pages as through the API, and no others. Without keys the
pages, like the API, read as the default owner ``""``.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Request
from starlette.datastructures import URL

from runner.server.auth import KeyRing

__all__ = ["COOKIE", "KeyInURL", "LoginRequired", "PageOwner", "safe_next"]

#: the cookie holding the key
COOKIE = "runner_key"


class LoginRequired(Exception):
    """The page needs a key: the app answers with the login page's address."""

    def __init__(self, next_url: str, error: str | None = None) -> None:
        super().__init__(error or "an API key is needed")
        self.next_url = next_url
        self.error = error

    @property
    def login_url(self) -> str:
        params = {"next": self.next_url}
        if self.error:
            params["error"] = "1"
        return "/login?" + urlencode(params)


class KeyInURL(Exception):
    """A good key in ``?key=``: the app stores it in the cookie and reloads without it."""

    def __init__(self, key: str, clean_url: str) -> None:
        super().__init__("key given in the URL")
        self.key = key
        self.clean_url = clean_url


def _relative(url: URL) -> str:
    return url.path + (f"?{url.query}" if url.query else "")


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this server only (never ``//host`` or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def _page_owner(request: Request) -> str:
    keys: KeyRing = request.app.state.ui_keys
    if not keys.enabled:
        return ""
    given = request.query_params.get("key")
    if given is not None:
        clean = request.url.remove_query_params("key")
        if keys.owner_for(given) is None:
            raise LoginRequired(_relative(clean), "this key is not accepted by the server")
        raise KeyInURL(given, _relative(clean))
    cookie = request.cookies.get(COOKIE)
    owner = keys.owner_for(cookie) if cookie else None
    if owner is None:
        raise LoginRequired(_relative(request.url))
    return owner


#: the tenant whose data a page shows (raises :class:`LoginRequired` without a good key)
PageOwner = Annotated[str, Depends(_page_owner)]
