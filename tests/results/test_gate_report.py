"""``Experiment(fail_under=..., max_error_rate=..., strict=...)`` and ``Result.gates``; and
``run --junit-xml FILE``. The gates are :mod:`runner.results.gates`' checks, one gate at a time."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from evals import exact_match
from runner import ConfigError, Experiment
from tests.doors import Door

DATA = [{"q": "a", "target": "yes"}, {"q": "b", "target": "yes"}, {"q": "c", "target": "yes"}, {"q": "boom"}]


def answer(q: str) -> str:
    if q == "boom":
        raise ValueError("boom")
    return "yes" if q != "c" else "no"


@pytest.mark.runner_ignore_gates  # these tests check result.gates themselves
def test_result_gates_say_which_passed(door: Door) -> None:
    exp = Experiment(name="gated", data=DATA, func=answer, evals=[exact_match],
                     fail_under={"exact_match": 0.6}, max_error_rate=0.1, **door.kwargs())
    result = exp.run(quiet=True)
    assert [(o.gate, o.passed) for o in result.gates] == [("exact_match mean >= 0.6", True),
                                                         ("error rate <= 0.1", False)]
    assert not result.gates.passed and not result.gates
    assert result.gates.failed[0].detail == "gate failed: error rate 0.25 (1/4 row-trials) > 0.1"
    assert "FAIL  error rate <= 0.1: gate failed: error rate 0.25" in str(result.gates)
    # run() arguments override the experiment's; strict needs the interval's lower bound to clear the bar
    strict = exp.run(quiet=True, fail_under={"exact_match": 0.3}, strict=True, max_error_rate=None)
    assert [(o.gate, o.passed) for o in strict.gates] == [("exact_match 95% CI lower bound >= 0.3", False)]
    assert "lower bound" in strict.gates.failed[0].detail
    plain = exp.run(quiet=True, fail_under={"exact_match": 0.9}, max_error_rate=None)
    assert [(o.gate, o.passed) for o in plain.gates] == [("exact_match mean >= 0.9", False)]
    assert plain.gates.failed[0].detail == "gate failed: exact_match mean 0.667 < 0.9"
    assert len(Experiment(name="none", data=DATA[:1], func=answer, **door.kwargs()).run(quiet=True).gates) == 0


@pytest.mark.runner_ignore_gates
def test_bad_gates_are_config_errors_and_unknown_scores_fail() -> None:
    with pytest.raises(ConfigError, match="max_error_rate must be a fraction"):
        Experiment(name="x", data=DATA, func=answer, max_error_rate=2)
    with pytest.raises(ConfigError, match="strict=True changes how fail_under is checked"):
        Experiment(name="x", data=DATA, func=answer, strict=True)
    with pytest.raises(ConfigError, match="fail_under must be a dict"):
        Experiment(name="x", data=DATA, func=answer, fail_under=0.8)  # type: ignore[arg-type]
    result = Experiment(name="x", data=DATA, func=answer, evals=[exact_match],
                        fail_under={"accuracy": 0.5}).run(quiet=True)
    (outcome,) = result.gates
    assert not outcome.passed and "unknown score 'accuracy'" in outcome.detail and "'exact_match'" in outcome.detail


CONFIG = """
from evals import exact_match
from runner import Experiment

def answer(q):
    return "yes" if q != "c" else "no"

qa = Experiment(name="qa", data=[{"q": q, "target": "yes"} for q in "abc"], func=answer, evals=[exact_match],
                max_error_rate=0.0)
"""


def test_run_junit_xml(door: Door, tmp_path: Path) -> None:
    config = tmp_path / "exp.py"
    config.write_text(CONFIG)
    out = tmp_path / "reports" / "junit.xml"
    where = ["--base-url", door.base_url] if door.base_url else ["--db", str(door.db)]
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(config), "--quiet", "--fail-under", "exact_match=0.9",
         "--junit-xml", str(out), *where],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr  # the --fail-under gate failed
    assert "gate failed: exact_match mean 0.667 < 0.9" in done.stderr
    suites = ET.parse(out).getroot()
    assert (suites.tag, suites.get("tests"), suites.get("failures")) == ("testsuites", "3", "1")
    (suite,) = suites
    assert suite.get("name") == "qa"
    cases = {c.get("name"): c.find("failure") for c in suite.iter("testcase")}
    assert list(cases) == ["run", "error rate <= 0", "exact_match mean >= 0.9"]
    assert cases["run"] is None and cases["error rate <= 0"] is None
    failure = cases["exact_match mean >= 0.9"]
    assert failure is not None and failure.get("message") == "gate failed: exact_match mean 0.667 < 0.9"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    (stored,) = door.store.list_experiments()
    assert props["experiment_uuid"] == stored["uuid"] and props["n_total"] == "3"
