"""Behaviour of Experiment.run() end to end, through both doors (embedded store and HTTP)."""

from __future__ import annotations

import asyncio
import contextvars
import json
import math
import threading
import time
from typing import Any

import pandas as pd
import pytest
import scipy.stats

from evals import exact_match, levenshtein
from evals.dataset import accuracy, balanced_accuracy, pearson, spearman
from runner import DatasetError, Experiment, FunctionError, Result, RunNameError, Score, trace
from runner.scoring import Log
from tests.doors import Door

QA = [{"question": f"q{i}", "target": f"Q{i}"} for i in range(20)]


def upper(question: str) -> str:
    return question.upper()


def roots(door: Door, result: Result) -> list[dict[str, Any]]:
    return door.store.experiment_rows(result.experiment_uuid)


def test_sync_function_scores_and_stores_every_row(door: Door) -> None:
    result = Experiment(name="qa", data=QA, func=upper, evals=[exact_match], **door.kwargs()).run(
        "baseline-1", quiet=True
    )
    assert isinstance(result, Result)
    assert result.status == "completed" and result.run_name == "baseline-1"
    s = result.scores["exact_match"]
    assert (s.mean, s.n, s.n_errors, s.n_total) == (1.0, 20, 0, 20)
    stored = roots(door, result)
    assert len(stored) == 20
    r0 = next(r for r in stored if r["inputs"] == {"question": "q0"})
    assert r0["target"] == "Q0" and r0["output"] == "Q0" and r0["status"] == "success"
    assert r0["trace_id"] == r0["parent_trace_id"] == r0["root_trace_id"]
    assert r0["experiment_uuid"] == result.experiment_uuid
    assert r0["scores"] == [{"name": "exact_match", "score": 1.0}]
    assert {"row_id", "trial"} <= set(r0["metadata"])
    assert r0["latency"] >= 0 and r0["start_timestamp"] <= r0["end_timestamp"]
    exp = door.store.get_experiment(result.experiment_uuid)
    assert exp["status"] == "completed" and exp["num_samples"] == 20
    pinned = {p["var1"]: p["value"] for p in exp["pinned_stats"]}
    assert pinned["exact_match"] == 1.0 and "Latency" in pinned


def test_async_function(door: Door) -> None:
    async def answer(question: str) -> str:
        await asyncio.sleep(0.001)
        return question.upper()

    result = Experiment(name="qa", data=QA, func=answer, evals=[exact_match, levenshtein], **door.kwargs()).run(
        quiet=True
    )
    assert result.scores["exact_match"].mean == 1.0
    assert result.scores["levenshtein"].mean == 1.0
    assert len(roots(door, result)) == 20


def test_every_scorer_return_type(door: Door) -> None:
    def as_float(log: Log) -> float:
        return 0.25

    def as_bool(log: Log) -> bool:
        return True

    def as_int(log: Log) -> int:
        return 3

    def as_score(log: Log) -> Score:
        return Score("named", 0.5, reason="because")

    def as_list(log: Log) -> list[Score]:
        return [Score("first", 1.0), Score("second", 0.0)]

    def as_none(log: Log) -> None:
        return None

    async def as_async(log: Log) -> float:
        await asyncio.sleep(0)
        return 0.75

    evals = [as_float, as_bool, as_int, as_score, as_list, as_none, as_async]
    result = Experiment(name="types", data=QA[:5], func=upper, evals=evals, **door.kwargs()).run(quiet=True)
    means = {k: v.mean for k, v in result.scores.items()}
    assert means == {
        "as_float": 0.25, "as_bool": 1.0, "as_int": 3.0, "named": 0.5, "first": 1.0, "second": 0.0,
        "as_async": 0.75,
    }
    assert "as_none" not in result.scores
    stored = roots(door, result)[0]["scores"]
    assert {"name": "named", "score": 0.5, "reason": "because"} in stored
    assert all(isinstance(s["score"], float) for s in stored)


def test_failing_row_is_stored_with_traceback_and_run_goes_on(door: Door) -> None:
    calls: list[str] = []

    def scorer(log: Log) -> float:
        calls.append(log.output)
        return 1.0

    def flaky(question: str) -> str:
        if question == "q3":
            raise ValueError("no answer for q3")
        return question.upper()

    result = Experiment(name="fail", data=QA, func=flaky, evals=[scorer], **door.kwargs()).run(quiet=True)
    assert result.status == "completed"
    assert result.n_total == 20 and result.n_errors == 1
    assert len(calls) == 19  # the failing row's scorers are skipped
    s = result.scores["scorer"]
    assert (s.n, s.n_errors, s.n_total) == (19, 1, 20)
    bad = [r for r in roots(door, result) if r["status"] == "error"]
    assert len(bad) == 1
    assert "ValueError: no answer for q3" in bad[0]["error"] and "Traceback" in bad[0]["error"]
    assert "1 errored" in result.summary_text()


def test_failing_scorer_is_that_scorers_error_and_others_still_run(door: Door) -> None:
    def broken(log: Log) -> float:
        raise RuntimeError("judge unavailable")

    def nan_score(log: Log) -> float:
        return math.nan if log.inputs["question"] == "q1" else 1.0

    def inf_score(log: Log) -> float:
        return math.inf

    result = Experiment(
        name="scorers", data=QA[:4], func=upper, evals=[broken, exact_match, nan_score, inf_score], **door.kwargs()
    ).run(quiet=True)
    assert result.n_errors == 0
    assert result.scores["exact_match"].n == 4
    assert (result.scores["broken"].n, result.scores["broken"].n_errors) == (0, 4)
    assert (result.scores["nan_score"].n, result.scores["nan_score"].n_errors, result.scores["nan_score"].mean) == (
        3, 1, 1.0,
    )
    assert result.scores["inf_score"].n_errors == 4
    assert "judge unavailable" in result.scorer_errors["broken"]
    stored = roots(door, result)
    assert all("broken" in r["metadata"]["scorer_errors"] for r in stored)
    assert all(math.isfinite(s["score"]) for r in stored for s in r["scores"])


def test_trials_run_every_row_k_times_with_trial_and_row_id(door: Door) -> None:
    result = Experiment(name="trials", data=QA[:5], func=upper, evals=[exact_match], n_trials=3, **door.kwargs()).run(
        quiet=True
    )
    assert result.n_total == 15
    stored = roots(door, result)
    assert len(stored) == 15
    keys = {(r["metadata"]["row_id"], r["metadata"]["trial"]) for r in stored}
    assert len(keys) == 15
    assert sorted({t for _, t in keys}) == [0, 1, 2]
    df = result.to_dataframe()
    assert len(df) == 15 and list(df["trial"][:3]) == [0, 1, 2]


def test_nested_spans_become_children_with_rolled_up_scores(door: Door) -> None:
    @trace(eval_funcs=[lambda log: 0.5], name="retrieve")
    def retrieve(q: str) -> list[str]:
        return [q, q]

    @trace
    def rerank(docs: list[str]) -> list[str]:
        return sorted(docs)

    @trace
    def generate(q: str) -> str:
        docs = rerank(retrieve(q))
        return docs[0].upper()

    def answer(question: str) -> str:
        return generate(question)

    result = Experiment(name="spans", data=QA[:3], func=answer, evals=[exact_match], **door.kwargs()).run(quiet=True)
    root = roots(door, result)[0]
    tree = door.store.get_trace_tree(root["trace_id"])
    (gen,) = tree["children_logs"]
    assert gen["trace_name"] == "generate" and gen["depth"] == 1
    assert [c["trace_name"] for c in gen["children_logs"]] == ["retrieve", "rerank"]
    ret, rr = gen["children_logs"]
    assert ret["depth"] == rr["depth"] == 2
    assert ret["parent_trace_id"] == gen["trace_id"] and ret["root_trace_id"] == root["trace_id"]
    orders = [tree["execution_order"], gen["execution_order"], ret["execution_order"], rr["execution_order"]]
    assert orders == [0, 1, 2, 3]
    assert {"name": "score", "score": 0.5} in ret["scores"]
    # the child's score populates up to the parent and the root
    assert any(s["name"] == "score" for s in gen["scores"])
    assert {s["name"] for s in tree["scores"]} == {"exact_match", "score"}
    assert result.scores["score"].mean == 0.5
    stats = door.store.experiment_stats(result.experiment_uuid)
    assert all({s["name"] for s in st["scores"]} == {"exact_match", "score"} for st in stats)


