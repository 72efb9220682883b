"""Datasets on whichever backend is configured: what ``python -m runner datasets ...`` calls.

The dataset functions are synchronous (they back CLI commands and work in notebooks) and talk either
to a server (``base_url``, over httpx with the same retries as :class:`runner.backends.http.backend.HttpBackend`)
or to the embedded store (``db``), as :func:`runner.backends.target.resolve_target` decides.

>>> upload_dataset("datasets/qa.csv", "qa")  # doctest: +SKIP
{'id': 1, 'name': 'qa', 'num_rows': 20, 'location': '.runner/runner.db'}
>>> [d["name"] for d in list_datasets()]  # doctest: +SKIP
['qa']
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runner.backends.http.api import SyncApi
from runner.errors import BackendError, DatasetError
from runner.schema import TestCaseSchema

__all__ = ["list_datasets", "test_cases", "upload_dataset"]

_RESERVED = ("target", "tags")


def test_cases(source: Any) -> Iterator[dict[str, Any]]:
    """``TestCaseSchema`` dicts from a file, a DataFrame or dicts: ``target`` and ``tags`` apart."""
    from runner.pipeline.dataset import iter_records

    for i, rec in enumerate(iter_records(source)):
        tags = rec.get("tags")
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        try:
            case = TestCaseSchema.model_validate(
                {
                    "inputs": {k: v for k, v in rec.items() if k not in _RESERVED},
                    "target": rec.get("target"),
                    "tags": [t if isinstance(t, str) else str(t) for t in tags or []],
                }
            )
        except ValidationError as exc:
            raise DatasetError(f"row {i} of the dataset cannot be stored: {exc.errors()[0]['msg']}") from None
        yield case.model_dump()


test_cases.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def _resolve(
    base_url: str | None, api_key: str | None, db: str | Path | None
) -> tuple[str | None, str | None, Path | None]:
    from runner.backends.target import resolve_target

    target = resolve_target(base_url=base_url, api_key=api_key, db=db)
    if target.base_url is not None:
        return target.base_url, target.api_key, None
    return None, None, Path(target.db)


def upload_dataset(
    source: Any,
    name: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    db: str | Path | None = None,
    chunk_size: int = 1000,
) -> dict[str, Any]:
    """Store the rows of ``source`` as the dataset ``name``; returns its id, name, size and place.

    ``source`` is a .csv/.jsonl/.json path, a DataFrame or an iterable of dicts; its ``target``
    column becomes each row's target and ``tags`` its tags. Every row is read and checked before
    anything is written, so a bad file leaves no half-made dataset; a name already used is a
    :class:`DatasetError`."""
    if not name:
        raise DatasetError("give the dataset a name (--name NAME)")
    cases = list(test_cases(source))
    if not cases:
        raise DatasetError(f"{source!s:.200} has no rows; nothing to upload")
    columns = sorted({k for case in cases for k in case["inputs"]})
    base_url, api_key, db_path = _resolve(base_url, api_key, db)
    first, rest = (
        cases[:chunk_size],
        [cases[i : i + chunk_size] for i in range(chunk_size, len(cases), chunk_size)],
    )
    taken = f"a dataset called {name!r} already exists on {{}}; pick another name"

    if base_url is None:
        from runner.store import Store

        assert db_path is not None
        store = Store(db_path)
        try:
            try:
                created = store.create_dataset(name, columns, first)
            except ValueError:
                raise DatasetError(taken.format(store.path)) from None
            for chunk in rest:
                store.add_test_cases(chunk, dataset_id=created["id"])
        finally:
            store.close()
        return {"id": created["id"], "name": name, "num_rows": len(cases), "location": str(db_path)}

    with SyncApi(base_url, api_key) as api:
        body = {"name": name, "column_names": columns, "test_cases": first}
        response = api.request("POST", "/collection", body, accept=frozenset({409}))
        if response.status_code == 409:
            raise DatasetError(taken.format(api.base_url))
        dataset_id = response.json()["id"]
        for chunk in rest:
            api.request("POST", "/testcases", {"id": dataset_id, "test_cases": chunk})
    return {"id": dataset_id, "name": name, "num_rows": len(cases), "location": api.base_url}


def list_datasets(
    *, base_url: str | None = None, api_key: str | None = None, db: str | Path | None = None
) -> list[dict[str, Any]]:
    """Every dataset (``id``, ``name``, ``column_names``, ``num_rows``, timestamps), by name.

    A server must offer the ``collections`` extension (the runner's does; Parea has no list)."""
    base_url, api_key, db_path = _resolve(base_url, api_key, db)
    if base_url is None:
        from runner.store import Store

        assert db_path is not None
        store = Store(db_path)
        try:
            return [{k: v for k, v in d.items() if k != "owner"} for d in store.list_datasets()]
        finally:
            store.close()
    with SyncApi(base_url, api_key) as api:
        if "collections" not in api.extensions():
            raise BackendError(
                f"the server at {api.base_url} cannot list datasets (the Parea API has no such endpoint); "
                'fetch one by name with `data="NAME"` or look in that server\'s web app'
            )
        datasets: list[dict[str, Any]] = api.request("GET", "/collections").json()
        return datasets
