"""The web UI renders every log the API accepts: runs made by the official ``parea-ai`` SDK (its
experiments, and LangChain traced by its tracer) and by bare REST calls (minimal Parea logs
``{"trace_id", "start_timestamp", "experiment_uuid"}``, children without a depth, timestamps with
and without an offset), loaded in a real headless Chromium. Every page must answer 200 and the
browser must log no error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ServerHandle, experiment, start_server
from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS, Watched

pytest.importorskip("parea")
pytest.importorskip("langchain_core")
playwright_api = pytest.importorskip("playwright.sync_api")

SCRIPTS = Path(__file__).parent / "sdk_scripts"


def _rest_runs(api: httpx.Client) -> str:
    """A run logged the way a bare REST client may: minimal logs and sparse children."""
    exp = experiment(api, project="rest", name="minimal")
    uid = exp["uuid"]
    logs = [
        {"trace_id": "min-1", "start_timestamp": "2024-05-30 13:48:34", "experiment_uuid": uid},
        {"trace_id": "min-2", "start_timestamp": "2024-05-30T13:48:34Z", "experiment_uuid": uid,
         "end_timestamp": "2024-05-30T13:48:36+00:00", "error": "Traceback ...\nValueError: boom"},
        {"trace_id": "min-2-child", "parent_trace_id": "min-2", "start_timestamp": "2024-05-30 13:48:35",
         "end_timestamp": "2024-05-30T13:48:35.5+00:00", "experiment_uuid": uid},
    ]
    for body in logs:
        assert api.post("/trace_log", json=body).status_code == 200
    assert api.post(f"/experiment/{uid}/finished", json={}).status_code == 200
    return uid


@pytest.fixture(scope="module")
def site(
    db_module: str | Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerHandle, httpx.Client]]:
    """The clients' runs on a server over each store in turn (``db_module``: SQLite, then PostgreSQL)."""
    tmp = tmp_path_factory.mktemp("ui-clients")
    with start_server(db_module) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PAREA_", "_PAREA", "RUNNER_"))}
        env.update(PAREA_BASE_URL=server.base_url, PAREA_API_KEY="any")
        for script in ("run_experiments.py", "langchain_traces.py"):
            proc = subprocess.run(
                [sys.executable, str(SCRIPTS / script)], env=env, cwd=tmp, capture_output=True, text=True, timeout=240
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
        with httpx.Client(base_url=server.base_url + "/", timeout=30) as api:
            _rest_runs(api)
            yield server, api


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def watched(browser: Any, site: tuple[ServerHandle, httpx.Client]) -> Iterator[Watched]:
    context = browser.new_context(base_url=site[0].url, viewport={"width": 1400, "height": 900})
    w = Watched(context, site[0].url)
    yield w
    context.close()
    w.check()


def _experiments(api: httpx.Client) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in api.post("/experiments", json={}).json()}


def test_the_runs_page_lists_every_client_s_runs(watched: Watched, site: Any) -> None:
    exps = _experiments(site[1])
    assert {"sdk-local", "sdk-named", "lc-experiment", "minimal"} <= set(exps)
    response = watched.page.goto("/")
    assert response is not None and response.status == 200
    for e in exps.values():
        assert watched.page.locator(f'tr[data-run="{e["uuid"]}"]').count() == 1


@pytest.mark.parametrize("name", ["sdk-local", "sdk-named", "lc-experiment", "minimal"])
def test_each_run_page_and_every_trace_of_it_renders(watched: Watched, site: Any, name: str) -> None:
    api = site[1]
    exp = _experiments(api)[name]
    page = watched.page
    response = page.goto(f"/runs/{exp['uuid']}")
    assert response is not None and response.status == 200, response and response.text()[:500]
    roots = api.post(f"/experiment/{exp['uuid']}/trace_logs", json={}).json()
    assert page.locator("#rows tbody tr").count() == len(roots) > 0
    errored = sum(r["status"] == "error" for r in roots)
    assert page.locator("#rows tbody tr.error").count() == errored
    for sort in ("status", "latency", "inputs"):
        response = page.goto(f"/runs/{exp['uuid']}?sort={sort}&desc=1")
        assert response is not None and response.status == 200
    for root in roots:
        spans = [root]
        while spans:
            span = spans.pop()
            spans.extend(span["children_logs"])
            response = page.goto(f"/traces/{span['trace_id']}")
            assert response is not None and response.status == 200, (span["trace_id"], response.text()[:500])
            assert page.locator(f'li.span[data-span="{span["trace_id"]}"]').count() == 1


