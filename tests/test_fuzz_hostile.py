"""Hostile values against a real server: non-finite numbers, lone surrogates, NUL characters, parent
cycles and deep chains, generated (hypothesis) and placed anywhere in otherwise valid bodies of
every route, on both stores (a SQLite file, then PostgreSQL).

A non-finite number, a lone surrogate or a NUL (which PostgreSQL's text cannot hold) anywhere is
a 422 whose ``loc`` is exactly where it was put; nothing is stored, and the tenant's later
requests still work. Any parent graph a client can post (cycles, roots whose parent is their own
child, orphans) reads back as a tree: every span at most once, no 500, whatever the depth.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import Experiment, trace
from runner.server.auth import key_owner
from runner.store.tree_links import MAX_NESTING, MAX_SPANS
from tests.servers import ServerHandle, experiment, log, start_server

OWNER = key_owner("key-a")
HOSTILE_NUMBERS = [math.nan, math.inf, -math.inf]
HOSTILE_TEXT = ["\ud800", "\udfff", "cut \ud83d", "\ude00 tail", "ok\udc80ok", "nul \x00 inside", "\x00"]


@pytest.fixture(scope="module")
def site(db_module: str | Path) -> Iterator[tuple[ServerHandle, httpx.Client, dict[str, str]]]:
    """A server with one tenant over a SQLite file, then over PostgreSQL (``tests/pg.py``)."""
    db = db_module
    with (
        start_server(db, api_keys=["key-a"]) as server,
        httpx.Client(base_url=server.base_url + "/", headers={"x-api-key": "key-a"}, timeout=30) as api,
    ):
        exp = experiment(api, project="p", name="e")
        assert api.post("/trace_log", json=log("t", experiment_uuid=exp["uuid"])).status_code == 200
        ids = {"experiment": exp["uuid"], "project": exp["project_uuid"]}
        yield server, api, ids


def _bodies(ids: dict[str, str]) -> dict[tuple[str, str], Any]:
    """A valid body for each route that takes JSON (the nine of the report, and the others)."""
    e = ids["experiment"]
    return {
        ("POST", "/project"): {"name": "p2"},
        ("POST", "/experiment"): {"name": "e2", "project_uuid": ids["project"], "metadata": {"k": "v"}},
        ("POST", "/experiments"): {"project_name": "p", "metadata_filter": {"k": "v"}},
        ("PUT", "/trace_log"): {"trace_id": "t", "field_name_to_value_map": {"output": "x", "latency": 0.5}},
        ("POST", "/feedback"): {"trace_id": "t", "score": 0.5, "comment": "fine"},
        ("POST", "/collection"): {"name": "d", "column_names": ["q"], "test_cases": [{"inputs": {"q": "1"}}]},
        ("POST", "/testcases"): {"name": "d2", "test_cases": [{"inputs": {"q": "1"}, "target": "x"}]},
        ("POST", f"/experiment/{e}/trace_logs"): {
            "filter_field": "trace_name",
            "filter_operator": "equals",
            "filter_value": "x",
        },
        ("POST", "/get_trace_logs"): {
            "project_name": "p",
            "filter_field": "trace_name",
            "filter_operator": "like",
            "filter_value": "x",
        },
        ("POST", f"/experiment/{e}/finished"): {
            "status": "completed",
            "dataset_level_stats": [{"name": "x", "score": 0.5}],
        },
        ("POST", "/trace_log"): log(
            "new",
            experiment_uuid=e,
            latency=0.1,
            scores=[{"name": "s", "score": 1.0}],
            inputs={"q": "x"},
            metadata={"m": [1.5, "a"]},
        ),
        ("POST", "/trace_logs/batch"): {"logs": [log("n1", experiment_uuid=e, cost=0.1), log("n2", inputs={"q": "y"})]},
        ("POST", "/completion"): {
            "llm_configuration": {
                "model": "gpt-4o-mini",
                "provider": "openai",
                "messages": [{"role": "user", "content": "hi"}],
            }
        },
    }


def _places(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every position in a JSON value: each dict value, each list item (the root excluded)."""
    out: list[tuple[str | int, ...]] = [path] if path else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _places(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _places(v, (*path, i))
    return out


def _put(value: Any, path: tuple[str | int, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _put(value[path[0]], path[1:], new)  # type: ignore[index]
    return copy


ROUTES = sorted(_bodies({"experiment": "E", "project": "P"}), key=lambda r: (r[1], r[0]))
_hostile = st.one_of(st.sampled_from(HOSTILE_NUMBERS), st.sampled_from(HOSTILE_TEXT))


@settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(route=st.integers(0, len(ROUTES) - 1), where=st.integers(0, 10**6), bad=_hostile, as_key=st.booleans())
def test_a_hostile_value_anywhere_is_a_422_naming_its_place(
    site: tuple[ServerHandle, httpx.Client, dict[str, str]], route: int, where: int, bad: Any, as_key: bool
) -> None:
    server, api, ids = site
    bodies = _bodies(ids)
    method, path = next(r for r in bodies if (r[0], r[1].replace(ids["experiment"], "E")) == ROUTES[route])
    body = bodies[(method, path)]
    places = _places(body)
    place = places[where % len(places)]
    if as_key and isinstance(bad, str):
        parent = place[:-1]
        holder = body
        for step in parent:
            holder = holder[step]
        if isinstance(holder, dict):
            body = _put(body, parent, {**holder, bad: "v"})
            place = (*parent, bad.encode("utf-8", "backslashreplace").decode())
        else:
            body = _put(body, place, bad)
    else:
        body = _put(body, place, bad)
    assert server.store is not None
    before = server.store.count_traces(OWNER)
    raw = json.dumps(body, allow_nan=True).encode()  # Python's json writes NaN, Infinity, \ud800
    response = api.request(method, path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, (method, path, raw[:300], response.text)
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", *place], (raw[:300], error)
    expected = "finite" if isinstance(bad, float) else "NUL character" if "\x00" in bad else "surrogate"
    assert expected in error["msg"], error
    assert server.store.count_traces(OWNER) == before


def test_numbers_too_large_for_a_double_are_non_finite_too(
    site: tuple[ServerHandle, httpx.Client, dict[str, str]],
) -> None:
    _, api, ids = site
    for literal in (b"1e999", b"-1e400", b"1" + b"0" * 400 + b".0"):
        raw = b'{"status": "completed", "dataset_level_stats": [{"name": "x", "score": ' + literal + b"}]}"
        response = api.post(
            f"/experiment/{ids['experiment']}/finished", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "dataset_level_stats", 0, "score"]
    # before: the tenant's every later POST /experiments was a 500
    assert api.post("/experiments", json={}).status_code == 200
    # a surrogate pair (an emoji escaped as JSON does) is text, and is fine
    ok = api.post("/project", content=b'{"name": "smile \\ud83d\\ude00"}', headers={"content-type": "application/json"})
    assert ok.status_code == 200 and ok.json()["name"] == "smile \U0001f600"


# -- parent graphs ----------------------------------------------------------------------------------


def _spans_of(tree: dict[str, Any]) -> list[str]:
    out, stack, levels = [], [(tree, 0)], [0]
    while stack:
        node, level = stack.pop()
        out.append(node["trace_id"])
        levels.append(level)
        stack.extend((c, level + 1) for c in node["children_logs"])
    assert max(levels) <= MAX_NESTING
    return out


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parents=st.lists(st.integers(-1, 11), min_size=1, max_size=12), root_parent=st.integers(-1, 11))
def test_any_parent_graph_reads_back_as_a_tree(
    site: tuple[ServerHandle, httpx.Client, dict[str, str]], parents: list[int], root_parent: int
) -> None:
    _, api, _ = site
    exp = experiment(api, project="graphs", name="g")
    tag = exp["uuid"][:8]
    root = f"{tag}-root"
    spans = [f"{tag}-{i}" for i in range(len(parents))]
    logs = [log(root, experiment_uuid=exp["uuid"], cost=1.0)]
    if 0 <= root_parent < len(spans):  # a root whose parent is one of its own spans
        logs[0]["parent_trace_id"] = spans[root_parent]
    for i, p in enumerate(parents):
        parent = root if p < 0 or p >= len(spans) else spans[p]  # p == i: its own parent
        logs.append(log(spans[i], parent=parent, root=root, cost=1.0, scores=[{"name": "s", "score": 1.0}]))
    assert api.post("/trace_logs/batch", json={"logs": logs}).status_code == 200
    for trace_id in [root, *spans]:
        response = api.get(f"/trace_log/{trace_id}")
        assert response.status_code == 200, response.text
        seen = _spans_of(response.json())
        assert len(seen) == len(set(seen)), seen  # a cycle is cut, never repeated
    rows = api.post(f"/experiment/{exp['uuid']}/trace_logs", json={})
    assert rows.status_code == 200
    assert api.post("/get_trace_logs", json={"project_name": "graphs"}).status_code == 200
    assert api.get(f"/experiment/{exp['uuid']}/stats").status_code == 200
    assert api.post(f"/experiment/{exp['uuid']}/finished", json={}).status_code == 200


def test_a_cycle_is_cut_and_the_ui_trace_page_renders(site: tuple[ServerHandle, httpx.Client, dict[str, str]]) -> None:
    server, api, _ = site
    logs = [
        log("cyc-root"),
        log("cyc-a", parent="cyc-b", root="cyc-root"),
        log("cyc-b", parent="cyc-a", root="cyc-root"),
    ]
    assert api.post("/trace_logs/batch", json={"logs": logs}).status_code == 200
    a = api.get("/trace_log/cyc-a").json()
    assert [c["trace_id"] for c in a["children_logs"]] == ["cyc-b"]
    assert a["children_logs"][0]["children_logs"] == []
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=True) as pages:
        login = pages.post("/login", data={"key": "key-a", "next": "/traces/cyc-a"}, headers={"origin": server.url})
        assert login.status_code == 200, login.text
        assert "cyc-b" in login.text


@pytest.mark.parametrize("depth", [200, 1000])
def test_a_chain_deeper_than_any_json_reader_nests_reads_back(
    site: tuple[ServerHandle, httpx.Client, dict[str, str]], depth: int
) -> None:
    server, api, _ = site
    exp = experiment(api, project="deep", name=f"d{depth}")
    root = f"deep{depth}-root"
    logs = [log(root, experiment_uuid=exp["uuid"])]
    for i in range(depth):
        logs.append(
            log(
                f"deep{depth}-{i}",
                parent=logs[-1]["trace_id"],
                root=root,
                depth=i + 1,
                cost=0.5,
                scores=[{"name": "leaf", "score": float(i == depth - 1)}],
            )
        )
    assert api.post("/trace_logs/batch", json={"logs": logs}).status_code == 200
    tree = api.get(f"/trace_log/{root}").json()
    assert tree["cost"] == 0.5 * depth  # roll-ups follow the real parents, whatever is nested
    assert sorted(_spans_of(tree)) == sorted(entry["trace_id"] for entry in logs)
    assert {s["name"]: s["score"] for s in tree["scores"]}["leaf"] == pytest.approx(1 / depth)
    (row,) = api.post(f"/experiment/{exp['uuid']}/trace_logs", json={}).json()
    assert row["cost"] == 0.5 * depth
    with httpx.Client(base_url=server.url, timeout=60, follow_redirects=True) as pages:
        page = pages.post("/login", data={"key": "key-a", "next": f"/traces/{root}"}, headers={"origin": server.url})
        assert page.status_code == 200 and f"{depth + 1} span(s)" in page.text


def test_a_runner_row_150_spans_deep_through_http_reads_back(db: str | Path) -> None:
    @trace
    def dig(n: int) -> int:
        return n if n == 0 else dig(n - 1) + 1

    def func(q: str) -> str:
        return str(dig(150))

    with start_server(db) as server:
        result = Experiment(name="deep", data=[{"q": "x", "target": "150"}], func=func, base_url=server.base_url).run(
            quiet=True
        )
        frame = result.to_dataframe()
        assert len(frame) == 1
        text = result.summary_text()
        assert "1" in text
        with httpx.Client(base_url=server.base_url + "/", timeout=30) as api:
            (row,) = api.post(f"/experiment/{result.experiment_uuid}/trace_logs", json={}).json()
            assert row["output"] == "150"


def test_one_read_holds_at_most_max_spans_of_a_tree(site: tuple[ServerHandle, httpx.Client, dict[str, str]]) -> None:
    server, api, _ = site
    root = "wide-root"
    logs = [log(root)] + [log(f"wide-{i}", parent=root, cost=1.0, execution_order=i) for i in range(12_000)]
    for i in range(0, len(logs), 4000):
        assert api.post("/trace_logs/batch", json={"logs": logs[i : i + 4000]}).status_code == 200
    first = api.get(f"/trace_log/{root}")
    assert first.status_code == 200
    assert len(first.json()["children_logs"]) == MAX_SPANS - 1
    assert (first.headers["x-runner-spans-shown"], first.headers["x-runner-spans-total"]) == (str(MAX_SPANS), "12001")
    whole = api.get(f"/trace_log/{root}", params={"max_spans": 20_000})
    assert len(whole.json()["children_logs"]) == 12_000 and "x-runner-spans-total" not in whole.headers
    assert whole.json()["cost"] == 12_000.0
    assert api.get(f"/trace_log/{root}", params={"max_spans": 10**6}).status_code == 422
    # a span past the cut still reads by its own id
    assert api.get("/trace_log/wide-11999").json()["trace_id"] == "wide-11999"
    with httpx.Client(base_url=server.url, timeout=60, follow_redirects=True) as pages:
        page = pages.post("/login", data={"key": "key-a", "next": f"/traces/{root}"}, headers={"origin": server.url})
        assert page.status_code == 200
        assert "the first 2,000 logged are shown" in page.text and "spans=8000" in page.text
        assert page.text.count('class="span ') == 2_000
        more = pages.get(f"/traces/{root}", params={"spans": 20_000})
        assert more.text.count('class="span ') == 12_001 and "the first" not in more.text
