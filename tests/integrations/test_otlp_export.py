"""OTLP out: a run exported with the official OpenTelemetry SDK and OTLP/HTTP exporter to a real
OTLP receiver (this project's own ``/v1/traces`` on a second server), through both doors; the
receiving store is read back."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner import ConfigError, Experiment, Score, trace
from runner.server.auth import key_owner
from tests.doors import Door
from tests.servers import ServerHandle, start_server

OWNER = key_owner("otel-key")


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerHandle]:
    with start_server(tmp_path / "receiver.db", api_keys=["otel-key"]) as handle:
        # the exporter's own variable for its headers
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer otel-key")
        yield handle


@trace(eval_funcs=[lambda log: Score("retrieved", 1.0 if log.output else 0.0, "found docs")])
def retrieve(question: str) -> list[str]:
    return [f"doc about {question}"]


def answer(question: str) -> str:
    if question == "boom":
        raise RuntimeError("row failed")
    retrieve(question)
    return question.upper()


def exact(log: Any) -> float:
    return float(log.output == log.target)


def received(receiver: ServerHandle) -> list[dict[str, Any]]:
    assert receiver.store is not None
    _, ids = receiver.store.find_roots(OWNER)
    return receiver.store.trace_trees(ids, OWNER)


def events(log: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["attributes"] for e in log["metadata"].get("otel.events", []) if e["name"] == "gen_ai.evaluation.result"]


def test_a_run_is_exported_with_scores_as_evaluation_events(door: Door, receiver: ServerHandle) -> None:
    data = [{"question": "a", "target": "A"}, {"question": "b", "target": "x"}, {"question": "boom", "target": "B"}]
    result = Experiment(name="exported", data=data, func=answer, evals=[exact],
                        otlp_endpoint=receiver.url + "/v1/traces", **door.kwargs()).run("run-1", quiet=True)
    assert result.n_total == 3 and result.n_errors == 1
    trees = received(receiver)
    assert len(trees) == 3  # one OTel trace per row
    by_row = {}
    for tree in trees:
        (span,) = tree["children_logs"]  # the exported root span, under the receiver's trace log
        by_row[span["metadata"]["runner.row_id"]] = span
        assert span["metadata"]["runner.experiment_uuid"] == result.experiment_uuid
        assert span["metadata"]["runner.experiment_name"] == "exported"
        assert span["metadata"]["runner.run_name"] == "run-1" and span["metadata"]["runner.trial"] == 0
        assert span["trace_name"] == "answer"
    rows = {r["metadata"]["row_id"]: r for r in door.store.experiment_rows(result.experiment_uuid)}
    assert set(by_row) == set(rows)
    for row_id, span in by_row.items():
        row = rows[row_id]
        assert span["metadata"]["runner.trace_id"] == row["trace_id"]
        assert span["inputs"] == row["inputs"] and span["start_timestamp"][:19] == row["start_timestamp"][:19]
        if row["status"] == "error":
            assert span["status"] == "error" and "RuntimeError: row failed" in span["error"]
            assert events(span) == [] and span["children_logs"] == []
            continue
        assert span["output"] == row["output"] and span["status"] == "success"
        assert events(span) == [{"gen_ai.evaluation.name": "exact",
                                 "gen_ai.evaluation.score.value": 1.0 if row["output"] == "A" else 0.0}]
        (child,) = span["children_logs"]
        assert child["trace_name"] == "retrieve" and child["parent_trace_id"] == span["trace_id"]
        # the child's score is on the child only, with its reason
        assert events(child) == [{"gen_ai.evaluation.name": "retrieved", "gen_ai.evaluation.score.value": 1.0,
                                  "gen_ai.evaluation.explanation": "found docs"}]


def test_the_environment_variable_and_bad_endpoints(receiver: ServerHandle, monkeypatch: pytest.MonkeyPatch,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RUNNER_OTLP_ENDPOINT", receiver.url + "/v1/traces")
    Experiment(name="env", data=[{"question": "q"}], func=answer).run(quiet=True)
    assert len(received(receiver)) == 1
    with pytest.raises(ConfigError, match="otlp_endpoint must be an http"):
        Experiment(name="bad", data=[{"question": "q"}], func=answer, otlp_endpoint="collector:4318").run(quiet=True)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer wrong")
    result = Experiment(name="refused", data=[{"question": "q"}], func=answer).run(quiet=True)
    assert result.status == "completed"  # the run is stored; the failed export is a warning
    assert "warning: OTLP export of 'refused' failed" in capfd.readouterr().err


def test_the_cli_flag(receiver: ServerHandle, tmp_path: Path) -> None:
    config = tmp_path / "exp.py"
    config.write_text(
        "from runner import Experiment\n"
        "exp = Experiment(name='cli', data=[{'q': 'x'}, {'q': 'y'}], func=lambda q: q)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(config), "--quiet", "--otlp-endpoint", receiver.url + "/v1/traces"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer otel-key"},
    )
    assert done.returncode == 0, done.stderr
    spans = [t["children_logs"][0] for t in received(receiver)]
    assert sorted(s["output"] for s in spans) == ["x", "y"]
    assert {s["metadata"]["runner.experiment_name"] for s in spans} == {"cli"}
