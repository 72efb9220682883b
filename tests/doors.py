"""The two doors results go through: the embedded store, and HTTP to a real ``serve``.

Behavioural tests take the ``door`` fixture and run once per door; they read what was stored
through ``door.store`` (the same SQLite file either way), so both doors must store the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runner.store import Store


@dataclass
class Door:
    kind: str
    db: Path | str
    base_url: str | None
    store: Store

    def kwargs(self) -> dict[str, Any]:
        """Experiment keyword arguments that send results through this door."""
        if self.base_url is not None:
            return {"base_url": self.base_url}
        return {"db": self.db}


@pytest.fixture(params=["embedded", "http", "postgresql"])
def door(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Door]:
    db: Path | str = tmp_path / "door.db"
    if request.param == "postgresql":  # the embedded door into PostgreSQL (tests/pg.py)
        db = request.getfixturevalue("pg").url()
    if request.param in ("embedded", "postgresql"):
        store = Store(db)
        try:
            yield Door(request.param, db, None, store)
        finally:
            store.close()
    else:
        from tests.servers import start_server

        with start_server(db) as server:
            assert server.store is not None
            yield Door("http", db, server.base_url, server.store)
