"""The scorer pool of async runs (``runner.pipeline.scorer_pool``) is kept between runs of a process."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from runner import Experiment
from runner.pipeline.scorer_pool import give_back, take
from runner.scoring import Log


async def answer(x: str) -> str:
    await asyncio.sleep(0)
    return x


def run(tmp_path: Path, name: str, n_workers: int, seen: list[threading.Thread], func: Any = answer) -> Any:
    def plain(log: Log) -> float:  # a sync scorer not marked inline: it runs on the pool
        seen.append(threading.current_thread())
        return 1.0

    data = [{"x": str(i), "target": str(i)} for i in range(40)]
    return Experiment(name=name, data=data, func=func, evals=[plain], n_workers=n_workers,
                      db=tmp_path / "r.db").run(quiet=True)


def no_idle_pool() -> None:
    """Drop the pool an earlier test's run may have left idle (the pool is process-wide)."""
    give_back(take(1), reuse=False)


def test_a_second_run_scores_on_the_threads_of_the_first(tmp_path: Path) -> None:
    no_idle_pool()
    first: list[threading.Thread] = []
    second: list[threading.Thread] = []
    assert run(tmp_path, "one", 4, first).scores["plain"].n == 40
    assert run(tmp_path, "two", 4, second).scores["plain"].n == 40  # as many workers: the same pool
    assert threading.main_thread() not in first
    # an idle thread takes a task before the pool starts another one: a kept pool shows up as
    # threads of the first run scoring the second (a new pool has new threads only)
    assert set(second) & set(first)


def test_a_bigger_run_gets_a_bigger_pool_and_a_broken_run_drops_its_own(tmp_path: Path) -> None:
    no_idle_pool()
    small: list[threading.Thread] = []
    big: list[threading.Thread] = []
    again: list[threading.Thread] = []
    run(tmp_path, "small", 2, small)
    run(tmp_path, "big", 8, big)  # the 2 idle threads are not enough for 8 workers: a new pool
    assert not set(big) & set(small)
    run(tmp_path, "again", 8, again)  # the big pool was kept, the small one dropped
    assert set(again) & set(big)

    pool, other = take(8), take(8)
    assert other is not pool  # two runs at the same moment never share a pool
    give_back(pool, reuse=False)
    give_back(other, reuse=False)
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(int)