def test_async_nested_spans_across_gather(door: Door) -> None:
    @trace
    async def fetch(i: int) -> int:
        await asyncio.sleep(0.001)
        return i

    async def answer(question: str) -> str:
        got = await asyncio.gather(*(fetch(i) for i in range(3)))
        return f"{question}:{sum(got)}"

    result = Experiment(name="gather", data=QA[:2], func=answer, **door.kwargs()).run(quiet=True)
    root = roots(door, result)[0]
    tree = door.store.get_trace_tree(root["trace_id"])
    assert sorted(c["inputs"]["i"] for c in tree["children_logs"]) == [0, 1, 2]
    assert sorted(c["execution_order"] for c in tree["children_logs"]) == [1, 2, 3]


@pytest.mark.parametrize("is_async", [False, True])
def test_at_most_n_workers_rows_run_at_once(door: Door, is_async: bool) -> None:
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def enter() -> None:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])

    def leave() -> None:
        with lock:
            state["now"] -= 1

    # The first rows wait until four are in at once (each worker starts with one row, so they
    # meet whatever the machine's load; no timing), later rows do not wait; the count shows
    # that no more than 4 ever run together.
    cond = threading.Condition(lock)
    met = {"done": False}

    def meet() -> None:
        with cond:
            if state["now"] >= 4:
                met["done"] = True
                cond.notify_all()
            cond.wait_for(lambda: met["done"], timeout=60)

    def sync_fn(x: int) -> int:
        enter()
        meet()
        leave()
        return x

    async def async_fn(x: int) -> int:
        enter()
        while not met["done"] and state["now"] < 4:
            await asyncio.sleep(0.001)  # a poll, not a timing: it waits for the other workers
        met["done"] = True
        leave()
        return x

    data = [{"x": i} for i in range(60)]
    fn = async_fn if is_async else sync_fn
    result = Experiment(name="conc", data=data, func=fn, n_workers=4, **door.kwargs()).run(quiet=True)
    assert result.n_total == 60
    assert state["max"] == 4


def test_contextvars_reach_sync_functions_and_spans(door: Door) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("from-caller")
    seen: list[str] = []

    @trace
    def inner() -> str:
        return var.get()

    def fn(x: int) -> str:
        seen.append(var.get())
        return inner()

    result = Experiment(name="ctx", data=[{"x": 1}, {"x": 2}], func=fn, **door.kwargs()).run(quiet=True)
    assert seen == ["from-caller", "from-caller"]
    assert result.n_errors == 0


