"""The Logs page: every root trace the server holds, filtered, sorted and paged on the server.

Against a real server holding a run made by the runner itself (``Experiment(...).run()`` through
the server, one row raising) and logs posted by bare REST calls outside any run (a minimal log,
a chat with tags, scores, annotations and feedback, an error, a LangChain-style chain); read
with httpx, and in headless Chromium for what a click does. Logs made by the official SDK are
in ``test_ui_clients.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from evals import exact_match
from runner import Experiment
from runner.store import Store
from runner.store.logs import LogFilter
from tests.servers import ServerHandle, log, start_server
from tests.test_ui import text

ROWS = [{"q": f"what is {i} + {i}?", "target": str(2 * i)} for i in range(6)]


def add(q: str) -> str:
    i = int(q.split()[2])
    if i == 4:
        raise ValueError("cannot add four")
    return str(2 * i if i != 3 else 7)


#: logs posted by REST outside any run: id -> body
LOOSE: dict[str, dict[str, Any]] = {
    "rest-minimal": {"trace_id": "rest-minimal", "start_timestamp": "2024-05-30 13:48:34"},
    "rest-chat": log(
        "rest-chat",
        trace_name="chat",
        project_name="assistant",
        start_timestamp="2024-06-01T10:00:00+00:00",
        end_timestamp="2024-06-01T10:00:02+00:00",
        inputs={"question": "Where is the Eiffel tower?"},
        output="In Paris.",
        tags=["prod", "geo"],
        scores=[{"name": "helpful", "score": 0.8}],
        annotations={"reviewer": "ana", "label": "good"},
        total_tokens=42,
        cost=0.002,
    ),
    "rest-chat-2": log(
        "rest-chat-2",
        trace_name="chat",
        project_name="assistant",
        start_timestamp="2024-06-02T10:00:00+00:00",
        end_timestamp="2024-06-02T10:00:05+00:00",
        inputs={"question": "And the Colosseum?"},
        output="In Rome.",
        tags=["prod"],
        scores=[{"name": "helpful", "score": 0.3}],
    ),
    "rest-error": log(
        "rest-error",
        trace_name="summarize",
        project_name="assistant",
        start_timestamp="2024-06-03T10:00:00+00:00",
        inputs={"text": "a long article"},
        error="Traceback ...\nTimeoutError: the model took too long",
    ),
    "rest-chain": log(
        "rest-chain",
        trace_name="RunnableSequence",
        project_name="lc",
        start_timestamp="2024-06-04T10:00:00+00:00",
        inputs={"topic": "bears"},
        output="a joke about bears",
    ),
}
CHILD = log(
    "rest-chain-llm",
    parent="rest-chain",
    trace_name="ChatModel",
    project_name="lc",
    start_timestamp="2024-06-04T10:00:00.5+00:00",
    total_tokens=30,
    cost=0.001,
    scores=[{"name": "funny", "score": 1.0}],
)


@pytest.fixture(scope="module")
def site(db_module: str | Path) -> Iterator[tuple[ServerHandle, str]]:
    with start_server(db_module) as server:
        result = Experiment(
            name="adder", data=ROWS, func=add, evals=[exact_match], project_name="maths", base_url=server.base_url
        ).run(run_name="adder-1", quiet=True)
        with httpx.Client(base_url=server.base_url + "/", timeout=30) as api:
            for body in [*LOOSE.values(), CHILD]:
                assert api.post("/trace_log", json=body).status_code == 200
            for score, comment in ((0.9, "spot on"), (0.4, None)):
                assert (
                    api.post(
                        "/feedback", json={"trace_id": "rest-chat", "score": score, "comment": comment}
                    ).status_code
                    == 200
                )
        yield server, result.experiment_uuid


@pytest.fixture
def web(site: tuple[ServerHandle, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site[0].url, timeout=30) as client:
        yield client


def shown(html: str) -> list[str]:
    """Trace ids of the rows the page lists, in order."""
    return re.findall(r'<tr class="row[^"]*" data-trace="([^"]+)"', html)


def cells(html: str) -> list[list[str]]:
    body = html.split('id="logs"', 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r'<tr class="row[^"]*" data-trace="[^"]+"[^>]*>(.*?)</tr>', body, flags=re.S)
    return [[text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.S)] for r in rows]


def get(web: httpx.Client, url: str) -> str:
    response = web.get(url)
    assert response.status_code == 200, response.text[:500]
    return response.text


def test_every_root_trace_is_listed_newest_first(web: httpx.Client, site: tuple[ServerHandle, str]) -> None:
    html = get(web, "/logs")
    ids = shown(html)
    with _store(site) as store:
        roots = store._query("SELECT trace_id, start_timestamp FROM traces WHERE is_root=1")
    assert sorted(ids) == sorted(r[0] for r in roots) and len(ids) == 6 + 5
    assert "rest-chain-llm" not in ids  # a child is shown in its trace, not as a log
    starts = {r[0]: r[1] for r in roots}
    assert [starts[i] for i in ids] == sorted(starts.values(), reverse=True)
    assert ids[-1] == "rest-minimal"
    assert text(html).count("logs 1–11 of 11") == 1
    assert 'href="/logs"' in html and 'class="active">Logs' in html  # in the nav, and current


class _store:
    """The server's SQLite file, opened read-only for the test's own queries."""

    def __init__(self, site: tuple[ServerHandle, str]) -> None:
        assert site[0].store is not None
        self.store = site[0].store

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("project=assistant", {"rest-chat", "rest-chat-2", "rest-error"}),
        ("project=lc", {"rest-chain"}),
        ("name=chat", {"rest-chat", "rest-chat-2"}),
        ("status=error", {"rest-error", "ERRORED-ROW"}),
        ("kind=loose&status=success", {"rest-minimal", "rest-chat", "rest-chat-2", "rest-chain"}),
        ("since=2024-06-01T12:00&until=2024-06-03T12:00", {"rest-chat-2", "rest-error"}),
        ("score=helpful&min=0.5", {"rest-chat"}),
        ("score=helpful&max=0.5", {"rest-chat-2"}),
        ("score=funny&min=1", {"rest-chain"}),  # a child's score, rolled up to its root
        ("tag=prod", {"rest-chat", "rest-chat-2"}),
        ("tag=prod,geo", {"rest-chat"}),
        ("q=eiffel", {"rest-chat"}),
        ("q=took too long", {"rest-error"}),
        ("q=bears&project=lc", {"rest-chain"}),
        ("q=nothing like this", set()),
    ],
)
def test_each_filter_shows_exactly_the_matching_logs(
    web: httpx.Client, site: tuple[ServerHandle, str], query: str, expected: set[str]
) -> None:
    if "ERRORED-ROW" in expected:
        with _store(site) as store:
            errored = [
                r[0]
                for r in store._query(
                    "SELECT trace_id FROM traces WHERE is_root=1 AND experiment_uuid=? AND status='error'", (site[1],)
                )
            ]
        assert len(errored) == 1
        expected = (expected - {"ERRORED-ROW"}) | set(errored)
    html = get(web, "/logs?" + query)
    assert set(shown(html)) == expected
    if not expected:
        assert "No log matches these filters." in text(html)


def test_a_root_shows_its_children_s_scores_tokens_and_cost(web: httpx.Client) -> None:
    html = get(web, "/logs?project=lc")
    row = cells(html)[0]
    assert "funny 1" in row[7]
    assert row[5] == "30" and row[6] == "$0.001"


def test_rows_of_runs_link_their_run_and_show_their_scores(web: httpx.Client, site: tuple[ServerHandle, str]) -> None:
    html = get(web, "/logs?kind=experiment&sort=oldest")
    rows = cells(html)
    assert len(rows) == 6
    assert all(r[2] == "maths · adder · adder-1" for r in rows)
    assert f'href="/runs/{site[1]}"' in html
    assert [r[7] for r in rows] == ["exact_match 1.00"] * 3 + ["exact_match 0.00", "", "exact_match 1.00"]
    assert [r[3] for r in rows].count("error") == 1
    assert "ValueError: cannot add four" in rows[4][11]


def test_sorts(web: httpx.Client) -> None:
    html = get(web, "/logs?kind=loose&sort=latency")
    rows = cells(html)
    assert [r[1] for r in rows][:2] == ["chat", "chat"]
    assert [r[4] for r in rows][:2] == ["5.00 s", "2.00 s"]
    names = [r[1] for r in cells(get(web, "/logs?kind=loose&sort=name"))]
    assert names[:4] == ["RunnableSequence", "chat", "chat", "summarize"]
    assert [r[5] for r in cells(get(web, "/logs?kind=loose&sort=tokens"))][:2] == ["42", "30"]


def test_pages_on_the_server(web: httpx.Client) -> None:
    first = shown(get(web, "/logs?per=4"))
    second_html = get(web, "/logs?per=4&page=2")
    third = shown(get(web, "/logs?per=4&page=3"))
    second = shown(second_html)
    assert len(first) == len(second) == 4 and len(third) == 3
    assert not set(first) & set(second) and not set(second) & set(third)
    assert "logs 5–8 of 11" in text(second_html) and "page 2 of 3" in text(second_html)
    assert 'rel="next"' in second_html and 'rel="prev"' in second_html
    assert shown(get(web, "/logs?per=4&page=99")) == third  # clamped to the last page


def test_feedback_and_annotations_in_the_table_and_on_the_trace(web: httpx.Client) -> None:
    row = next(r for r in cells(get(web, "/logs?name=chat")) if "Eiffel" in r[10])
    assert row[8].startswith("0.900 · spot on 0.400")
    assert "✎ 2" in row[8] and row[9] == "prod geo"
    trace = get(web, "/traces/rest-chat")
    section = trace.split('data-feedback="rest-chat"', 1)[1].split("</section>", 1)[0]
    rows = [text(r) for r in re.findall(r"<tr>(.*?)</tr>", section.split("<tbody>", 1)[1], flags=re.S)]
    assert len(rows) == 2 and rows[0].startswith("0.900 spot on") and rows[1].startswith("0.4")
    assert "&#34;reviewer&#34;: &#34;ana&#34;" in section


def test_bad_filters_are_named_and_ignored(web: httpx.Client) -> None:
    html = get(web, "/logs?min=abc&score=helpful&sort=sideways&since=yesterday&project=nope")
    page = text(html)
    assert "the score's minimum needs a number, not 'abc': ignored" in page
    assert "cannot sort by 'sideways': showing the newest first" in page
    assert "'from' needs a date and time such as 2024-05-30T13:48, not 'yesterday': ignored" in page
    assert "there is no project 'nope': showing every project" in page
    assert len(shown(html)) == 2  # the helpful score alone still applies


def test_a_row_by_row_filter_looks_at_a_window_of_the_newest_logs(db: str | Path) -> None:
    store = Store(db)
    store.upsert_traces(
        [
            log(
                f"w{i}",
                start_timestamp=f"2024-01-0{i + 1}T00:00:00",
                inputs={"n": "needle" if i == 0 else "hay"},
                project_uuid=store.project_uuid("p"),
            )
            for i in range(5)
        ]
    )
    found = store.list_logs(LogFilter(text="needle"), window=3)
    assert found.rows == [] and found.windowed
    found = store.list_logs(LogFilter(text="needle", until="2024-01-03"), window=3)
    assert [d["trace_id"] for d in found.rows] == ["w0"] and not found.windowed
    assert [d["trace_id"] for d in store.list_logs(LogFilter(), window=3).rows] == [f"w{i}" for i in range(4, -1, -1)]
    store.close()


# -- in the browser ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS

    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def watched(browser: Any, site: tuple[ServerHandle, str]) -> Iterator[Any]:
    from tests.test_ui_browser import Watched

    context = browser.new_context(base_url=site[0].url, viewport={"width": 1400, "height": 900})
    w = Watched(context, site[0].url)
    yield w
    context.close()
    w.check()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_ui_browser import SHOTS

    folder = Path(SHOTS).resolve() if SHOTS else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_in_the_browser_filter_then_click_a_log_to_open_its_trace(watched: Any, shots: Path) -> None:
    page = watched.page
    page.goto("/")
    page.click("header nav a:text-is('Logs')")
    page.wait_for_url(re.compile(r"/logs$"))
    assert page.locator("#logs tbody tr").count() == 11
    assert page.locator("#logs-count").inner_text() == "logs 1–11 of 11"
    page.screenshot(path=shots / "logs.png", full_page=True)
    page.select_option('select[name="project"]', "assistant")
    page.fill('input[name="tag"]', "prod")
    page.click("#logs-filter button[type=submit]")
    page.wait_for_url(re.compile(r"tag=prod"))
    assert page.locator("#logs tbody tr td:nth-child(2)").all_inner_texts() == ["chat", "chat"]
    # a click anywhere on the row (not only on the name) opens the trace
    page.locator("#logs tbody tr", has_text="Eiffel").locator("td").nth(10).click()
    page.wait_for_url(re.compile(r"/traces/rest-chat$"))
    feedback = page.locator('section.feedback[data-feedback="rest-chat"]')
    assert feedback.locator("table.span-feedback tbody tr").count() == 2
    assert "spot on" in feedback.inner_text() and '"label": "good"' in feedback.locator("pre.annotations").inner_text()
    page.screenshot(path=shots / "log-trace.png", full_page=True)


def test_with_keys_each_key_sees_only_its_own_logs_and_feedback(db: str | Path) -> None:
    with start_server(db, api_keys=["key-a", "key-b"]) as server:
        for key, tid in (("key-a", "mine"), ("key-b", "theirs")):
            with httpx.Client(base_url=server.base_url + "/", headers={"x-api-key": key}, timeout=30) as api:
                body = log(tid, trace_name=f"call-{tid}", start_timestamp="2024-06-01T10:00:00+00:00")
                assert api.post("/trace_log", json=body).status_code == 200
                assert (
                    api.post("/feedback", json={"trace_id": tid, "score": 1.0, "comment": f"by {key}"}).status_code
                    == 200
                )
        # posts its forms as a browser on these pages does: with their Origin
        with httpx.Client(base_url=server.url, headers={"origin": server.url}, timeout=30) as web:
            anonymous = web.get("/logs")
            assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
            web.post("/login", data={"key": "key-a", "next": "/logs"})
            html = get(web, "/logs")
            assert shown(html) == ["mine"]
            assert "by key-a" in html and "by key-b" not in html
            assert get(web, "/logs?q=theirs").count("data-href=") == 0
            assert web.get("/traces/theirs").status_code == 404
