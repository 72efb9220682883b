"""The one error the proxy raises on purpose.

Upstream failures (HTTP errors, timeouts, exhausted retries) are not raised: they come back as a
completion with ``status: "error"``, as the Parea API does. Only requests that can never work
as configured raise::

    runner.errors.ConfigError
    └── ProxyConfigError     unknown or unsupported provider, no API key, no model,
                             a deployed prompt, an unreadable providers or prices file

The server turns a ``ProxyConfigError`` into HTTP 400 with ``str(err)`` as the detail.
"""

from __future__ import annotations

from runner.errors import ConfigError

__all__ = ["ProxyConfigError"]


class ProxyConfigError(ConfigError):
    """The completion request cannot be served as configured; the message says what to set."""
