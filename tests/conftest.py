"""Shared fixtures: every test starts from a clean environment in its own directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import ratelimit

# the `door` fixture: behavioural tests run through the embedded store and through HTTP
pytest_plugins = ["tests.doors", "tests.pg", "pytester"]


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``RUNNER_*`` or ``PAREA_*`` variables, the working directory is ``tmp_path``, and the
    process-wide rate limiters start afresh.

    The limiters are keyed by service (``backend:<url>``) and live as long as the process. A
    server of an earlier test that had the same port number and answered 429s would otherwise
    hand this test its lowered limit: a limiter that already existed is the only way CI's run
    could see a first window of 5 where a new one starts at 8."""
    for name in list(os.environ):
        if name.startswith(("RUNNER_", "PAREA_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ratelimit, "_limiters", {})
    yield
