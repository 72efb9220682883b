"""Settings come from the environment in one place, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import ConfigError
from runner.names import generate_run_name
from runner.settings import DEFAULT_DB, Settings
from runner.store import validate_run_name


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.db_path, s.base_url, s.api_key, s.n_workers, s.project_name, s.quiet, s.api_keys) == (
        DEFAULT_DB, None, None, 10, "default", False, ()
    )


def test_environment() -> None:
    s = Settings.from_env(
        {
            "RUNNER_DB": "/tmp/x.db",
            "PAREA_BASE_URL": "http://h/api/parea/v1",
            "PAREA_API_KEY": "k",
            "RUNNER_N_WORKERS": "4",
            "RUNNER_PROJECT": "p",
            "RUNNER_QUIET": "1",
            "RUNNER_API_KEYS": "a, b,,",
        }
    )
    assert s.db_path == Path("/tmp/x.db") and s.base_url == "http://h/api/parea/v1" and s.api_key == "k"
    assert (s.n_workers, s.project_name, s.quiet, s.api_keys) == (4, "p", True, ("a", "b"))


@pytest.mark.parametrize("value", ["x", "0", "-3"])
def test_bad_numbers_name_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="RUNNER_N_WORKERS"):
        Settings.from_env({"RUNNER_N_WORKERS": value})


def test_generated_run_names_are_valid_and_vary() -> None:
    names = {generate_run_name() for _ in range(50)}
    assert len(names) > 40
    for n in names:
        assert validate_run_name(n) == n
