"""The one retry policy of every HTTP call the runner makes, on ``tenacity``.

A call to a Parea server (the backend, the synchronous API, ``completion()`` through ``serve``),
a spool replay, or the proxy's call to an LLM provider: each is retried by a :class:`RetryPolicy`,
which says how many attempts there are and how long to wait between them. The wait is full
jitter over a capped exponential backoff, and at least what the server asked with
``Retry-After`` (itself capped: a server asking for an hour does not stall a run; an LLM
provider's is taken as it is, ``exact_retry_after``). Which answers
are worth another attempt is the caller's: it raises :class:`Retry` (or a subclass) for them.

>>> policy = RetryPolicy(max_retries=2, backoff=0.0, max_backoff=1.0)
>>> policy.delay(0, retry_after=0.5)
0.5
>>> calls = []
>>> def flaky() -> str:
...     calls.append(1)
...     if len(calls) < 3:
...         raise Retry("busy")
...     return "ok"
>>> policy.call(flaky), len(calls)
('ok', 3)
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Retry", "RetryPolicy"]

T = TypeVar("T")


class Retry(Exception):
    """Raised inside an attempt: this one failed in a way another attempt may not (a connection
    error, a timeout, 429, 5xx). ``retry_after``: the seconds the server asked to wait, if it did."""

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, and how long to wait between them (see the module docstring)."""

    #: attempts after the first
    max_retries: int = 5
    #: the first retry waits up to this many seconds, doubling with each retry ...
    backoff: float = 0.25
    #: ... up to this many
    max_backoff: float = 10.0
    #: a ``Retry-After`` longer than this is cut to it
    max_retry_after: float = 60.0
    #: wait exactly the ``Retry-After`` the server gave (``0``: at once) rather than at least it
    exact_retry_after: bool = False

    def delay(self, attempt: int, retry_after: float | None = None, floor: float = 0.0) -> float:
        """Seconds to wait before retry ``attempt`` (0-based): full jitter, at least ``retry_after``
        (capped at ``max_retry_after``) and at least ``floor`` (a pause the caller knows of)."""
        wait = random.uniform(0.0, min(self.max_backoff, self.backoff * 2 ** min(attempt, 62)))
        if retry_after is not None:
            asked = min(retry_after, self.max_retry_after)
            wait = asked if self.exact_retry_after else max(wait, asked)
        return max(wait, floor)

    def _tenacity(self, floor: Callable[[], float] | None, before_sleep: Callable[[int, BaseException, float], None]
                  | None) -> dict[str, object]:
        import tenacity

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            return self.delay(state.attempt_number - 1, getattr(exc, "retry_after", None),
                              floor() if floor is not None else 0.0)

        def told(state: tenacity.RetryCallState) -> None:
            if before_sleep is not None and state.outcome is not None and state.next_action is not None:
                exc = state.outcome.exception()
                assert exc is not None
                before_sleep(state.attempt_number, exc, state.next_action.sleep)

        return {
            "stop": tenacity.stop_after_attempt(self.max_retries + 1),
            "wait": wait,
            "retry": tenacity.retry_if_exception_type(Retry),
            "reraise": True,
            "before_sleep": told,
        }

    def call(self, fn: Callable[[], T], *, floor: Callable[[], float] | None = None,
             before_sleep: Callable[[int, BaseException, float], None] | None = None) -> T:
        """``fn()``, attempted again (after the policy's wait) while it raises :class:`Retry`; the
        last attempt's :class:`Retry` propagates."""
        import tenacity

        return tenacity.Retrying(**self._tenacity(floor, before_sleep))(fn)  # type: ignore[arg-type]

    async def acall(self, fn: Callable[[], Awaitable[T]], *, floor: Callable[[], float] | None = None,
                    before_sleep: Callable[[int, BaseException, float], None] | None = None) -> T:
        """:meth:`call` for a coroutine function (the waits are ``asyncio.sleep``)."""
        import tenacity

        result: T = await tenacity.AsyncRetrying(**self._tenacity(floor, before_sleep))(fn)  # type: ignore[arg-type]
        return result
