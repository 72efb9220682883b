"""Settings read from the environment, in one place.

Precedence everywhere: an argument in code > a CLI flag > the environment > the default here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runner.errors import ConfigError

__all__ = ["DEFAULT_DB", "Settings"]

#: The embedded store, relative to the working directory.
DEFAULT_DB = Path(".runner") / "runner.db"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < 1:
        raise ConfigError(f"{name}={raw!r} must be at least 1")
    return value


@dataclass(frozen=True)
class Settings:
    """What the environment says, with defaults filled in."""

    #: SQLite file of the embedded store (``RUNNER_DB``)
    db_path: Path = DEFAULT_DB
    #: API root of a Parea-compatible server, with ``/api/parea/v1`` (``PAREA_BASE_URL``)
    base_url: str | None = None
    #: API key sent as ``x-api-key`` (``PAREA_API_KEY``)
    api_key: str | None = None
    #: rows run at once (``RUNNER_N_WORKERS``)
    n_workers: int = 10
    #: project experiments are filed under (``RUNNER_PROJECT``)
    project_name: str = "default"
    #: no progress bar and no summary printed (``RUNNER_QUIET=1``)
    quiet: bool = False
    #: keys ``serve`` accepts, one tenant each (``RUNNER_API_KEYS``, comma-separated)
    api_keys: tuple[str, ...] = ()
    #: Host names ``serve`` answers besides loopback and its bound address (``RUNNER_ALLOWED_HOSTS``)
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            db_path=Path(env.get("RUNNER_DB") or DEFAULT_DB),
            base_url=(env.get("PAREA_BASE_URL") or None),
            api_key=(env.get("PAREA_API_KEY") or None),
            n_workers=_int(env, "RUNNER_N_WORKERS", 10),
            project_name=env.get("RUNNER_PROJECT") or "default",
            quiet=(env.get("RUNNER_QUIET", "").lower() in ("1", "true", "yes")),
            api_keys=tuple(k.strip() for k in env.get("RUNNER_API_KEYS", "").split(",") if k.strip()),
            allowed_hosts=tuple(h.strip() for h in env.get("RUNNER_ALLOWED_HOSTS", "").split(",") if h.strip()),
        )
