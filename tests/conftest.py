"""Shared fixtures: every test starts from a clean environment in its own directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# the `door` fixture: behavioural tests run through the embedded store and through HTTP
pytest_plugins = ["tests.doors", "tests.pg", "pytester"]


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``RUNNER_*`` or ``PAREA_*`` variables, and the working directory is ``tmp_path``."""
    for name in list(os.environ):
        if name.startswith(("RUNNER_", "PAREA_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield
