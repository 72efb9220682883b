"""Scorer failures never vanish (issue 15): child-span scorers, scorers whose scores are named
otherwise, factories passed instead of scorers; in the summary, ``show``, the web UI and exports.

Runs go into a real SQLite file (the embedded store in the test's directory); ``show`` and
``--output`` run through the real CLI in a subprocess; the UI is a real server on loopback.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from html import unescape
from pathlib import Path

import httpx
import pytest

from evals import llm_judge, regex_match
from evals.dataset import accuracy, balanced_accuracy, pearson, spearman
from runner import Experiment, Score, trace
from runner.errors import FunctionError
from runner.results.result import Result
from tests.servers import start_server

CONFIG = '''
from runner import Experiment, Score, trace

def flaky(log):
    """A scorer named flaky that gives a score named confidence; fails on rows 0 and 7."""
    if int(log.inputs["i"]) % 7 == 0:
        raise RuntimeError("judge unavailable")
    return Score("confidence", 0.5)

def check(log):
    """A child-span scorer that fails on odd outputs."""
    if int(log.output) % 2:
        raise ValueError("odd output")
    return 1.0

@trace(eval_funcs=[check])
def step(i):
    return i

def answer(i):
    return step(i)

failing = Experiment(name="failing", data=[{"i": i} for i in range(10)], func=answer, evals=[flaky])
'''


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    (tmp_path / "cfg.py").write_text(textwrap.dedent(CONFIG), encoding="utf-8")
    return tmp_path


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def run_experiment(cwd: Path) -> Result:
    namespace: dict[str, object] = {}
    exec(compile((cwd / "cfg.py").read_text(), "cfg.py", "exec"), namespace)
    exp = namespace["failing"]
    assert isinstance(exp, Experiment)
    return exp.run(run_name="r1", quiet=True)


def test_child_span_scorer_errors_are_counted_per_score(cfg: Path) -> None:
    result = run_experiment(cfg)
    check = result.scores["check"]
    assert (check.n, check.n_errors, check.n_total) == (5, 5, 10)
    assert result.scorer_errors["check"] == "ValueError: odd output"


def test_errors_of_a_scorer_belong_to_the_scores_it_returns(cfg: Path) -> None:
    result = run_experiment(cfg)
    assert "flaky" not in result.scores  # no phantom score
    confidence = result.scores["confidence"]
    assert (confidence.n, confidence.n_errors, confidence.n_total) == (8, 2, 10)
    text = result.summary_text()
    assert "scorer flaky failed on some rows (counted as errors of confidence, the scores it returns)" in text
    assert "flaky_confidence" not in text and "\n  flaky " not in text


def test_show_recomputes_the_same_errors_and_names_the_failing_scorers(cfg: Path) -> None:
    live = run_experiment(cfg)
    proc = cli(cfg, "show", "r1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert live.scores["confidence"].format() in out and live.scores["check"].format() in out
    assert re.search(r"^\s+flaky\s", out, flags=re.M) is None  # no phantom row in show either
    assert "scorer flaky failed on some rows (counted as errors of confidence" in out
    assert "scorer check failed on some rows, e.g.: ValueError: odd output" in out


def test_scorer_errors_are_exported(cfg: Path) -> None:
    for suffix in ("csv", "jsonl"):
        proc = cli(cfg, "cfg.py", "--quiet", "--output", f"rows.{suffix}")
        assert proc.returncode == 0, proc.stderr
    import pandas as pd

    csv = pd.read_csv(cfg / "rows.csv")
    assert "scorer_errors" in csv.columns
    by_i = dict(zip(csv["i"], csv["scorer_errors"], strict=True))
    assert "judge unavailable" in by_i[0] and "odd output" in by_i[7] and pd.isna(by_i[2])
    lines = [json.loads(x) for x in (cfg / "rows.jsonl").read_text().splitlines()]
    row7 = next(x for x in lines if x["i"] == 7)
    assert row7["scorer_errors"] == {"flaky": "RuntimeError: judge unavailable", "check": "ValueError: odd output"}
    row2 = next(x for x in lines if x["i"] == 2)
    assert row2["scorer_errors"] is None


def _cells(html: str) -> list[list[str]]:
    body = html.split('id="rows"', 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r'<tr class="row[^"]*" data-trace="[^"]+">(.*?)</tr>', body, flags=re.S)
    return [
        [" ".join(unescape(re.sub(r"<[^>]+>", " ", c)).split()) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
        for r in rows
    ]


def test_the_ui_shows_scorer_errors_in_their_cell_and_errors_only_finds_them(cfg: Path) -> None:
    result = run_experiment(cfg)
    with start_server(cfg / ".runner" / "runner.db") as server, httpx.Client(base_url=server.url, timeout=30) as web:
        page = web.get(f"/runs/{result.experiment_uuid}")
        assert page.status_code == 200
        header = page.text.split('id="rows"', 1)[1].split("</thead>", 1)[0]
        assert "flaky" not in header  # the errors are in the confidence column
        cells = _cells(page.text)
        assert len(cells) == 10
        joined = [" | ".join(c) for c in cells]
        assert sum("error: flaky: RuntimeError: judge unavailable" in j for j in joined) == 2
        assert sum("error: ValueError: odd output" in j for j in joined) == 5
        only = _cells(web.get(f"/runs/{result.experiment_uuid}", params={"errors": "1"}).text)
        # rows 1, 3, 5, 7, 9 (check failed) and 0 (flaky failed); 7 has both: 6 rows, none errored as a whole
        assert len(only) == 6


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"evals": [regex_match]}, 'call it, e.g. regex_match(r"\\d+", name="has_number")'),
        ({"evals": [llm_judge]}, "call it, e.g. llm_judge("),
        ({"dataset_level_evals": [balanced_accuracy]}, "call it, e.g. balanced_accuracy()"),
        ({"dataset_level_evals": [accuracy]}, "call it, e.g. accuracy()"),
        ({"dataset_level_evals": [pearson]}, 'call it, e.g. pearson("judge", "human_rating")'),
        ({"dataset_level_evals": [spearman]}, "call it, e.g. spearman("),
    ],
)
def test_a_factory_passed_as_a_scorer_is_caught_before_any_row(kwargs: dict[str, list[object]], fix: str) -> None:
    with pytest.raises(FunctionError) as info:
        Experiment(name="x", data=[{"a": 1}], func=lambda a: a, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "builds a scorer, it is not one" in message and fix in message
    assert len(message) < 300  # one clear line, not a dump of Log(...) text
    with pytest.raises(FunctionError, match="builds a scorer"):
        trace(eval_funcs=[regex_match])(lambda: 1)  # type: ignore[list-item]
    # the scorers themselves are accepted
    Experiment(name="x", data=[{"a": 1}], func=lambda a: a, evals=[regex_match("a")])
    Experiment(name="x", data=[{"a": 1}], func=lambda a: a, dataset_level_evals=[balanced_accuracy()])


def test_a_factory_in_a_config_file_exits_2_before_any_row(tmp_path: Path) -> None:
    (tmp_path / "cfg.py").write_text(
        "from runner import Experiment\nfrom evals import regex_match\n"
        "exp = Experiment(name='x', data=[{'a': 1}], func=lambda a: a, evals=[regex_match])\n",
        encoding="utf-8",
    )
    proc = cli(tmp_path, "cfg.py")
    assert proc.returncode == 2, proc.stderr
    assert "regex_match builds a scorer, it is not one: call it" in proc.stderr
    assert len(proc.stderr) < 2000 and "Log(" not in proc.stderr
    assert not (tmp_path / ".runner").exists()


def test_score_named_like_its_scorer_is_unchanged() -> None:
    def em(log: object) -> Score:
        raise RuntimeError("x")

    exp = Experiment(name="same", data=[{"a": 1}, {"a": 2}], func=lambda a: a, evals=[em])
    result = exp.run(quiet=True)
    assert result.scores["em"].n_errors == 2 and result.scorer_scores == {}


def test_a_scorer_that_failed_on_every_row_gets_its_own_column_in_the_ui(tmp_path: Path) -> None:
    def typo(log: object) -> float:
        raise AttributeError("'Log' object has no attribute 'outptu'")

    exp = Experiment(name="typo", data=[{"a": i} for i in range(4)], func=lambda a: a, evals=[typo])
    result = exp.run(quiet=True)
    assert (result.scores["typo"].n, result.scores["typo"].n_errors) == (0, 4)
    with (
        start_server(tmp_path / ".runner" / "runner.db") as server,
        httpx.Client(base_url=server.url, timeout=30) as web,
    ):
        page = web.get(f"/runs/{result.experiment_uuid}")
        assert page.status_code == 200
        cells = _cells(page.text)
        assert len(cells) == 4 and all(any("error: AttributeError" in c for c in row) for row in cells)
        assert len(_cells(web.get(f"/runs/{result.experiment_uuid}", params={"errors": "1"}).text)) == 4
