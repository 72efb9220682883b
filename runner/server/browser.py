"""What a web page in the user's browser must not be able to do to a server on their machine.

A page on any site can make the browser send requests to ``http://127.0.0.1:8765``: "simple"
cross-origin requests (a form post, a ``text/plain`` fetch) go out without asking, and a page
whose hostname it rebinds to ``127.0.0.1`` (DNS rebinding) even reads the answers. So:

* **Host allow-list** (:func:`allowed_host_list`, for Starlette's ``TrustedHostMiddleware``):
  a request is answered only if its ``Host`` header
  names this server — a loopback name (``127.0.0.1``, ``localhost``, ``::1``), the address it
  is bound to, or a host given with ``--allowed-host`` / ``RUNNER_ALLOWED_HOSTS`` (wildcards
  like ``*.example.com``; ``*`` turns the check off, for a proxy that checks itself). Anything
  else is a 400: a rebound name never reaches the data.
* **Origin and content type** (:class:`BrowserGuard`): a state-changing request (``POST``,
  ``PUT``, ``PATCH``, ``DELETE``) that carries a foreign ``Origin`` (or ``Sec-Fetch-Site:
  cross-site``) is a 403; one to the API with a body must say ``Content-Type:
  application/json`` (415 otherwise), which no page can send cross-origin without a CORS
  preflight this server never grants; and a form post to the pages (log in, log out) must come
  from the pages themselves (a same-origin ``Origin`` or ``Referer``), else 403.
* **Sessions** (:class:`Sessions`): the UI's cookie holds a signed, expiring session naming the
  tenant, never a key; the signing key is derived from all configured API keys, so it survives
  restarts and worker processes, and only someone holding every key could forge one.
* **Login throttle** (:class:`LoginThrottle`): wrong keys cost time — after
  :data:`LOGIN_BURST` failures from one address, one attempt per :data:`LOGIN_INTERVAL` seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "LOCAL_HOSTS",
    "LOGIN_BURST",
    "LOGIN_INTERVAL",
    "SESSION_SECONDS",
    "BrowserGuard",
    "LoginThrottle",
    "Sessions",
    "allowed_host_list",
    "same_origin",
]

#: Host names always accepted: this machine's loopback names
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
#: failed logins allowed from one address before it is slowed down, and then one per this many seconds
LOGIN_BURST, LOGIN_INTERVAL = 5, 2.0
#: how long a UI session lasts
SESSION_SECONDS = 12 * 3600

_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def allowed_host_list(allowed_hosts: Iterable[str] = ()) -> list[str]:
    """The ``Host`` names to answer (for Starlette's ``TrustedHostMiddleware``): the loopback
    names and ``allowed_hosts``."""
    return [*LOCAL_HOSTS, *(h.strip().lower() for h in allowed_hosts if h.strip())]


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


def same_origin(scope: Scope, url: str | None) -> bool:
    """Whether ``url`` (an ``Origin`` or ``Referer``) names the host this request was sent to."""
    if not url or url == "null":
        return False
    host = _header(scope, b"host")
    parts = urlsplit(url)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc.lower() == str(host).lower()


#: the Content-Types a web page may POST to another site without a CORS preflight (and none)
_SIMPLE_TYPES = frozenset({"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})


class BrowserGuard:
    """403 for state-changing requests from other sites; 415 for API writes that are not JSON."""

    def __init__(self, app: ASGIApp, *, api_prefix: str, machine_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.api_prefix = api_prefix
        #: routes for programs, not pages (the OpenAI-compatible gateway, OTLP): a body of a type
        #: a page may send cross-site without a CORS preflight is refused, whatever else it is
        self.machine_prefixes = machine_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _UNSAFE:
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        fetch_site = _header(scope, b"sec-fetch-site")
        if (origin is not None and not same_origin(scope, origin)) or fetch_site == "cross-site":
            await _refuse(send, 403, f"requests from other sites are refused (Origin: {origin or fetch_site})")
            return
        if scope["path"].startswith(self.api_prefix):
            ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            length = _header(scope, b"content-length")
            has_body = length not in (None, "0") or _header(scope, b"transfer-encoding") is not None
            if has_body and not (ctype == "application/json" or ctype.endswith("+json")):
                await _refuse(send, 415, f"send the body as JSON with Content-Type: application/json (got {ctype!r})")
                return
        elif scope["path"].startswith(self.machine_prefixes):
            ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if ctype in _SIMPLE_TYPES:
                await _refuse(send, 415, f"{ctype or 'a body without a Content-Type'} is not accepted here:"
                              " send JSON (or OTLP protobuf) with its Content-Type")
                return
        elif (
            origin is None
            # a JSON body cannot come from another site's page without a CORS preflight, which
            # this server never grants: only the bodies a form can send need to prove their page
            and (_header(scope, b"content-type") or "").split(";")[0].strip().lower() in _SIMPLE_TYPES
            and not same_origin(scope, _header(scope, b"referer"))
        ):
            await _refuse(send, 403, "a form of these pages must be sent from these pages (no Origin or Referer)")
            return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Sessions:
    """Signed, expiring UI sessions: ``<owner>.<expiry>.<HMAC-SHA256>`` (base64url), naming the
    tenant (:func:`runner.server.auth.key_owner`), never the key."""

    def __init__(self, keys: Sequence[str], seconds: int = SESSION_SECONDS) -> None:
        material = "\n".join(sorted(set(keys))).encode()
        self._secret = hashlib.sha256(b"runner ui session\n" + material).digest()
        self.seconds = seconds

    def _mac(self, payload: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._secret, payload, hashlib.sha256).digest()).decode().rstrip("=")

    def issue(self, owner: str, now: float | None = None) -> str:
        expiry = int((time.time() if now is None else now) + self.seconds)
        payload = f"{owner}.{expiry}".encode()
        return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + self._mac(payload)

    def owner(self, token: str | None, now: float | None = None) -> str | None:
        """The tenant of a valid, unexpired session token; ``None`` otherwise."""
        if not token or token.count(".") != 1:
            return None
        encoded, mac = token.split(".")
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        owner, _, expiry = payload.decode("utf-8", "replace").rpartition(".")
        if not expiry.isdigit() or int(expiry) < (time.time() if now is None else now):
            return None
        return owner


class LoginThrottle:
    """Failed logins per client address: :data:`LOGIN_BURST` free, then one per :data:`LOGIN_INTERVAL` s."""

    def __init__(self, burst: int = LOGIN_BURST, interval: float = LOGIN_INTERVAL) -> None:
        self.burst = burst
        self.interval = interval
        self._failures: dict[str, tuple[float, float]] = {}  # address -> (allowance used, at)
        self._lock = threading.Lock()

    def wait(self, address: str, now: float | None = None) -> float:
        """Seconds ``address`` must wait before its next attempt (0: go ahead)."""
        t = time.monotonic() if now is None else now
        with self._lock:
            used, at = self._failures.get(address, (0.0, t))
            used = max(0.0, used - (t - at) / self.interval)
            spare = used - (self.burst - 1)  # above 0: the burst is spent
            return 0.0 if spare <= 1e-9 else spare * self.interval

    def failed(self, address: str, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self._lock:
            used, at = self._failures.get(address, (0.0, t))
            self._failures[address] = (max(0.0, used - (t - at) / self.interval) + 1, t)
            if len(self._failures) > 10_000:  # forget the oldest half
                for key in sorted(self._failures, key=lambda k: self._failures[k][1])[:5_000]:
                    del self._failures[key]
