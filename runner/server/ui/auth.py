"""Who is looking at the pages: with API keys configured, a signed session from the login form.

A browser cannot send ``x-api-key`` on a page load, so the pages take the key once, from the
login form (a same-origin ``POST``, throttled: see :mod:`runner.server.browser`), and keep a
signed, expiring session naming the key's tenant in an HttpOnly cookie — never the key itself.
A key in the URL (``?key=...``) is not accepted: it would land in access logs, the history and
``Referer`` headers, and a link carrying one would log the browser into someone else's tenant.
Every page reads as the session's tenant, exactly as the API does
(:func:`runner.server.auth.key_owner`), so a key sees the same runs in the pages as through the
API, and no others. Without keys the pages, like the API, read as the default owner ``""``.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Request
from starlette.datastructures import URL

from runner.server.auth import KeyRing
from runner.server.browser import Sessions

__all__ = ["COOKIE", "LoginRequired", "PageOwner", "safe_next"]

#: the cookie holding the signed session
COOKIE = "runner_session"


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
            params["error"] = self.error
        return "/login?" + urlencode(params)


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
    if request.query_params.get("key") is not None:  # never used, whatever it holds
        raise LoginRequired(_relative(request.url.remove_query_params("key")), "url")
    sessions: Sessions = request.app.state.ui_sessions
    owner = sessions.owner(request.cookies.get(COOKIE))
    if owner is None or not keys.has_owner(owner):
        raise LoginRequired(_relative(request.url))
    return owner


#: the tenant whose data a page shows (raises :class:`LoginRequired` without a good key)
PageOwner = Annotated[str, Depends(_page_owner)]
