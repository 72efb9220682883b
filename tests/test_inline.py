"""Sync scorers marked cheap (``runner.inline``) run on the event loop of an async run, without a
hop to a worker thread; every other sync scorer still runs on the scorer pool."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from evals import contains, exact_match, json_valid, levenshtein, regex_match
from runner import Experiment
from runner.inline import inline, runs_inline
from runner.scoring import Log


class Threads:
    """Which threads the function and the scorers ran on."""

    def __init__(self) -> None:
        self.func: set[int] = set()
        self.scorers: dict[str, set[int]] = {}

    async def answer(self, x: str) -> str:
        self.func.add(threading.get_ident())
        await asyncio.sleep(0)
        return x

    def scorer(self, name: str, *, cheap: bool) -> Any:
        def score(log: Log) -> float:
            self.scorers.setdefault(name, set()).add(threading.get_ident())
            return 1.0 if log.output == log.target else 0.0

        score.__name__ = name
        return inline(score) if cheap else score


def run(tmp_path: Path, threads: Threads, scorers: list[Any], **kw: Any) -> Any:
    data = [{"x": str(i), "target": str(i)} for i in range(30)]
    return Experiment(name="inline", data=data, func=threads.answer, evals=scorers, n_workers=6,
                      db=tmp_path / "r.db", **kw).run(quiet=True)


def test_inline_scorers_run_on_the_loop_of_an_async_run(tmp_path: Path) -> None:
    t = Threads()
    result = run(tmp_path, t, [t.scorer("a", cheap=True), t.scorer("b", cheap=True)])
    assert result.n_errors == 0 and result.scores["a"].mean == 1.0 and result.scores["b"].n == 30
    assert len(t.func) == 1  # the run's event loop thread
    assert t.scorers == {"a": t.func, "b": t.func}


def test_one_unmarked_scorer_sends_the_sync_scorers_to_the_pool(tmp_path: Path) -> None:
    t = Threads()
    result = run(tmp_path, t, [t.scorer("cheap", cheap=True), t.scorer("plain", cheap=False)])
    assert result.n_errors == 0 and result.scores["plain"].mean == 1.0
    assert not (t.scorers["plain"] | t.scorers["cheap"]) & t.func  # off the loop, both of them


def test_inline_scorers_skip_the_timeout_thread(tmp_path: Path) -> None:
    t = Threads()
    result = run(tmp_path, t, [t.scorer("a", cheap=True)], timeout=30)
    assert result.scores["a"].mean == 1.0 and t.scorers["a"] == t.func


def test_a_failing_inline_scorer_is_that_rows_scorer_error(tmp_path: Path) -> None:
    @inline
    def broken(log: Log) -> float:
        raise ValueError("no score today")

    t = Threads()
    result = run(tmp_path, t, [broken, t.scorer("ok", cheap=True)])
    assert result.n_errors == 0 and result.scores["ok"].n == 30
    assert "no score today" in result.scorer_errors["broken"]


def test_the_ready_made_cheap_scorers_are_marked_and_the_unbounded_ones_are_not() -> None:
    assert all(runs_inline(s) for s in (exact_match, contains, json_valid))
    # edit distance grows with the product of the lengths; a user's pattern can backtrack for minutes
    assert not runs_inline(levenshtein) and not runs_inline(regex_match(r"\d+"))
    assert not runs_inline(lambda log: 1.0)
