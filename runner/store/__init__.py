"""The store: the embedded default backend, and the server's storage.

A SQLite file by default; ``Store("postgresql://...")`` is the same store in PostgreSQL
(:class:`runner.store.pgstore.PgStore`, for a team server).

The modules: ``sqlite`` (:class:`Store`: connections, migrations, experiments) built from query
mixins (``traces``, ``logs``, ``pages``, ``datasets``, ``prompts``, ``pinning``), the helpers they
share (``common``), and the PostgreSQL dialect (``pgsql`` translates the SQL, ``postgres`` holds
the connections, ``pgstore`` the few queries that differ). May import: ``runner.errors``,
``runner._json``, ``runner.names``; nothing else of the runner.
"""

from runner.scoring import merge_scores
from runner.store import pgstore as _pgstore  # noqa: F401  (registers the postgresql:// dialect)
from runner.store.common import now_iso, validate_run_name
from runner.store.sqlite import Store

__all__ = ["Store", "merge_scores", "now_iso", "validate_run_name"]
