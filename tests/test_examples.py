"""Every example in experiments/ runs through the real CLI, and as a plain script."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runner.store import Store

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "experiments").glob("*.py"))


def run_cli(example: Path, cwd: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "runner", str(example), "--json", *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    summary: dict[str, Any] = json.loads(proc.stdout)
    assert summary["status"] == "completed"
    for exp in summary["experiments"]:
        assert exp["n_total"] > 0 and exp["n_errors"] == 0, exp
        assert not exp["dataset_level_errors"], exp
    return summary


def test_there_are_at_least_three_examples() -> None:
    assert {p.stem for p in EXAMPLES} >= {"sentiment", "faq_qa", "handbook_rag"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_as_a_script(example: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(example)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert " · completed · " in proc.stdout
    assert (tmp_path / ".runner" / "runner.db").exists()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_importing_an_example_runs_nothing(example: Path, tmp_path: Path) -> None:
    runpy.run_path(str(example), run_name="imported")
    assert not (tmp_path / ".runner").exists()


def test_sentiment_classification(tmp_path: Path) -> None:
    summary = run_cli(ROOT / "experiments" / "sentiment.py", tmp_path)
    by_name = {e["name"]: e for e in summary["experiments"]}
    assert list(by_name) == ["sentiment-keywords", "sentiment-negation"]
    base, neg = by_name["sentiment-keywords"], by_name["sentiment-negation"]
    assert base["n_total"] == neg["n_total"] == 36
    assert 0.5 < base["dataset_level_stats"]["balanced_accuracy"] < neg["dataset_level_stats"]["balanced_accuracy"] < 1
    assert base["scores"]["exact_match"]["mean"] < neg["scores"]["exact_match"]["mean"]


def test_faq_question_answering(tmp_path: Path) -> None:
    (exp,) = run_cli(ROOT / "experiments" / "faq_qa.py", tmp_path)["experiments"]
    assert exp["n_total"] == 18
    assert set(exp["scores"]) == {"levenshtein", "key_facts"}
    stats = exp["dataset_level_stats"]
    assert set(stats) == {"levenshtein_vs_human", "key_facts_vs_human"}
    # the custom score tracks the human ratings better than string similarity does
    assert 0 < stats["levenshtein_vs_human"] < stats["key_facts_vs_human"] <= 1


def test_async_rag_with_nested_spans(tmp_path: Path) -> None:
    (exp,) = run_cli(ROOT / "experiments" / "handbook_rag.py", tmp_path, "--n-workers", "4", "--trials", "2")[
        "experiments"
    ]
    assert exp["n_total"] == 28
    assert set(exp["scores"]) == {"contains", "retrieval_hit"}  # retrieval_hit rolls up from its span
    assert exp["stats"]["total_tokens"] > 0 and exp["stats"]["cost"] > 0
    store = Store(tmp_path / ".runner" / "runner.db")
    try:
        rows = store.experiment_rows(exp["experiment_uuid"])
        tree = store.get_trace_tree(rows[0]["trace_id"])
    finally:
        store.close()

    def shape(node: dict[str, Any]) -> tuple[str, int, list[Any]]:
        return (node["trace_name"], node["depth"], [shape(c) for c in node.get("children_logs") or []])

    assert shape(tree) == ("answer", 0, [("retrieve", 1, [("embed", 2, [])]), ("llm.generate", 1, [])])
