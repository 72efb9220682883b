"""Two tenants on one real server (two API keys, uvicorn on loopback, a SQLite file, then
PostgreSQL): neither can read, squat or poison the other's data, and the completion cache (in
the store on both) answers only its own tenant."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.proxy_fakes import FakeProvider
from tests.servers import ServerHandle, experiment, log, start_server


@pytest.fixture
def server(db: str | Path) -> Iterator[ServerHandle]:
    """A server with two tenants, over a SQLite file, then over PostgreSQL (``tests/pg.py``)."""
    with start_server(db, api_keys=["key-a", "key-b"]) as handle:
        yield handle


@pytest.fixture
def a(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url + "/", headers={"x-api-key": "key-a"}, timeout=30) as c:
        yield c


@pytest.fixture
def b(server: ServerHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url + "/", headers={"x-api-key": "key-b"}, timeout=30) as c:
        yield c


def _cost(stats: dict[str, Any]) -> float:
    return sum(float(s["cost"]) for s in stats["parent_trace_stats"])


def test_another_tenants_child_log_never_reaches_your_stats(a: httpx.Client, b: httpx.Client) -> None:
    exp = experiment(a)
    assert a.post("/trace_log", json=log("root-1", experiment_uuid=exp["uuid"], cost=0.25)).status_code == 200
    poison = log(
        "poison",
        parent="root-1",
        root="root-1",
        cost=1000.0,
        total_tokens=10**6,
        scores=[{"name": "b_poison", "score": 1.0}],
    )
    assert b.post("/trace_log", json=poison).status_code == 200  # stored, as B's own span
    stats = a.get(f"/experiment/{exp['uuid']}/stats").json()
    assert _cost(stats) == 0.25
    assert all(s["name"] != "b_poison" for row in stats["parent_trace_stats"] for s in row["scores"])
    tree = a.get("/trace_log/root-1").json()
    assert tree["children_logs"] == [] and tree["cost"] == 0.25
    rows = a.post(f"/experiment/{exp['uuid']}/trace_logs", json={}).json()
    assert [r["cost"] for r in rows] == [0.25]
    finished = a.post(f"/experiment/{exp['uuid']}/finished", json={"status": "completed"}).json()
    assert _cost(finished) == 0.25
    (listed,) = a.post("/experiments", json={}).json()
    pinned = {p["var1"]: p["value"] for p in listed["pinned_stats"]}
    assert pinned["Cost"] == 0.25 and "b_poison" not in pinned


def test_put_trace_log_checks_the_experiment_like_post(a: httpx.Client, b: httpx.Client) -> None:
    exp = experiment(a)
    assert a.post("/trace_log", json=log("a-root", experiment_uuid=exp["uuid"])).status_code == 200
    assert b.post("/trace_log", json=log("b-root")).status_code == 200
    for target in (exp["uuid"], "00000000-0000-4000-8000-000000000000"):
        moved = b.put("/trace_log", json={"trace_id": "b-root", "field_name_to_value_map": {"experiment_uuid": target}})
        assert moved.status_code == 404, moved.text
        assert "not found" in moved.json()["detail"]
    (listed,) = a.post("/experiments", json={}).json()
    assert listed["num_samples"] == 1
    assert len(a.get(f"/experiment/{exp['uuid']}/stats").json()["parent_trace_stats"]) == 1


def test_trace_ids_are_per_tenant_and_every_acknowledged_write_is_stored(a: httpx.Client, b: httpx.Client) -> None:
    assert a.post("/trace_log", json=log("same-id", output="from A")).status_code == 200
    # B posting the same id used to get 200 while nothing was stored; now it is B's own log
    assert b.post("/trace_log", json=log("same-id", output="from B")).status_code == 200
    assert b.post("/trace_logs/batch", json={"logs": [log("same-id", status="error")]}).json() == {"count": 1}
    assert a.get("/trace_log/same-id").json()["output"] == "from A"
    from_b = b.get("/trace_log/same-id").json()
    assert (from_b["output"], from_b["status"]) == ("from B", "error")
    # and a tenant posting first cannot squat an id the other uses later
    assert b.post("/trace_log", json=log("later-id", output="squat")).status_code == 200
    assert a.post("/trace_log", json=log("later-id", output="mine")).status_code == 200
    assert a.get("/trace_log/later-id").json()["output"] == "mine"
    assert (
        b.put("/trace_log", json={"trace_id": "later-id", "field_name_to_value_map": {"output": "x"}}).status_code
        == 200
    )
    assert a.get("/trace_log/later-id").json()["output"] == "mine"


def test_an_existing_store_keeps_its_traces_through_the_migration(tmp_path: Path) -> None:
    import sqlite3

    from runner.store import Store
    from runner.store.migrations import MIGRATIONS

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript(MIGRATIONS[0] + ";PRAGMA user_version=1;")
    conn.execute(
        "INSERT INTO traces(trace_id, owner, root_trace_id, parent_trace_id, is_root, data) VALUES (?,?,?,?,?,?)",
        ("t1", "", "t1", "t1", 1, '{"trace_id": "t1", "root_trace_id": "t1", "output": "kept"}'),
    )
    conn.commit()
    conn.close()
    store = Store(db)
    try:
        assert store.get_trace_tree("t1")["output"] == "kept"
        store.upsert_traces([{"trace_id": "t1", "root_trace_id": "t1", "parent_trace_id": "t1"}], "key:other")
        assert store.count_traces("") == 1 and store.count_traces("key:other") == 1
    finally:
        store.close()


# -- the completion cache ---------------------------------------------------------------------------


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    with FakeProvider.running("openai") as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-server")
        yield fake


def _completion(client: httpx.Client, **extra: Any) -> dict[str, Any]:
    config = {"model": "gpt-4o-mini", "provider": "openai", "messages": [{"role": "user", "content": "A's secret"}]}
    response = client.post("/completion", json={"llm_configuration": config, **extra})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_completion_cache_is_per_tenant_and_per_provider_key(provider: FakeProvider, db: str | Path) -> None:
    with (
        start_server(db, api_keys=["key-a", "key-b"]) as server,
        httpx.Client(base_url=server.base_url + "/", headers={"x-api-key": "key-a"}, timeout=30) as a,
        httpx.Client(base_url=server.base_url + "/", headers={"x-api-key": "key-b"}, timeout=30) as b,
    ):
        assert _completion(a)["cache_hit"] is False
        assert _completion(a)["cache_hit"] is True  # the cache still works within a tenant
        assert provider.calls == 1
        # B asks the same prompt with a junk provider key: A's answer must not come back
        answer = _completion(b, provider_api_key="junk")
        assert answer["cache_hit"] is False
        assert provider.calls == 2
        assert provider.headers[-1].get("authorization") == "Bearer junk"
        # B with the server's own key: still not A's entry
        assert _completion(b)["cache_hit"] is False
        # A with another provider key: a different entry too
        assert _completion(a, provider_api_key="sk-other")["cache_hit"] is False
        assert provider.calls == 4

        # identical concurrent requests of two tenants are not merged into one upstream call
        provider.delay = 0.3

        def ask(client: httpx.Client) -> bool:
            return bool(_completion(client, llm_inputs={}, metadata={"cache_seed": "fresh"})["cache_hit"])

        with ThreadPoolExecutor(2) as pool:
            hits = list(pool.map(ask, [a, b]))
        assert hits == [False, False]
        assert provider.calls == 6