def test_langchain_traces_outside_experiments_render(watched: Watched, site: Any) -> None:
    api = site[1]
    page = api.post("/get_trace_logs", json={"project_name": "lc-project", "page_size": 50}).json()
    loose = [r for r in page["results"] if not r["experiment_uuid"]]
    assert len(loose) == 3  # the chain alone, in a traced function, and failing
    for root in loose:
        response = watched.page.goto(f"/traces/{root['trace_id']}")
        assert response is not None and response.status == 200
        names = watched.page.locator(".span-name").all_inner_texts()
        assert any("GenericFakeChatModel" in n for n in names)


def test_two_sdk_runs_compare(watched: Watched, site: Any) -> None:
    exps = _experiments(site[1])
    response = watched.page.goto(f"/compare?a={exps['sdk-local']['uuid']}&b={exps['sdk-named']['uuid']}")
    assert response is not None and response.status == 200


def test_the_logs_page_lists_every_client_s_traces(watched: Watched, site: Any) -> None:
    """SDK experiment rows, LangChain chains outside any run, and bare REST minimal logs: each root
    trace the API returns is a row of the Logs page, which opens it."""
    api = site[1]
    roots: list[dict[str, Any]] = []
    for exp in _experiments(api).values():
        roots.extend(api.post(f"/experiment/{exp['uuid']}/trace_logs", json={}).json())
    loose = api.post("/get_trace_logs", json={"project_name": "lc-project", "page_size": 50}).json()["results"]
    roots.extend(r for r in loose if not r["experiment_uuid"])
    page = watched.page
    response = page.goto("/logs?per=500")
    assert response is not None and response.status == 200
    listed = page.locator("#logs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.trace)")
    assert {r["trace_id"] for r in roots} <= set(listed)
    assert "min-1" in listed and "min-2" in listed and "min-2-child" not in listed
    minimal = page.locator('#logs tr[data-trace="min-2"]')
    assert minimal.locator(".status").inner_text() == "error"
    assert "ValueError: boom" in minimal.inner_text()
    page.goto("/logs?kind=loose&project=lc-project")
    assert page.locator("#logs tbody tr").count() == 3
    page.locator("#logs tbody tr a.log-name").first.click()
    page.wait_for_url(re.compile(r"/traces/"))
    assert any("GenericFakeChatModel" in n for n in page.locator(".span-name").all_inner_texts())


def test_a_langchain_chat_model_span_reads_as_a_conversation(watched: Watched, site: Any) -> None:
    """The official SDK's LangChain tracer, mapped by the server: the chat model's span shows the
    prompt it was sent and the model's reply, with its model name and tokens."""
    page = watched.page
    page.goto("/logs?kind=loose&project=lc-project&q=capital+of+France")
    assert page.locator("#logs tbody tr").count() == 1
    page.locator("#logs tbody tr a.log-name").click()
    page.wait_for_url(re.compile(r"/traces/"))
    llm = page.locator(".llm").first
    llm.locator("xpath=ancestor::details[1]").evaluate("d => d.open = true")
    messages = llm.locator("ol.conversation > li.msg")
    # the SDK's tracer hands the chat model's prompt over as one rendered text
    assert messages.locator(".role").all_inner_texts() == ["USER", "ASSISTANT"]
    assert messages.nth(0).inner_text().splitlines()[1:] == ["System: Answer in one word.", "Human: capital of France?"]
    assert messages.nth(1).inner_text() == "ASSISTANT\nParis 0"
    facts = page.locator("li.span", has=llm).locator("dl.facts").first.inner_text()
    assert "fake-gpt" in facts and "11 · 2 · 13" in facts


@pytest.mark.parametrize("name", ["sdk-local", "sdk-named", "lc-experiment", "minimal"])
def test_each_client_s_experiment_page_charts_its_runs(watched: Watched, site: Any, name: str) -> None:
    exp = _experiments(site[1])[name]
    same = [e for e in site[1].post("/experiments", json={}).json() if e["name"] == name]
    watched.page.goto("/")
    with watched.page.expect_navigation() as nav:
        watched.page.locator(f'tr[data-run="{exp["uuid"]}"] a.experiment-link').click()
    response = nav.value
    assert response is not None and response.status == 200, response and response.text()[:500]
    assert watched.page.locator("table.experiment-runs tbody tr").count() == len(same)
    for card in watched.page.locator(".trend-card.score").all():
        assert card.locator("a.run-point").count() <= len(same)
        assert card.locator("a.run-point title").count() == card.locator("a.run-point").count()