def test_dataset_level_evals_equal_scipy_and_see_only_this_experiment(door: Door) -> None:
    data = [{"x": i, "target": str(i % 3), "rating": (i * 7) % 5} for i in range(30)]

    def predict(x: int, rating: int) -> str:
        return str((x + (x % 4 == 0)) % 3)

    def closeness(log: Log) -> float:
        return 1.0 / (1 + abs(int(log.output) - int(log.target)))

    evals_ = [
        pearson("closeness", lambda log: float(log.inputs["rating"])),
        spearman("closeness", lambda log: float(log.inputs["rating"])),
        accuracy(),
        balanced_accuracy(),
    ]
    first = Experiment(name="dl", data=data, func=predict, evals=[closeness], dataset_level_evals=evals_,
                       **door.kwargs()).run(quiet=True)
    # a second experiment in the same process with different data must not see the first one's logs
    second = Experiment(name="dl2", data=data[:10], func=predict, evals=[closeness], dataset_level_evals=[accuracy()],
                        **door.kwargs()).run(quiet=True)
    outputs = [str((d["x"] + (d["x"] % 4 == 0)) % 3) for d in data]
    close = [1.0 / (1 + abs(int(o) - int(d["target"]))) for o, d in zip(outputs, data, strict=True)]
    ratings = [float(d["rating"]) for d in data]
    assert first.dataset_level_stats["pearson"] == pytest.approx(scipy.stats.pearsonr(close, ratings)[0])
    assert first.dataset_level_stats["spearman"] == pytest.approx(scipy.stats.spearmanr(close, ratings)[0])
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    targets = [d["target"] for d in data]
    assert first.dataset_level_stats["accuracy"] == pytest.approx(accuracy_score(targets, outputs))
    assert first.dataset_level_stats["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(targets, outputs))
    assert second.dataset_level_stats["accuracy"] == pytest.approx(accuracy_score(targets[:10], outputs[:10]))
    stored = door.store.get_experiment(first.experiment_uuid)["dataset_level_stats"]
    assert {s["name"] for s in stored} == {"pearson", "spearman", "accuracy", "balanced_accuracy"}
    assert "r=" in first.dataset_level_details["pearson"].reason


def test_dataset_level_evals_include_errored_rows(door: Door) -> None:
    seen: list[int] = []

    def count(logs: list[Log]) -> float:
        seen.append(sum(1 for log in logs if log.status == "error"))
        return float(len(logs))

    def fn(x: int) -> int:
        if x == 2:
            raise KeyError(x)
        return x

    result = Experiment(name="dle", data=[{"x": i} for i in range(5)], func=fn, dataset_level_evals=[count],
                        **door.kwargs()).run(quiet=True)
    assert result.dataset_level_stats["count"] == 5.0 and seen == [1]


def test_unknown_column_is_an_error_before_any_row_runs(door: Door) -> None:
    calls = []

    def answer(question: str, context: str | None = None) -> str:
        calls.append(question)
        return question

    exp = Experiment(name="cols", data=[{"question": "a", "contxt": "typo"}], func=answer, **door.kwargs())
    with pytest.raises(DatasetError, match=r"'contxt'.*answer"):
        exp.run(quiet=True)
    assert calls == []
    assert door.store.list_experiments() == []


@pytest.mark.parametrize("bad", ["has space", "semi;colon", "", "x" * 101])
def test_invalid_run_name_is_an_error_before_any_row_runs(door: Door, bad: str) -> None:
    exp = Experiment(name="rn", data=QA, func=upper, **door.kwargs())
    with pytest.raises(RunNameError, match="run name"):
        exp.run(bad, quiet=True)
    assert door.store.list_experiments() == []


def test_taken_run_name_is_an_error_and_missing_one_is_generated(door: Door) -> None:
    calls: list[str] = []

    def fn(question: str) -> str:
        calls.append(question)
        return question

    exp = Experiment(name="rn", data=QA[:2], func=fn, **door.kwargs())
    exp.run("taken", quiet=True)
    with pytest.raises(RunNameError, match="already used"):
        exp.run("taken", quiet=True)
    assert len(calls) == 2
    a = exp.run(quiet=True)
    b = exp.run(quiet=True)
    assert a.run_name != b.run_name and a.run_name not in ("", "taken")


def test_run_inside_a_running_loop_returns_the_same_result(door: Door) -> None:
    exp = Experiment(name="loop", data=QA[:3], func=upper, evals=[exact_match], **door.kwargs())

    async def main() -> tuple[Result, Result]:
        inside = exp.run(quiet=True)  # a loop is running in this thread, as in a notebook cell
        awaited = await exp.arun(quiet=True)
        return inside, awaited

    inside, awaited = asyncio.run(main())
    assert type(inside) is type(awaited) is Result
    assert inside.scores["exact_match"].mean == awaited.scores["exact_match"].mean == 1.0


def test_to_dataframe_columns(door: Door) -> None:
    def dict_output(question: str) -> dict[str, str]:
        return {"answer": question}

    result = Experiment(name="df", data=QA[:4], func=dict_output, evals=[exact_match], **door.kwargs()).run(
        quiet=True
    )
    df = result.to_dataframe()
    assert list(df.columns[:2]) == ["row_id", "trial"]
    assert {"question", "target", "output", "status", "error", "latency", "exact_match"} <= set(df.columns)
    assert df["output"][0] == {"answer": "q0"}  # the output as returned
    assert list(df["question"]) == ["q0", "q1", "q2", "q3"]


def test_summary_says_counts_and_where_results_are(door: Door) -> None:
    result = Experiment(name="sum", data=QA[:4], func=upper, evals=[exact_match], **door.kwargs()).run(quiet=True)
    text = result.summary_text()
    assert "exact_match" in text and "4/4" in text and result.location in text
    html = result._repr_html_()
    assert "<table" in html and "exact_match" in html


def test_data_formats(door: Door, tmp_path: Any) -> None:
    rows = [{"question": "a", "target": "A"}, {"question": "b", "target": "B"}]
    csv_path = tmp_path / "d.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    js = tmp_path / "d.json"
    js.write_text(json.dumps(rows))
    for data in (rows, pd.DataFrame(rows), csv_path, str(jsonl), js, (r for r in rows)):
        result = Experiment(name="fmt", data=data, func=upper, evals=[exact_match], **door.kwargs()).run(quiet=True)
        assert result.scores["exact_match"].mean == 1.0 and result.n_total == 2, data


def test_named_dataset_from_the_backend(door: Door) -> None:
    door.store.create_dataset("qa-set", ["question"], [{"inputs": {"question": "z"}, "target": "Z"}])
    result = Experiment(name="named", data="qa-set", func=upper, evals=[exact_match], **door.kwargs()).run(
        quiet=True
    )
    assert result.scores["exact_match"].mean == 1.0


@pytest.mark.parametrize(("row_seconds", "bound"), [(0.005, 4 + 2), (0.0, 4 * 32 + 2)])
def test_rows_are_pulled_lazily(row_seconds: float, bound: int) -> None:
    # slow rows are taken one at a time; fast ones in small batches per worker; never the whole file
    pulled = 0
    done = 0
    max_ahead = 0
    lock = threading.Lock()

    def gen() -> Any:
        nonlocal pulled
        for i in range(400):
            pulled += 1
            yield {"x": i}

    def fn(x: int) -> int:
        nonlocal done, max_ahead
        with lock:
            max_ahead = max(max_ahead, pulled - done)
        time.sleep(row_seconds)
        with lock:
            done += 1
        return x

    Experiment(name="lazy", data=gen(), func=fn, n_workers=4, db="lazy.db").run(quiet=True)
    assert pulled == 400
    assert max_ahead <= bound


def test_bad_experiment_arguments_name_the_problem() -> None:
    with pytest.raises(FunctionError, match="func must be callable"):
        Experiment(name="x", data=[], func="not a function")  # type: ignore[arg-type]
    with pytest.raises(FunctionError, match="one argument"):
        Experiment(name="x", data=[], func=upper, evals=[lambda a, b: 1])
    with pytest.raises(FunctionError, match="balanced_accuracy"):
        Experiment(name="x", data=[], func=upper, dataset_level_evals=[1])  # type: ignore[list-item]
    with pytest.raises(Exception, match="n_trials"):
        Experiment(name="x", data=[], func=upper, n_trials=0)
    with pytest.raises(DatasetError, match="no rows"):
        Experiment(name="x", data=[], func=upper, db="e.db").run(quiet=True)
    with pytest.raises(DatasetError, match="does not exist"):
        Experiment(name="x", data="missing.csv", func=upper, db="e.db").run(quiet=True)


def test_default_store_is_under_dot_runner(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNNER_DB", raising=False)
    result = Experiment(name="def", data=QA[:2], func=upper).run(quiet=True)
    assert (tmp_path / ".runner" / "runner.db").exists()
    assert result.location.endswith("runner.db")
    monkeypatch.setenv("RUNNER_DB", str(tmp_path / "other.db"))
    Experiment(name="def", data=QA[:2], func=upper).run(quiet=True)
    assert (tmp_path / "other.db").exists()
