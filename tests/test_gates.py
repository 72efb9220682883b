"""Gates for CI: each gate's exit code through the real CLI (a subprocess), and Gates in code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runner.errors import ConfigError
from runner.gates import Gates, parse_assignment
from runner.result import Result
from runner.stats import summarize_score

# 40 rows; WRONG rows (from the end) answer wrongly, BOOM rows (from the start) raise.
CONFIG = """
import os
from runner import Experiment
from evals import exact_match

WRONG = int(os.environ.get("WRONG", "0"))
BOOM = int(os.environ.get("BOOM", "0"))

def answer(i):
    if i < BOOM:
        raise ValueError("boom")
    return "no" if i >= 40 - WRONG else "yes"

gate = Experiment(name="gate", data=[{"i": i, "target": "yes"} for i in range(40)], func=answer, evals=[exact_match])
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    (tmp_path / "cfg.py").write_text(textwrap.dedent(CONFIG), encoding="utf-8")
    return tmp_path


def run(cwd: Path, *args: str, wrong: int = 0, boom: int = 0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", "cfg.py", "--quiet", *args],
        cwd=cwd,
        env={**os.environ, "WRONG": str(wrong), "BOOM": str(boom)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def gate_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("gate")]


# -- through the CLI ----------------------------------------------------------------------------------
def test_fail_under(cfg: Path) -> None:
    passed = run(cfg, "--fail-under", "exact_match=0.7", wrong=10)  # mean 0.75
    assert passed.returncode == 0, passed.stderr
    assert gate_lines(passed) == ["gates passed (1 checked)"]
    failed = run(cfg, "--fail-under", "exact_match=0.8", wrong=10)
    assert failed.returncode == 1
    assert gate_lines(failed) == ["gate failed: exact_match mean 0.75 < 0.8"]
    assert "gate · run" in failed.stdout  # the summary is still printed


def test_strict_fails_only_when_the_whole_interval_is_below(cfg: Path) -> None:
    # 26/40 = 0.65: below 0.7, but the Wilson interval [0.50, 0.78] reaches above it
    lenient = run(cfg, "--fail-under", "exact_match=0.7", "--strict", wrong=14)
    assert lenient.returncode == 0, lenient.stderr
    plain = run(cfg, "--fail-under", "exact_match=0.7", wrong=14)
    assert plain.returncode == 1 and gate_lines(plain) == ["gate failed: exact_match mean 0.65 < 0.7"]
    # 10/40 = 0.25: the interval [0.14, 0.40] is below 0.7 as a whole
    strict = run(cfg, "--fail-under", "exact_match=0.7", "--strict", wrong=30)
    assert strict.returncode == 1
    (line,) = gate_lines(strict)
    low, high = summarize_score("em", [1] * 10 + [0] * 30, None, 0, 40).ci_high, 0.7
    assert line == f"gate failed: exact_match 95% CI upper bound {low:.3g} < {high:g} (mean 0.25, n=40/40)"


def test_max_regression_against_a_baseline(cfg: Path) -> None:
    assert run(cfg, "--run-name", "base").returncode == 0
    # 14 rows went wrong: a drop of 0.35, McNemar p = 2 / 2**14
    big = run(cfg, "--baseline", "base", "--max-regression", "exact_match=0.1", wrong=14)
    assert big.returncode == 1
    assert gate_lines(big) == ["gate failed: exact_match dropped 0.35 (1 → 0.65) vs base, more than 0.1, p=0.000122"]
    assert "(B) vs base (A)" in big.stdout  # the comparison was printed after the run
    # the same drop within a tolerance of 0.5 passes
    tolerated = run(cfg, "--baseline", "base", "--max-regression", "exact_match=0.5", wrong=14)
    assert tolerated.returncode == 0, tolerated.stderr
    # 2 rows went wrong: a drop of 0.05 > 0.01, but p = 0.5: not evidence of a regression
    noise = run(cfg, "--baseline", "base", "--max-regression", "exact_match=0.01", "--markdown", wrong=2)
    assert noise.returncode == 0, noise.stderr
    assert "\n### " in noise.stdout and "| exact_match | 1.00 | 0.950 | -0.0500 |" in noise.stdout


def test_max_error_rate(cfg: Path) -> None:
    ok = run(cfg, "--max-error-rate", "0.1", boom=4)  # 4/40 = 0.1: not above
    assert ok.returncode == 0, ok.stderr
    failed = run(cfg, "--max-error-rate", "0.05", "--fail-under", "exact_match=0.99", boom=4)
    assert failed.returncode == 1
    # the 36 scored rows are all right: only the error rate fails (a mean never hides errors)
    assert gate_lines(failed) == ["gate failed: error rate 0.1 (4/40 row-trials) > 0.05"]


def test_gates_in_the_json_summary(cfg: Path) -> None:
    assert run(cfg, "--run-name", "base").returncode == 0
    proc = run(
        cfg, "--json", "--baseline", "base", "--fail-under", "exact_match=0.9", "--max-error-rate", "0.5", wrong=8
    )
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["gates"] == {"passed": False, "failed": ["gate failed: exact_match mean 0.8 < 0.9"]}
    comparison = data["experiments"][0]["comparison"]
    assert comparison["scores"][0]["losses"] == 8 and comparison["a"] == "base"
    assert "(B) vs base (A)" in proc.stderr  # human output, comparison included, on stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fail-under", "exact_match"], "argument --fail-under: 'exact_match': expected NAME=VALUE"),
        (["--fail-under", "exact_match=high"], "argument --fail-under: 'exact_match=high': 'high' is not a number"),
        (["--fail-under", "=0.5"], "expected NAME=VALUE"),
        (["--fail-under", "em=0.5", "--fail-under", "em=0.6"], "error: --fail-under em is given twice"),
        (["--max-error-rate", "5%"], "argument --max-error-rate: '5%' is not a number"),
        (["--max-error-rate", "1.5"], "'1.5' must be a fraction between 0 and 1"),
        (["--max-regression", "exact_match=0.1"], "error: --max-regression compares with a baseline run"),
        (["--max-regression", "exact_match=-0.1", "--baseline", "b"], "DELTA must be >= 0"),
        (["--strict"], "error: --strict changes how --fail-under is checked"),
        (["--markdown"], "error: --markdown formats the comparison with a baseline run"),
        (["--baseline", "nope"], "error: --baseline nope: there is no store at"),
    ],
)
def test_bad_gates_exit_2_before_running(cfg: Path, args: list[str], message: str) -> None:
    proc = run(cfg, *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    assert not (cfg / ".runner").exists() or args[0] == "--baseline"  # nothing ran


def test_unknown_score_names_exit_2(cfg: Path) -> None:
    proc = run(cfg, "--fail-under", "exact_mtach=0.5")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (  # refused before any row ran (issue 21)
        "error: gate on unknown score 'exact_mtach' (--fail-under): no scorer gives it "
        "(did you mean 'exact_match'? the scores are: exact_match); nothing has run yet"
    )
    assert run(cfg, "--run-name", "base").returncode == 0
    unknown_baseline = run(cfg, "--baseline", "main-7")
    assert (
        unknown_baseline.returncode == 2 and "error: --baseline main-7: no run or experiment" in unknown_baseline.stderr
    )


def test_a_score_with_no_scored_rows_fails_its_gate_instead_of_being_unknown(cfg: Path) -> None:
    proc = run(cfg, "--fail-under", "exact_match=0.5", boom=40)
    assert proc.returncode == 1
    assert gate_lines(proc) == ["gate failed: exact_match has no scored rows (0/40)"]


# -- in code ------------------------------------------------------------------------------------------
def result(values: list[float], n_errors: int = 0, **dataset_level: float) -> Result:
    n_total = len(values) + n_errors
    return Result(
        name="exp",
        experiment_uuid="u",
        run_name="r",
        project_name="p",
        status="completed",
        scores={"em": summarize_score("em", values, None, n_errors, n_total)},
        dataset_level_stats=dict(dataset_level),
        stats={},
        n_total=n_total,
        n_errors=n_errors,
        location="memory",
    )


def test_gates_in_code() -> None:
    r = result([1, 1, 0, 1], n_errors=1, pearson=0.4)
    assert Gates(fail_under={"em": 0.75}).check(r) == []
    assert Gates(fail_under={"em": 0.8}).check(r) == ["gate failed: em mean 0.75 < 0.8"]
    assert Gates(fail_under={"pearson": 0.5}).check(r) == ["gate failed: pearson mean 0.4 < 0.5"]
    assert Gates(max_error_rate=0.1).check(r) == ["gate failed: error rate 0.2 (1/5 row-trials) > 0.1"]
    assert not Gates() and Gates(max_error_rate=0.0)
    with pytest.raises(ConfigError, match="unknown score 'nope'"):
        Gates(fail_under={"nope": 1}).check(r)
    with pytest.raises(ConfigError, match="give --baseline"):
        Gates(max_regression={"em": 0.1}).check(r)
    with pytest.raises(ConfigError, match="a dataset-level stat has no paired test"):
        Gates(max_regression={"pearson": 0.1}).check(r, comparison=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="between 0 and 1"):
        Gates(max_error_rate=2)


def test_parse_assignment() -> None:
    assert parse_assignment("a=b=0.5") == ("a=b", 0.5)  # the last = splits: names may hold one
    assert parse_assignment(" em = 1 ") == ("em", 1.0)
    for bad in ("em", "=1", "em=", "em=nan", "em=inf"):
        with pytest.raises(ValueError):
            parse_assignment(bad)


def test_with_several_experiments_a_gate_applies_to_those_that_have_the_score(tmp_path: Path) -> None:
    (tmp_path / "cfg.py").write_text(
        textwrap.dedent(CONFIG)
        + "\nplain = Experiment(name='plain', data=[{'i': 1}], func=answer)\nexperiments = [gate, plain]\n",
        encoding="utf-8",
    )
    proc = run(tmp_path, "--fail-under", "exact_match=0.9", wrong=8)
    assert proc.returncode == 1
    assert gate_lines(proc) == ["gate failed: exact_match mean 0.8 < 0.9 (gate)"]
    unknown = run(tmp_path, "--fail-under", "nothing=0.9")
    assert unknown.returncode == 2
    assert "error: gate on unknown score 'nothing' (--fail-under): no scorer gives it" in unknown.stderr
