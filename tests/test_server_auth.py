"""API keys: missing, wrong and cross-tenant keys; each key sees only its own data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runner.server.auth import key_owner
from tests.servers import ServerHandle, experiment, log, start_server


@pytest.fixture
def keyed(db: str | Path) -> Iterator[ServerHandle]:
    with start_server(db, api_keys=["key-a", "key-b"]) as handle:
        yield handle


def _client(server: ServerHandle, headers: dict[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.base_url + "/", headers=headers or {}, timeout=10)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("POST", "/project"),
        ("POST", "/trace_logs/batch"),
        ("GET", "/trace_log/x"),
        ("GET", "/collections"),
        ("POST", "/experiment/x/finished"),
    ],
)
def test_missing_key_is_401_before_the_body_is_read(keyed: ServerHandle, method: str, path: str) -> None:
    with _client(keyed) as c:
        response = c.request(method, path, content=b"{not json")
    assert response.status_code == 401
    assert "missing API key" in response.json()["detail"]


def test_wrong_key_is_401(keyed: ServerHandle) -> None:
    with _client(keyed, {"x-api-key": "key-c"}) as c:
        response = c.get("/")
    assert response.status_code == 401
    assert "not accepted" in response.json()["detail"]


def test_either_header_carries_the_key(keyed: ServerHandle) -> None:
    for header in ("x-api-key", "x-user-id"):
        with _client(keyed, {header: "key-a"}) as c:
            assert c.get("/").status_code == 200


def test_each_key_sees_only_its_own_data(keyed: ServerHandle) -> None:
    with _client(keyed, {"x-api-key": "key-a"}) as a, _client(keyed, {"x-api-key": "key-b"}) as b:
        exp = experiment(a, project="shared-name", run_name="r1")
        assert a.post("/trace_logs/batch", json={"logs": [log("t1", experiment_uuid=exp["uuid"])]}).status_code == 200
        a.post("/collection", json={"name": "ds", "column_names": [], "test_cases": [{"inputs": {"q": 1}}]})

        # B has the same names without clashing, and cannot see or touch A's data
        assert b.post("/project", json={"name": "shared-name"}).json()["was_created"] is True
        assert experiment(b, project="shared-name", run_name="r1")["run_name"] == "r1"
        assert b.get(f"/experiment/{exp['uuid']}/stats").status_code == 404
        assert b.post(f"/experiment/{exp['uuid']}/finished").status_code == 404
        assert b.post(f"/experiment/{exp['uuid']}/trace_logs", json={}).status_code == 404
        assert [e["uuid"] for e in b.post("/experiments", json={}).json()] != [exp["uuid"]]
        assert exp["uuid"] not in {e["uuid"] for e in b.post("/experiments", json={}).json()}
        assert b.get("/trace_log/t1").status_code == 404
        assert (
            b.put("/trace_log", json={"trace_id": "t1", "field_name_to_value_map": {"output": "x"}}).status_code == 404
        )
        assert b.post("/feedback", json={"trace_id": "t1", "score": 1}).status_code == 404
        assert b.post("/trace_log", json=log("t2", experiment_uuid=exp["uuid"])).status_code == 404
        assert b.get("/collection/ds").json() is None  # as for a dataset that does not exist
        assert b.get("/collections").json() == []
        assert b.post("/get_trace_logs", json={"project_name": "shared-name"}).json()["total"] == 0

        # ... and A's data is intact
        assert a.get("/trace_log/t1").json()["output"] is None
        assert len(a.get(f"/experiment/{exp['uuid']}/stats").json()["parent_trace_stats"]) == 1
        assert [d["name"] for d in a.get("/collections").json()] == ["ds"]


def test_the_store_holds_key_ids_not_keys(keyed: ServerHandle, tmp_path: Path) -> None:
    with _client(keyed, {"x-api-key": "key-a"}) as a:
        a.post("/project", json={"name": "p"})
    assert keyed.store is not None
    assert [p["name"] for p in keyed.store.list_projects(key_owner("key-a"))] == ["p"]
    owners = {r[0] for r in keyed.store._query("SELECT owner FROM projects")}
    assert owners == {key_owner("key-a")} and "key-a" not in str(owners)
    if (tmp_path / "runner.db").exists():
        assert b"key-a" not in (tmp_path / "runner.db").read_bytes()
    assert key_owner("key-a") == key_owner("key-a") != key_owner("key-b")


def test_without_keys_requests_act_as_the_embedded_owner(tmp_path: Path) -> None:
    with start_server(tmp_path / "runner.db") as server, _client(server) as c:
        c.post("/project", json={"name": "p"})
        assert server.store is not None
        assert [p["name"] for p in server.store.list_projects("")] == ["p"]
