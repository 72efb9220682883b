"""The one retry policy (runner.retrying): attempts, waits, what is retried."""

from __future__ import annotations

import asyncio
import doctest

import pytest

import runner.retrying
from runner.retrying import Retry, RetryPolicy


def test_docstring_examples_pass() -> None:
    result = doctest.testmod(runner.retrying)
    assert result.failed == 0 and result.attempted >= 4


def test_the_wait_is_jittered_capped_and_at_least_retry_after_and_the_floor() -> None:
    policy = RetryPolicy(max_retries=3, backoff=1.0, max_backoff=4.0, max_retry_after=30.0)
    waits = [policy.delay(attempt) for attempt in range(10) for _ in range(50)]
    assert all(0.0 <= w <= 4.0 for w in waits)
    assert policy.delay(0, retry_after=7.0) == 7.0  # what the server asked, over the jitter
    assert policy.delay(0, retry_after=3600.0) == 30.0  # ... but never an hour
    assert policy.delay(0, floor=2.5) >= 2.5
    exact = RetryPolicy(backoff=1.0, max_backoff=4.0, exact_retry_after=True)
    assert exact.delay(3, retry_after=0.0) == 0.0  # a provider's "Retry-After: 0" means at once
    assert policy.delay(10_000) <= 4.0  # no overflow for a long outage


def test_gives_up_after_max_retries_plus_one_attempts_with_the_last_error() -> None:
    policy = RetryPolicy(max_retries=2, backoff=0.0, max_backoff=0.0)
    calls: list[int] = []
    told: list[tuple[int, float]] = []

    def always() -> None:
        calls.append(1)
        raise Retry(f"attempt {len(calls)}")

    with pytest.raises(Retry, match="attempt 3"):
        policy.call(always, before_sleep=lambda n, exc, wait: told.append((n, wait)))
    assert len(calls) == 3 and [n for n, _ in told] == [1, 2]


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    async def refused() -> None:
        calls.append(1)
        raise ValueError("a 400 is final")

    with pytest.raises(ValueError):
        asyncio.run(RetryPolicy(max_retries=5, backoff=0.0).acall(refused))
    assert calls == [1]


def test_async_attempts_wait_the_retry_after_they_were_told() -> None:
    policy = RetryPolicy(max_retries=1, backoff=0.0, max_backoff=0.0)
    waits: list[float] = []
    calls: list[int] = []

    async def busy_once() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise Retry("429", retry_after=0.05)
        return "ok"

    assert asyncio.run(policy.acall(busy_once, before_sleep=lambda n, e, w: waits.append(w))) == "ok"
    assert waits == [0.05]
