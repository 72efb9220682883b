"""Completion logs committed together (:mod:`runner.server.group_commit`): on a real SQLite file,
and through a real server on loopback to the fake provider."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.server.group_commit import GroupWriter
from runner.store import Store
from tests.proxy_fakes import FakeProvider
from tests.servers import start_server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "runner.db")
    try:
        yield s
    finally:
        s.close()


def _has(db: str | Path, trace_id: str, owner: str) -> bool:
    """Whether a fresh connection to the file sees the trace (committed, not just written)."""
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT 1 FROM traces WHERE trace_id=? AND owner=?", (trace_id, owner)).fetchone()
    return row is not None


def _log(trace_id: str, **fields: Any) -> dict[str, Any]:
    return {"trace_id": trace_id, "trace_name": "llm-openai", "status": "success", **fields}


async def test_concurrent_writes_share_rounds_and_are_all_committed(store: Store) -> None:
    writer = GroupWriter(store)

    async def write(i: int) -> bool:
        await writer.write("tenant-a" if i % 2 else "tenant-b", [_log(f"t-{i}")])
        # answered only once committed: a fresh connection to the file sees it already
        return _has(store.path, f"t-{i}", "tenant-a" if i % 2 else "tenant-b")

    seen = await asyncio.gather(*(write(i) for i in range(60)))
    assert all(seen)
    assert writer.rounds < 60  # grouped: fewer transactions than requests
    assert not _has(store.path, "t-1", "tenant-b")  # each under its own tenant


async def test_a_refused_log_fails_its_own_request_only(store: Store) -> None:
    writer = GroupWriter(store)
    results = await asyncio.gather(
        writer.write("", [_log("good-1")]),
        writer.write("", [{"trace_name": "no trace id"}]),
        writer.write("", [_log("good-2")]),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], KeyError)
    assert _has(store.path, "good-1", "") and _has(store.path, "good-2", "")
    # the writer goes on after a failed round
    await writer.write("", [_log("after")])
    assert _has(store.path, "after", "")


async def test_a_waiter_that_goes_away_still_has_its_log_written(store: Store) -> None:
    writer = GroupWriter(store)
    waiter = asyncio.create_task(writer.write("", [_log("abandoned")]))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await writer.write("", [_log("later")])  # rounds run in order: the abandoned one is in
    assert _has(store.path, "abandoned", "")


def test_concurrent_completions_through_a_server_are_each_logged(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeProvider.running("openai") as fake:
        fake.delay = 0.05
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        with start_server(tmp_path / "runner.db") as server:

            async def calls() -> list[dict[str, Any]]:
                async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:

                    async def one(i: int) -> dict[str, Any]:
                        config = {"model": "gpt-4o-mini", "provider": "openai",
                                  "messages": [{"role": "user", "content": f"question {i}"}]}
                        r = await client.post("/completion", json={"llm_configuration": config})
                        r.raise_for_status()
                        return dict(r.json())

                    return await asyncio.gather(*(one(i) for i in range(100)))

            answers = asyncio.run(calls())
            trace_ids = {a["trace_id"] for a in answers}
            assert len(trace_ids) == 100 and all(a["status"] == "success" for a in answers)
            assert all(_has(tmp_path / "runner.db", t, "") for t in trace_ids)
