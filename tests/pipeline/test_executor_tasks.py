"""The worker side of the Dask executor without a cluster: the per-process gate, how a task's
outcomes travel, and which worker the next task goes to."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import pytest

from runner.pipeline.executor_tasks import _AsyncWaiter, _Gate, _pack, unpack_outcomes
from runner.pipeline.executors import _least_loaded
from runner.pipeline.heap import heap_frozen


async def test_the_gate_lets_waiting_rows_in_first_come_first_served_one_per_freed_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    woken: list[bool] = []
    settle = _AsyncWaiter.settle

    def counted(self: _AsyncWaiter, allowed: bool) -> None:
        woken.append(allowed)
        settle(self, allowed)

    monkeypatch.setattr(_AsyncWaiter, "settle", counted)
    gate = _Gate(2)
    order: list[int] = []
    entered = 0
    peak = 0
    release: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(6)}

    async def row(i: int) -> None:
        nonlocal entered, peak
        assert await gate.enter(2)
        entered += 1
        order.append(i)
        peak = max(peak, gate.running)
        try:
            await release[i].wait()
        finally:
            gate.leave()

    tasks = [asyncio.create_task(row(i)) for i in range(6)]
    await asyncio.sleep(0)
    assert order == [0, 1] and gate.running == 2 and len(gate._waiters) == 4
    # each finishing row lets exactly the oldest waiter in: nobody else wakes
    for done, expected in [(1, [0, 1, 2]), (0, [0, 1, 2, 3]), (3, [0, 1, 2, 3, 4]), (2, [0, 1, 2, 3, 4, 5])]:
        release[done].set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert order == expected
        assert gate.running == 2
    for e in release.values():
        e.set()
    await asyncio.gather(*tasks)
    assert entered == 6 and peak == 2 and gate.running == 0 and not gate._waiters
    assert woken == [True] * 4  # four waited, four were woken, once each


async def test_a_cancelled_waiter_takes_no_slot_and_one_cancelled_after_being_let_in_passes_it_on() -> None:
    gate = _Gate(1)
    assert await gate.enter(1)
    waiting = asyncio.create_task(gate.enter(1))
    behind = asyncio.create_task(gate.enter(1))
    await asyncio.sleep(0)
    waiting.cancel()  # cancelled while waiting
    with pytest.raises(asyncio.CancelledError):
        await waiting
    gate.leave()  # the slot skips the cancelled waiter
    assert await behind is True and gate.running == 1

    # let in (the future resolved), then cancelled before it ran: the slot goes to the next one
    third = asyncio.create_task(gate.enter(1))
    fourth = asyncio.create_task(gate.enter(1))
    await asyncio.sleep(0)
    gate.leave()
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    assert await fourth is True and gate.running == 1
    gate.leave()
    assert gate.running == 0


async def _full_gate_with_three_waiting() -> tuple[_Gate, list[asyncio.Task[bool]]]:
    """A gate of limit 1 with its one row running and three rows waiting, oldest first."""
    gate = _Gate(1)
    assert await gate.enter(1)
    waiters = [asyncio.create_task(gate.enter(1)) for _ in range(3)]
    await asyncio.sleep(0)
    return gate, waiters


async def test_stopping_turns_every_waiting_row_away_and_later_ones_too() -> None:
    gate, waiters = await _full_gate_with_three_waiting()
    gate.stop()
    assert await asyncio.gather(*waiters) == [False, False, False]
    assert await gate.enter(1) is False
    gate.leave()
    assert gate.running == 0


async def test_a_higher_limit_from_the_driver_lets_waiters_in_before_the_newcomer() -> None:
    gate, waiters = await _full_gate_with_three_waiting()
    newcomer = asyncio.create_task(gate.enter(3))  # a task sent after a worker joined elsewhere
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [w.done() for w in waiters] == [True, True, False] and not newcomer.done()
    assert gate.running == 3
    gate.leave()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert waiters[2].done() and not newcomer.done()  # first come, first served
    gate.leave()
    assert await newcomer is True
    assert all(w.result() for w in waiters)


async def test_rows_let_in_from_another_thread_run_on_their_own_loop() -> None:
    gate = _Gate(1)
    assert await gate.enter(1)
    waiter = asyncio.create_task(gate.enter(1))
    await asyncio.sleep(0)
    t = threading.Thread(target=gate.leave)  # a sync row's thread, say
    t.start()
    t.join()
    assert await asyncio.wait_for(waiter, 10) is True and gate.running == 1

    # let in from another thread, cancelled before its loop saw it: the slot is passed on
    late = asyncio.create_task(gate.enter(1))
    after = asyncio.create_task(gate.enter(1))
    await asyncio.sleep(0)
    t = threading.Thread(target=gate.leave)
    t.start()
    t.join()
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    assert await asyncio.wait_for(after, 10) is True and gate.running == 1


def test_sync_rows_on_worker_threads_never_run_more_than_the_limit() -> None:
    gate = _Gate(3)
    lock = threading.Lock()
    running = 0
    peak = 0
    ran = 0

    def row() -> None:
        nonlocal running, peak, ran
        assert gate.enter_sync(3)
        with lock:
            running += 1
            peak = max(peak, running)
        threading.Event().wait(0.005)
        with lock:
            running -= 1
            ran += 1
        gate.leave()

    threads = [threading.Thread(target=row) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert ran == 24 and peak <= 3 and gate.running == 0


def _not_picklable_by_name() -> Any:
    return lambda: 42


def test_a_tasks_outcomes_travel_as_one_pickle_and_come_back_equal() -> None:
    outcomes: list[Any] = [{"row": 1, "output": "x" * 10}, None, {"row": 2, "output": "\udcff"}]
    data = _pack(outcomes)
    assert isinstance(data, bytes)
    assert unpack_outcomes(data) == outcomes
    # something plain pickle refuses (a lambda kept in an output) still travels, by cloudpickle
    made: list[Any] = [{"made": _not_picklable_by_name()}]
    back = unpack_outcomes(_pack(made))
    assert back[0]["made"]() == 42  # type: ignore[index]


def test_the_next_task_goes_to_the_worker_with_the_fewest_rows_for_its_share() -> None:
    limits = {"tcp://a:1": 100, "tcp://b:1": 100}
    assert _least_loaded(limits, {}) == "tcp://a:1"  # ties: the same order every time
    assert _least_loaded(limits, {"tcp://a:1": 200, "tcp://b:1": 100}) == "tcp://b:1"
    assert _least_loaded({"tcp://a:1": 101, "tcp://b:1": 99}, {"tcp://a:1": 101, "tcp://b:1": 100}) == "tcp://a:1"
    assert _least_loaded({}, {}) is None


def test_the_heap_is_frozen_while_rows_run_and_given_back_after_the_last_block() -> None:
    assert gc.get_freeze_count() == 0
    with heap_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with heap_frozen():  # a second run at the same time, on another thread say
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0
    # a process that froze its heap itself keeps it frozen, and its own
    gc.freeze()
    try:
        theirs = gc.get_freeze_count()
        with heap_frozen():
            pass
        assert gc.get_freeze_count() == theirs
    finally:
        gc.unfreeze()


def test_a_slot_handed_to_a_row_whose_loop_has_closed_goes_on() -> None:
    gate = _Gate(1)
    assert gate.enter_sync(1)
    loop = asyncio.new_event_loop()
    gate._waiters.append(_AsyncWaiter(gate, loop))  # a row waiting on a worker loop since closed
    loop.close()
    gate.leave()
    assert gate.running == 0 and not gate._waiters
    assert gate.enter_sync(1)  # the slot is free for the next row
