"""Named datasets ("test case collections" in Parea's words) and their rows.

A dataset is read by id or by name through one path (``GET /collection/{id or name}``), so the
two must never be confused: an identifier of ASCII digits only is an id, anything else a name,
and a name of ASCII digits only is refused when a dataset is created (``"1"`` could never be
read by name). Other digits (``"²"``, ``"١"``) are names like any other."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import orjson

from runner.errors import DatasetError, NotFoundError
from runner.store.common import dumps

__all__ = ["DatasetQueries"]


def _is_id(identifier: str) -> bool:
    """Whether a dataset identifier is an id: ASCII digits only (``"²"`` is a name)."""
    return identifier.isascii() and identifier.isdigit()


class DatasetQueries:
    """Mixin of :class:`runner.store.Store` holding datasets and test cases."""

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover - in Store
        raise NotImplementedError

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:  # pragma: no cover
        raise NotImplementedError

    def create_dataset(
        self,
        name: str,
        column_names: Sequence[str],
        test_cases: Iterable[Mapping[str, Any]] = (),
        owner: str = "",
    ) -> dict[str, Any]:
        """Create a dataset; a name already used raises ``ValueError``."""
        from runner.store.common import now_iso

        if _is_id(name):
            raise DatasetError(
                f"a dataset cannot be called {name!r}: a name of digits only would read as a dataset id; "
                "add a letter (e.g. 'set-1')"
            )
        now = now_iso()
        with self.transaction() as c:
            if c.execute("SELECT 1 FROM datasets WHERE owner=? AND name=?", (owner, name)).fetchone():
                raise ValueError(f"a dataset called {name!r} already exists; add rows with POST /testcases")
            cur = c.execute(
                "INSERT INTO datasets(owner, name, column_names, created_at, last_updated_at) VALUES (?,?,?,?,?)",
                (owner, name, dumps(list(column_names)), now, now),
            )
            dataset_id = int(cur.lastrowid or 0)
            ids = self._insert_cases(c, dataset_id, test_cases)
        return {"id": dataset_id, "last_updated_at": now, "test_case_ids": ids}

    @staticmethod
    def _insert_cases(c: sqlite3.Connection, dataset_id: int, test_cases: Iterable[Mapping[str, Any]]) -> list[int]:
        ids = []
        for tc in test_cases:
            cur = c.execute(
                "INSERT INTO testcases(dataset_id, inputs, target, tags) VALUES (?,?,?,?)",
                (
                    dataset_id,
                    dumps(dict(tc.get("inputs") or {})),
                    tc.get("target"),
                    dumps(list(tc.get("tags") or [])),
                ),
            )
            ids.append(int(cur.lastrowid or 0))
        return ids

    def _dataset_row(self, identifier: str | int, owner: str) -> sqlite3.Row:
        rows: list[sqlite3.Row] = []
        if isinstance(identifier, int) or _is_id(identifier):
            if int(identifier) < 2**63:
                rows = self._query("SELECT * FROM datasets WHERE owner=? AND id=?", (owner, int(identifier)))
        else:
            rows = self._query("SELECT * FROM datasets WHERE owner=? AND name=?", (owner, str(identifier)))
        if not rows:
            raise NotFoundError(
                f"dataset {identifier!r} not found; `python -m runner datasets list` shows the datasets"
            )
        return rows[0]

    def add_test_cases(
        self,
        test_cases: Iterable[Mapping[str, Any]],
        *,
        dataset_id: int | None = None,
        name: str | None = None,
        owner: str = "",
    ) -> list[int]:
        """Append rows to a dataset, creating it (by name) if it does not exist."""
        from runner.store.common import now_iso

        cases = list(test_cases)
        if dataset_id is not None:
            ds_id = int(self._dataset_row(dataset_id, owner)["id"])
        elif name is not None:
            if _is_id(name):  # a name, never an id: and no dataset may be called that
                raise DatasetError(f"no dataset may be called {name!r} (digits only); to add rows by id, send 'id'")
            try:
                ds_id = int(self._dataset_row(name, owner)["id"])
            except NotFoundError:
                columns = sorted({k for tc in cases for k in (tc.get("inputs") or {})})
                return list(self.create_dataset(name, columns, cases, owner)["test_case_ids"])
        else:
            raise ValueError("give the dataset's id or name")
        with self.transaction() as c:
            ids = self._insert_cases(c, ds_id, cases)
            c.execute("UPDATE datasets SET last_updated_at=? WHERE id=?", (now_iso(), ds_id))
        return ids

    def get_dataset(self, identifier: str | int, owner: str = "") -> dict[str, Any]:
        """A dataset with its rows, shaped like ``GetTestCaseCollectionResponseSchema``."""
        ds = self._dataset_row(identifier, owner)
        cases = {}
        for r in self._query("SELECT * FROM testcases WHERE dataset_id=? ORDER BY id", (ds["id"],)):
            cases[str(r["id"])] = {
                "id": r["id"],
                "test_case_collection_id": ds["id"],
                "inputs": orjson.loads(r["inputs"]),
                "target": r["target"],
                "tags": orjson.loads(r["tags"]),
            }
        return {
            "id": ds["id"],
            "name": ds["name"],
            "column_names": orjson.loads(ds["column_names"]),
            "created_at": ds["created_at"],
            "last_updated_at": ds["last_updated_at"],
            "test_cases": cases,
        }

    def list_datasets(self, owner: str = "") -> list[dict[str, Any]]:
        return [
            {**dict(r), "column_names": orjson.loads(r["column_names"])}
            for r in self._query(
                "SELECT d.*, (SELECT count(*) FROM testcases t WHERE t.dataset_id=d.id) AS num_rows"
                " FROM datasets d WHERE owner=? ORDER BY name COLLATE BINARY",
                (owner,),
            )
        ]

    def update_test_case(
        self, dataset_id: int, test_case_id: int, fields: Mapping[str, Any], owner: str = ""
    ) -> dict[str, Any]:
        from runner.store.common import now_iso

        ds = self._dataset_row(dataset_id, owner)
        rows = self._query("SELECT * FROM testcases WHERE id=? AND dataset_id=?", (test_case_id, ds["id"]))
        if not rows:
            raise NotFoundError(f"row {test_case_id} not found in dataset {dataset_id}")
        sets, params = [], []
        if fields.get("inputs") is not None:
            merged = {**orjson.loads(rows[0]["inputs"]), **fields["inputs"]}
            sets.append("inputs=?")
            params.append(dumps(merged))
        if "target" in fields and fields["target"] is not None:
            sets.append("target=?")
            params.append(fields["target"])
        if fields.get("tags") is not None:
            sets.append("tags=?")
            params.append(dumps(list(fields["tags"])))
        with self.transaction() as c:
            if sets:
                c.execute(f"UPDATE testcases SET {', '.join(sets)} WHERE id=?", (*params, test_case_id))
            c.execute("UPDATE datasets SET last_updated_at=? WHERE id=?", (now_iso(), ds["id"]))
        return self.get_dataset(int(ds["id"]), owner)["test_cases"][str(test_case_id)]  # type: ignore[no-any-return]
