"""Real experiments with the official ``parea-ai`` SDK against ``PAREA_BASE_URL``, then reads.

Run by ``tests/test_parea_sdk.py`` in a subprocess whose environment points the SDK at a runner
server. The last line printed is ``RESULT: {json}`` with what the SDK saw, for the test to check
against what the server stored.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from parea import Parea, trace
from parea.schemas import EvaluationResult, Log
from parea.schemas.models import ListExperimentUUIDsFilters, QueryParams

p = Parea(api_key=os.environ["PAREA_API_KEY"], project_name="sdk-project")

ANSWERS = {"2+2": "4", "1+1": "2", "3+3": "5"}  # 3+3 is wrong on purpose


def is_correct(log: Log) -> bool:  # a bool score: the server stores 1.0 / 0.0
    return log.output == log.target


def context_length(log: Log) -> int:  # an int score
    return len(log.output or "")


def judged(log: Log) -> EvaluationResult:
    return EvaluationResult(name="judge", score=0.5, reason="a fixed opinion")


@trace(eval_funcs=[context_length])
def retrieve(question: str) -> str:
    return f"ctx:{question}"


@trace(eval_funcs=[judged])
def generate(question: str, context: str) -> str:
    if question == "boom":
        raise ValueError("this row fails on purpose")
    return ANSWERS.get(question, "?")


@trace(eval_funcs=[is_correct])
def answer(question: str) -> str:
    return generate(question, retrieve(question))


def accuracy(logs: list[Log]) -> float:  # a dataset-level eval
    scored = [s.score for log in logs for s in (log.scores or []) if s.name == "is_correct"]
    return sum(scored) / len(scored) if scored else 0.0


local = p.experiment(
    name="sdk-local",
    data=[
        {"question": "2+2", "target": "4"},
        {"question": "1+1", "target": "2"},
        {"question": "3+3", "target": "6"},
        {"question": "boom", "target": "x"},
    ],
    func=answer,
    dataset_level_evals=[accuracy],
    n_trials=2,
    stop_on_error=False,
)
local.run(run_name="local-1")

p.create_test_collection([{"question": "2+2", "target": "4"}, {"question": "1+1", "target": "3"}], name="sdk-dataset")
named = p.experiment(name="sdk-named", data="sdk-dataset", func=answer)
named.run(run_name="named-1")

result: dict[str, Any] = {}
for key, exp in (("local", local), ("named", named)):
    result[key] = {
        "uuid": exp.experiment_uuid,
        "ran": exp.experiment_stats is not None,
        "avg_scores": exp.experiment_stats.avg_scores if exp.experiment_stats else None,
    }

# the SDK's readers, against the same server
stats = p.get_experiment_stats(local.experiment_uuid)
# a row that did not fail on purpose (roots are listed in the order they were stored, and the
# SDK stores a row when it ends, so which row comes first depends on timing)
root_id = next(
    st.trace_id for st in stats.parent_trace_stats if p.get_trace_log(st.trace_id).inputs.get("question") != "boom"
)
# the SDK posts each span from a background thread when the span ends, and its experiment run does
# not wait for the last ones: read the tree once every span of the row has landed (a root with
# both children, each with its score), up to a generous bound
deadline = time.monotonic() + 120
tree = p.get_trace_log(root_id)
while time.monotonic() < deadline and len({s.name for s in tree.scores}) < 3:
    time.sleep(0.2)
    tree = p.get_trace_log(root_id)
listed = p.list_experiments(ListExperimentUUIDsFilters(project_name="sdk-project"))
collection = p.get_collection("sdk-dataset")
page = p.get_trace_logs(QueryParams(project_name="sdk-project", page_size=5))
logs = p.get_experiment_trace_logs(named.experiment_uuid)

result["reads"] = {
    "stats_roots": len(stats.parent_trace_stats),
    "stats_avg": stats.avg_scores,
    "tree": {
        "trace_id": tree.trace_id,
        "children": [c.trace_name for c in tree.children_logs],
        "grandchildren": sorted(g.trace_name for c in tree.children_logs for g in c.children_logs),
        "scores": sorted(s.name for s in tree.scores),
    },
    "experiments": sorted((e.name, e.run_name, e.status.value, e.num_samples) for e in listed),
    "pinned": {e.name: {s.var1: s.value for s in e.pinned_stats} for e in listed},
    "collection": {"name": collection.name, "rows": collection.num_test_cases()},
    "page": {"total": page.total, "results": len(page.results)},
    "named_logs": len(logs),
}
print("RESULT: " + json.dumps(result))
