"""The engine on its own: deterministic root ids, the collecting task, the watchdog."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from runner.pipeline.dataset import Row
from runner.pipeline.engine import Engine, RowOutcome


class Collect:
    def __init__(self) -> None:
        self.outcomes: list[RowOutcome] = []

    async def add(self, outcome: RowOutcome) -> None:
        self.outcomes.append(outcome)

    def add_threadsafe(self, outcomes: list[RowOutcome], loop: asyncio.AbstractEventLoop) -> None:
        self.outcomes.extend(outcomes)

    async def drain(self) -> None:
        return None


def engine(func: Any, collector: Collect, **kw: Any) -> Engine:
    return Engine(
        func=func, func_name="f", make_kwargs=lambda d: d, scorers=[], n_workers=3, experiment_uuid="exp",
        project_name="p", collector=collector, **kw,
    )


def test_root_trace_ids_are_deterministic_uuid_shaped_and_distinct() -> None:
    e = engine(lambda x: x, Collect())
    a = e.root_trace_id("row-1", 0)
    assert a == e.root_trace_id("row-1", 0)
    assert len({a, e.root_trace_id("row-1", 1), e.root_trace_id("row-2", 0)}) == 3
    u = uuid.UUID(a)
    assert u.version == 5 and u.variant == uuid.RFC_4122


def test_every_row_is_collected_once_sync_and_async() -> None:
    async def af(x: int) -> int:
        await asyncio.sleep(0)
        return x

    for func in (lambda x: x, af):
        c = Collect()
        rows = iter([(Row(str(i), i, {"x": i}), 0) for i in range(50)])
        asyncio.run(engine(func, c).run(rows))
        assert sorted(o.log.output for o in c.outcomes) == list(range(50))
        assert all(o.wire[0]["trace_id"] == o.wire[0]["root_trace_id"] for o in c.outcomes)


def test_watchdog_reports_a_stall_once() -> None:
    reports: list[tuple[float, list[tuple[str, int, float]]]] = []

    async def slow(x: int) -> int:
        await asyncio.sleep(0.5)
        return x

    async def main() -> None:
        e = engine(slow, Collect())
        watch = asyncio.create_task(e.watch(0.1, lambda idle, running: reports.append((idle, running))))
        await e.run(iter([(Row("a", 0, {"x": 1}), 0)]))
        watch.cancel()

    asyncio.run(main())
    assert len(reports) == 1 and reports[0][1][0][:2] == ("a", 0)
