"""@trace and span(): no-ops outside a row; children with ids, depth and order inside one."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from runner.names import new_id
from runner.pipeline.tracing import Span, TraceRun, current_span, reset_current, set_current, span, trace


def test_trace_outside_a_row_just_calls() -> None:
    @trace
    def f(x: int) -> int:
        return x + 1

    @trace(name="g", eval_funcs=[lambda log: 1.0])
    async def g(x: int) -> int:
        return x * 2

    assert f(1) == 2 and asyncio.run(g(2)) == 4
    with span("block") as s:
        assert s is None
    assert f.__name__ == "f"


def test_children_get_parent_root_depth_order_inputs_and_scores() -> None:
    run = TraceRun("exp", "proj", target="T")
    root = Span("root", run, None, {"q": 1})
    token = set_current(root)
    try:

        @trace(eval_funcs=[lambda log: 1.0 if log.target == "T" else 0.0], metadata={"k": "v"}, tags=["t"])
        def child(a: int, b: int = 2, *args: int, **kw: int) -> int:
            assert current_span() is not root
            with span("inner", {"z": 1}) as s:
                assert s is not None
                s.output = "inner-out"
            return a + b

        assert child(1, c=3) == 3
    finally:
        reset_current(token)
    inner, ch = run.children
    assert ch["trace_name"] == "child" and ch["depth"] == 1 and ch["execution_order"] == 1
    assert ch["parent_trace_id"] == root.trace_id == ch["root_trace_id"]
    assert ch["inputs"] == {"a": 1, "c": 3}
    assert ch["scores"] == [{"name": "score", "score": 1.0}]
    assert ch["metadata"] == {"k": "v", "output_is_json": True} and ch["tags"] == ["t"]
    assert inner["depth"] == 2 and inner["parent_trace_id"] == ch["trace_id"] and inner["execution_order"] == 2
    assert inner["output"] == "inner-out"


def test_failing_span_records_the_error_and_reraises() -> None:
    run = TraceRun(None, None)
    token = set_current(Span("root", run, None))
    try:

        @trace
        def bad() -> None:
            raise ValueError("x")

        with contextlib.suppress(ValueError):
            bad()
    finally:
        reset_current(token)
    (log,) = run.children
    assert log["status"] == "error" and "ValueError: x" in log["error"]


def test_ids_are_uuid4_and_unique() -> None:
    import uuid

    ids = {new_id() for _ in range(10000)}
    assert len(ids) == 10000
    u = uuid.UUID(next(iter(ids)))
    assert u.version == 4 and u.variant == uuid.RFC_4122


def _span_ids_in_a_forked_child(n: int, out: Any) -> None:
    run = TraceRun("exp", "p")
    root = Span("root", run, None)
    out.send([Span("child", run, root).trace_id for _ in range(n)])
    out.close()


def test_forked_children_get_span_ids_of_their_own() -> None:
    # gunicorn-style workers and multiprocessing pools fork: each child must reseed the id
    # generator, or two children hand out the same ids and their spans overwrite each other
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    new_id()  # the parent's generator is in use before the fork
    ids: list[str] = []
    for _ in range(2):  # two children forked from the same parent state, one after the other
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_span_ids_in_a_forked_child, args=(100, send))
        child.start()
        ids += receive.recv()
        child.join(timeout=60)
        assert child.exitcode == 0
    assert len(ids) == 200 and len(set(ids)) == 200, f"{200 - len(set(ids))} of 200 child span ids repeated"
