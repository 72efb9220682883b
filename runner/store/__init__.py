"""The store: the embedded default backend, and the server's storage.

A SQLite file by default; ``Store("postgresql://...")`` is the same store in PostgreSQL
(:class:`runner.store.pgstore.PgStore`, for a team server).
"""

from runner.store.sqlite import Store, now_iso, validate_run_name
from runner.store.traces import merge_scores

__all__ = ["Store", "merge_scores", "now_iso", "validate_run_name"]
