"""The pytest plugin (``pytest11`` entry point), run by ``pytester`` in a subprocess, through both
doors (the subprocess writes to the door's SQLite file, or to its server over HTTP)."""

from __future__ import annotations

import pytest

from tests.doors import Door

TESTS = """
import pytest
from evals import exact_match
from runner import Experiment

def answer(q):
    if q == "boom":
        raise ValueError("boom")
    return "yes" if q not in ("c", "d") else "no"

DATA = [{"q": q, "target": "yes"} for q in "abcde"]

good = Experiment(name="qa_good", data=DATA[:2], func=answer, evals=[exact_match], fail_under={"exact_match": 0.5})
bad = Experiment(name="qa_bad", data=DATA, func=answer, evals=[exact_match], fail_under={"exact_match": 0.9})

def test_calls_run():
    result = Experiment(name="in_test", data=DATA + [{"q": "boom"}], func=answer, evals=[exact_match],
                        max_error_rate=0.0).run(quiet=True)
    assert result.n_total == 6  # passes by itself; the gate fails it

@pytest.mark.runner_ignore_gates
def test_checks_gates_itself():
    result = Experiment(name="checked", data=DATA, func=answer, evals=[exact_match],
                        fail_under={"exact_match": 0.9}).run(quiet=True)
    assert not result.gates.passed
"""


@pytest.fixture
def door_env(door: Door, monkeypatch: pytest.MonkeyPatch) -> Door:
    """The subprocess's results go through ``door``."""
    if door.base_url:
        monkeypatch.setenv("PAREA_BASE_URL", door.base_url)
    else:
        monkeypatch.setenv("RUNNER_DB", str(door.db))
    return door


def test_experiments_and_runs_in_tests_fail_on_their_gates(pytester: pytest.Pytester, door_env: Door) -> None:
    pytester.makepyfile(test_evals=TESTS)
    outcome = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=2, failed=2)
    out = outcome.stdout.str()
    # which gate failed, the score with its interval, the worst rows
    assert "experiment 'qa_bad' (run " in out
    assert "FAIL  exact_match mean >= 0.9: gate failed: exact_match mean 0.6 < 0.9" in out
    assert "exact_match: 0.600 [" in out and "n=5/5" in out
    assert "worst rows:" in out and "row 2: exact_match=0 inputs={'q': 'c'}" in out
    assert "FAIL  error rate <= 0: gate failed: error rate 0.167 (1/6 row-trials) > 0" in out
    assert "row 5: error ValueError: boom" in out
    # the summary table, and the results stored like any run
    assert "runner experiments" in out
    assert "bad: qa_bad run " in out and "1 of 1 gates failed" in out
    assert "good: qa_good run " in out and "gates passed (1)" in out
    names = sorted(e["name"] for e in door_env.store.list_experiments())
    assert names == ["checked", "in_test", "qa_bad", "qa_good"]


def test_k_selects_experiments_by_name(pytester: pytest.Pytester, door_env: Door) -> None:
    pytester.makepyfile(test_evals=TESTS)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "qa_good").assert_outcomes(passed=1, deselected=3)
    assert [e["name"] for e in door_env.store.list_experiments()] == ["qa_good"]


def test_runner_baseline_compares_with_a_stored_run(pytester: pytest.Pytester, door_env: Door) -> None:
    pytester.makepyfile(test_evals=TESTS)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "bad").assert_outcomes(failed=1, deselected=3)
    (first,) = door_env.store.list_experiments()
    again = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "bad", "--runner-baseline",
                                          first["run_name"])
    again.assert_outcomes(failed=1, deselected=3)
    out = again.stdout.str()
    assert f"against the baseline {first['run_name']}:" in out
    assert f"(B) vs {first['run_name']} (A)" in out and "exact_match" in out
    assert len(door_env.store.list_experiments()) == 2
    missing = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "good", "--runner-baseline", "nope")
    missing.assert_outcomes(failed=1, deselected=3)
    assert "no run or experiment called 'nope'" in missing.stdout.str()
