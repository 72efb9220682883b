"""One rule for finished runs, through the server and the embedded store alike (the store is the
same code), on SQLite and on PostgreSQL: finishing again re-pins the stats (a ``completed`` run
is never turned ``failed``: 409), and logs written after the finish refresh the pinned stats, so
the listing, ``/stats``, the CLI and the UI show the same numbers. Also: concurrent updates of
one log are never lost."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner import Experiment
from runner.errors import ConflictError
from runner.store import Store
from tests.servers import experiment, log, serving


def _pinned(exp: dict[str, Any]) -> dict[str, float]:
    return {p["var1"]: p["value"] for p in exp["pinned_stats"]}


def test_a_second_finish_never_turns_completed_into_failed(db: str | Path) -> None:
    with serving(db) as api:
        exp = experiment(api)
        api.post("/trace_log", json=log("r1", experiment_uuid=exp["uuid"], cost=1.0))
        url = f"/experiment/{exp['uuid']}/finished"
        assert api.post(url, json={"status": "completed"}).status_code == 200
        again = api.post(url, json={"status": "completed"})  # an SDK retry: the same answer
        assert again.status_code == 200 and len(again.json()["parent_trace_stats"]) == 1
        refused = api.post(url, json={"status": "failed"})
        assert refused.status_code == 409
        assert "already finished as completed" in refused.json()["detail"]
        (listed,) = api.post("/experiments", json={}).json()
        assert listed["status"] == "completed"
        # a failed run may be finished again as completed (a resumed run does exactly that)
        other = experiment(api, name="other")
        url2 = f"/experiment/{other['uuid']}/finished"
        assert api.post(url2, json={"status": "failed"}).status_code == 200
        assert api.post(url2, json={"status": "completed"}).status_code == 200


def test_logs_after_finish_refresh_every_view_through_the_server(db: str | Path) -> None:
    with serving(db) as api:
        exp = experiment(api)
        api.post(
            "/trace_log", json=log("r1", experiment_uuid=exp["uuid"], cost=1.0, scores=[{"name": "acc", "score": 1.0}])
        )
        api.post(f"/experiment/{exp['uuid']}/finished", json={"status": "completed"})
        # a late root, and a late child of the first row (no experiment_uuid: found by its root)
        api.post(
            "/trace_log", json=log("r2", experiment_uuid=exp["uuid"], cost=3.0, scores=[{"name": "acc", "score": 0.0}])
        )
        api.post("/trace_log", json=log("c1", parent="r1", cost=2.0))
        (listed,) = api.post("/experiments", json={}).json()
        assert listed["num_samples"] == 2
        assert _pinned(listed)["Cost"] == pytest.approx((3.0 + 3.0) / 2)
        assert _pinned(listed)["acc"] == pytest.approx(0.5)
        stats = api.get(f"/experiment/{exp['uuid']}/stats").json()["parent_trace_stats"]
        assert sum(s["cost"] for s in stats) / len(stats) == pytest.approx(_pinned(listed)["Cost"])
        # an update after the finish counts too
        api.put("/trace_log", json={"trace_id": "r2", "field_name_to_value_map": {"cost": 5.0}})
        (listed,) = api.post("/experiments", json={}).json()
        assert _pinned(listed)["Cost"] == pytest.approx((3.0 + 5.0) / 2)
        assert listed["status"] == "completed"


def test_logs_after_finish_refresh_the_embedded_store_and_the_cli(db: str | Path) -> None:
    result = Experiment(
        name="late", data=[{"q": "a", "target": "a"}, {"q": "b", "target": "x"}], func=lambda q: q, db=db, evals=[]
    ).run(run_name="late-1", quiet=True)
    store = Store(db)
    try:
        before = store.get_experiment(result.experiment_uuid)
        assert before["num_samples"] == 2
        store.upsert_traces(
            [
                {
                    "trace_id": "late-row",
                    "root_trace_id": "late-row",
                    "parent_trace_id": "late-row",
                    "experiment_uuid": result.experiment_uuid,
                    "cost": 4.0,
                    "start_timestamp": "x",
                }
            ]
        )
        after = store.get_experiment(result.experiment_uuid)
        assert after["num_samples"] == 3
        assert _pinned(after)["Cost"] == pytest.approx(4.0 / 3)
        (listed,) = store.list_experiments()
        assert listed["num_samples"] == 3 and listed["pinned_stats"] == after["pinned_stats"]
        assert len(store.experiment_stats(result.experiment_uuid)) == 3
        with pytest.raises(ConflictError):
            store.finish_experiment(result.experiment_uuid, status="failed")
        assert store.get_experiment(result.experiment_uuid)["status"] == "completed"
    finally:
        store.close()
    shown = subprocess.run(
        [sys.executable, "-m", "runner", "list", "--db", str(db)], capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if "late-1" in x)
    assert " 3 " in f" {line} ", line


def test_concurrent_updates_of_one_log_are_all_kept(db: str | Path) -> None:
    """Thirteen writers PUT different fields of one log, its scores among them (15 times each, the
    last value last) while a fourteenth POSTs upserts of it: on either store every writer's last
    value is there at the end."""
    fields = [
        "scores",
        "output",
        "target",
        "error",
        "session_id",
        "end_user_identifier",
        "trace_name",
        "status",
        "deployment_id",
        "organization_id",
        "output_for_eval_metrics",
        "project_name",
        "time_to_first_token",
    ]
    with serving(db) as api:
        api.post("/trace_log", json=log("t"))
        base = str(api.base_url)

        def writer(j: int) -> set[int]:
            codes = set()
            with httpx.Client(base_url=base, timeout=30) as c:
                for k in range(15):
                    if j == len(fields):
                        r = c.post("/trace_log", json=log("t", annotations={"k": k}))
                    else:
                        value = _value(fields[j], j, k)
                        r = c.put("/trace_log", json={"trace_id": "t", "field_name_to_value_map": {fields[j]: value}})
                    codes.add(r.status_code)
            return codes

        with ThreadPoolExecutor(len(fields) + 1) as pool:
            codes = set().union(*pool.map(writer, range(len(fields) + 1)))
        assert codes == {200}
        got = api.get("/trace_log/t").json()
        assert got["annotations"] == {"k": 14}
        got["scores"] = [{"name": s["name"], "score": s["score"]} for s in got["scores"]]
        for j, name in enumerate(fields):
            assert got[name] == _value(name, j, 14), name


def _value(field: str, j: int, k: int) -> Any:
    """Writer ``j``'s ``k``-th value of ``field``."""
    if field == "scores":
        return [{"name": "acc", "score": float(k)}]
    return float(k) if field == "time_to_first_token" else f"{j}-{k}"
