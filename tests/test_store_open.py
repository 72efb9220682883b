"""Opening a store (issue 22, W4's fixed cost): a new file switches to WAL without waiting for the
disk, since it holds nothing a crash could lose; a file with data keeps its syncs while it switches.
Both end in WAL with ``synchronous=NORMAL``."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from runner.store import Store
from runner.store import sqlite as store_sqlite


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement the stores opened in the test run, in order."""
    seen: list[str] = []
    real = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real(*args, **kwargs)
        conn.set_trace_callback(seen.append)
        return conn

    monkeypatch.setattr(store_sqlite.sqlite3, "connect", connect)
    return seen


def _settings(store: Store) -> tuple[str, int]:
    conn = store._conn
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]), int(conn.execute("PRAGMA synchronous").fetchone()[0])


def test_a_new_file_switches_to_wal_without_syncing_then_syncs_as_usual(tmp_path: Path, statements: list[str]) -> None:
    store = Store(tmp_path / "new.db")
    try:
        off = statements.index("PRAGMA synchronous=OFF")
        assert off < statements.index("PRAGMA journal_mode=WAL") < statements.index("PRAGMA synchronous=NORMAL")
        assert _settings(store) == ("wal", 1)  # NORMAL for everything written after the switch
        assert store.count_traces() == 0
    finally:
        store.close()


def test_a_file_with_data_keeps_its_syncs_while_it_switches(tmp_path: Path, statements: list[str]) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)  # a rollback-journal file with a row in it, as another tool leaves it
    conn.execute("CREATE TABLE kept (v)")
    conn.execute("INSERT INTO kept VALUES (1)")
    conn.commit()
    conn.close()
    statements.clear()
    store = Store(path)
    try:
        assert _settings(store) == ("wal", 1)
    finally:
        store.close()
    assert "PRAGMA synchronous=OFF" not in statements
    assert "PRAGMA journal_mode=WAL" in statements
    check = sqlite3.connect(path)
    assert check.execute("SELECT v FROM kept").fetchall() == [(1,)]
    check.close()
