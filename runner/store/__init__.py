"""The SQLite store: the embedded default backend, and the server's storage."""

from runner.store.sqlite import Store, now_iso, validate_run_name
from runner.store.traces import merge_scores

__all__ = ["Store", "merge_scores", "now_iso", "validate_run_name"]
