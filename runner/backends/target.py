"""Which door results go through: a :class:`Target`, resolved once by :func:`resolve_target`.

The precedence, the same everywhere (a run, ``completion()`` outside a run, ``list``, ``show``,
``compare``, ``--baseline``, ``datasets``, ``prompts``, ``sync``):

1. an argument in code (``Experiment(base_url=..., db=...)``; in a config file, its value beats
   the command line's flag, which ``run`` then says it ignored);
2. a command-line flag (``--base-url``, ``--db``), which the CLI passes as the argument;
3. the environment (``PAREA_BASE_URL``, ``PAREA_API_KEY``, ``RUNNER_DB``);
4. the default: the embedded store ``.runner/runner.db``.

A server address beats a store at the same level; a store given explicitly (argument or flag)
beats a server named only by the environment: ``--db x.db`` reads ``x.db`` even with
``PAREA_BASE_URL`` set. Everything else receives the resolved value and never looks at the
environment again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runner.settings import Settings

__all__ = ["Target", "resolve_target"]


@dataclass(frozen=True)
class Target:
    """Where a run's results go and are read back from.

    ``base_url`` set: a Parea-compatible server (``api_key`` is sent as ``x-api-key``; ``db`` is
    where the spool of logs the server could not take yet lives, next to it). Otherwise the
    embedded store at ``db``: a SQLite file, or a ``postgresql://`` URL.
    """

    db: str
    base_url: str | None = None
    api_key: str | None = None

    @property
    def is_server(self) -> bool:
        return self.base_url is not None

    @property
    def location(self) -> str:
        """Where the results are, for people: the server's URL or the store's path."""
        return self.base_url if self.base_url is not None else self.db

    @property
    def store_exists(self) -> bool:
        """Whether there is something to read: a server, an existing file, or a PostgreSQL URL."""
        from runner.store.postgres import is_postgres_url

        return self.is_server or is_postgres_url(self.db) or self.db == ":memory:" or Path(self.db).exists()

    def __repr__(self) -> str:  # never print a key
        key = ", api_key=(set)" if self.api_key else ""
        return f"Target(db={self.db!r}, base_url={self.base_url!r}{key})"


def resolve_target(
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    db: str | Path | None = None,
    settings: Settings | None = None,
) -> Target:
    """The one place the door is decided (see the module docstring for the precedence).

    ``base_url``, ``api_key`` and ``db`` are the explicit choices (an argument, else a flag);
    ``settings`` is the environment (read now when not given)."""
    base_url = base_url or None  # an empty value is no choice, as in the environment
    db = db or None
    env = settings if settings is not None else Settings.from_env()
    store = str(db) if db is not None else str(env.db_path)
    if base_url is not None:
        return Target(db=store, base_url=str(base_url), api_key=api_key or env.api_key)
    if db is not None:
        return Target(db=store)
    if env.base_url:
        return Target(db=store, base_url=env.base_url, api_key=api_key or env.api_key)
    return Target(db=store)
