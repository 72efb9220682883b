"""The official ``parea-ai`` SDK runs real experiments against our server, and reads them back.

One subprocess (``sdk_scripts/run_experiments.py``) runs two experiments — rows with a failing
one, evals on nested ``@trace`` spans, a dataset-level eval, ``n_trials=2``, and a dataset
fetched by name — then calls the SDK's readers. The tests check what the server stored through
the API, and what the SDK's readers made of it. No network beyond loopback is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import start_server

SCRIPTS = Path(__file__).parent / "sdk_scripts"
KEY = "sdk-test-key"

pytest.importorskip("parea")


@pytest.fixture(scope="module")
def sdk_run(
    db_module: str | Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, Any], httpx.Client]]:
    tmp = tmp_path_factory.mktemp("sdk")
    with start_server(db_module, api_keys=[KEY]) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PAREA_", "_PAREA", "RUNNER_"))}
        env.update(PAREA_BASE_URL=server.base_url, PAREA_API_KEY=KEY)
        proc = subprocess.run(
            [sys.executable, str(SCRIPTS / "run_experiments.py")],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "HTTP error" not in proc.stderr and "Error running experiment" not in proc.stdout, proc.stderr[-3000:]
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT: "))
        with httpx.Client(base_url=server.base_url + "/", headers={"x-api-key": KEY}, timeout=10) as api:
            yield json.loads(line.removeprefix("RESULT: ")), api


def _roots(api: httpx.Client, uuid: str, **flt: str) -> list[dict[str, Any]]:
    response = api.post(f"/experiment/{uuid}/trace_logs", json=flt)
    assert response.status_code == 200
    roots: list[dict[str, Any]] = response.json()
    return roots


def test_both_experiments_ran(sdk_run: tuple[dict[str, Any], httpx.Client]) -> None:
    result, _ = sdk_run
    assert result["local"]["ran"] and result["named"]["ran"]


def test_rows_trials_and_the_failing_row_are_stored(sdk_run: tuple[dict[str, Any], httpx.Client]) -> None:
    result, api = sdk_run
    roots = _roots(api, result["local"]["uuid"])
    assert len(roots) == 8  # 4 rows x 2 trials
    assert sorted(r["inputs"]["question"] for r in roots) == sorted(["2+2", "1+1", "3+3", "boom"] * 2)
    failed = _roots(api, result["local"]["uuid"], filter_field="status", filter_operator="equals", filter_value="error")
    assert len(failed) == 2
    assert all("this row fails on purpose" in r["error"] for r in failed)
    assert all(r["scores"] == [] or {s["name"] for s in r["scores"]} == {"context_length"} for r in failed)


def test_scores_of_nested_spans_reach_the_root_as_floats(sdk_run: tuple[dict[str, Any], httpx.Client]) -> None:
    result, api = sdk_run
    ok = next(r for r in _roots(api, result["local"]["uuid"]) if r["inputs"]["question"] == "2+2")
    scores = {s["name"]: s["score"] for s in ok["scores"]}
    assert scores == {"is_correct": 1.0, "context_length": 7.0, "judge": 0.5}
    assert all(isinstance(v, float) for v in scores.values())
    spans = {c["trace_name"]: c for c in ok["children_logs"]}
    assert {"retrieve", "generate"} <= set(spans)
    assert spans["retrieve"]["scores"] == [
        {"name": "context_length", "score": 7.0, "evaluation_metric_id": None, "reason": None}
    ]
    assert spans["generate"]["depth"] == 1 and spans["generate"]["root_trace_id"] == ok["trace_id"]
    assert spans["generate"]["scores"][0]["reason"] == "a fixed opinion"


def test_finished_stats_and_the_dataset_level_eval(sdk_run: tuple[dict[str, Any], httpx.Client]) -> None:
    result, api = sdk_run
    local = result["local"]["uuid"]
    (listed,) = api.post("/experiments", json={"experiment_uuids": [local]}).json()
    assert (listed["status"], listed["num_samples"], listed["run_name"]) == ("failed", 8, "local-1")
    pinned = {(s["var1"], s["operation"]): s["value"] for s in listed["pinned_stats"]}
    assert pinned[("is_correct", "mean")] == pytest.approx(4 / 6)  # 2+2 and 1+1 right, 3+3 wrong
    assert pinned[("judge", "mean")] == 0.5
    assert pinned[("accuracy", "custom")] == pytest.approx(4 / 6)
    assert ("Latency", "mean") in pinned and ("Cost", "mean") in pinned
    stats = api.get(f"/experiment/{local}/stats").json()["parent_trace_stats"]
    assert len(stats) == 8
    assert result["local"]["avg_scores"] == pytest.approx({"is_correct": 4 / 6, "context_length": 7.25, "judge": 0.5})


def test_a_dataset_fetched_by_name(sdk_run: tuple[dict[str, Any], httpx.Client]) -> None:
    result, api = sdk_run
    roots = _roots(api, result["named"]["uuid"])
    assert sorted((r["inputs"]["question"], r["target"]) for r in roots) == [("1+1", "3"), ("2+2", "4")]
    (listed,) = api.post("/experiments", json={"experiment_uuids": [result["named"]["uuid"]]}).json()
    assert (listed["status"], listed["metadata"]) == ("completed", {"Dataset": "sdk-dataset"})
    assert result["named"]["avg_scores"]["is_correct"] == 0.5


def test_the_sdk_readers_work_against_our_server(sdk_run: tuple[dict[str, Any], httpx.Client]) -> None:
    reads = sdk_run[0]["reads"]
    assert reads["stats_roots"] == 8
    assert reads["stats_avg"] == pytest.approx({"is_correct": 4 / 6, "context_length": 7.25, "judge": 0.5})
    assert {"retrieve", "generate"} <= set(reads["tree"]["children"])
    assert reads["tree"]["scores"] == ["context_length", "is_correct", "judge"]
    assert sorted(x[:3] for x in reads["experiments"]) == [
        ["sdk-local", "local-1", "failed"],
        ["sdk-named", "named-1", "completed"],
    ]
    assert reads["pinned"]["sdk-local"]["accuracy"] == pytest.approx(4 / 6)
    assert reads["collection"] == {"name": "sdk-dataset", "rows": 2}
    assert reads["page"] == {"total": 10, "results": 5}
    assert reads["named_logs"] == 2
