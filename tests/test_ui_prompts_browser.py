"""The Prompts pages in a real headless Chromium (see ``tests/test_ui_browser.py``): the list, two
versions side by side with their diff, deploying and rolling back from the page (checked through
Parea's ``/deployed-prompt`` afterwards), and the prompt version of runs on the runs and compare
pages. Every test also checks that the browser asked nothing of any other host and logged no error."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ServerHandle, experiment, log, start_server
from tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS, Watched, playwright_api

V1 = {"model": "gpt-4o-mini", "provider": "openai", "model_params": {"temp": 0.2},
      "messages": [{"role": "user", "content": "Greet {{name}}."}]}
V2 = {"model": "gpt-4o-mini", "provider": "openai", "model_params": {"temp": 0.7},
      "messages": [{"role": "system", "content": "Be <b>warm</b>."}, {"role": "user", "content": "Greet {{name}}."}]}


@pytest.fixture
def site(db: str | Path) -> Iterator[tuple[ServerHandle, dict[str, str]]]:
    """Deployed prompts on a server over each store (``db``: SQLite, then PostgreSQL)."""
    with start_server(db) as server, httpx.Client(base_url=server.base_url + "/") as api:
        for spec, message in ((V1, "first"), (V2, "warmer")):
            assert api.post("/prompts", json={"name": "greeter", "prompt": spec, "message": message,
                                              "author": "ada"}).status_code == 200
        dep = api.post("/prompts/greeter/deploy", json={"version": 1}).json()["deployment_id"]
        ids = {"deployment": dep}
        for version, score in ((1, 0.0), (2, 1.0)):
            exp = experiment(api, "proj", "greet", run_name=f"greet-v{version}",
                             metadata={"prompt": f"greeter@{version}", "prompt_version": str(version)})
            for i in range(3):
                tid = f"v{version}-{i}"
                r = api.post("/trace_log", json=log(tid, experiment_uuid=exp["uuid"], inputs={"name": f"n{i}"},
                                                    output="hi", status="success", metadata={"row_id": str(i)},
                                                    scores=[{"name": "warm", "score": score}]))
                assert r.status_code == 200, r.text
            assert api.post(f"/experiment/{exp['uuid']}/finished", json={"status": "completed"}).status_code == 200
            ids[f"v{version}"] = exp["uuid"]
        yield server, ids


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def watched(browser: Any, site: tuple[ServerHandle, dict[str, str]]) -> Iterator[Watched]:
    context = browser.new_context(base_url=site[0].url, viewport={"width": 1400, "height": 900})
    w = Watched(context, site[0].url)
    yield w
    context.close()
    w.check()


def deployed_version(server: ServerHandle, deployment_id: str) -> float:
    r = httpx.post(f"{server.base_url}/deployed-prompt", json={"deployment_id": deployment_id})
    return float(r.json()["version_number"])


def test_prompts_list_versions_side_by_side_and_the_diff(watched: Watched, site: Any) -> None:
    page = watched.page
    dep = site[1]["deployment"]
    page.goto("/")
    page.click("header nav a:has-text('Prompts')")
    page.wait_for_url(re.compile(r"/prompts$"))
    row = page.locator('#prompts tr[data-prompt="greeter"] td')
    assert [row.nth(i).inner_text() for i in (0, 1, 2)] == ["greeter", "@2", "2"]
    assert row.nth(3).inner_text() == f"{dep} → @1"
    page.click("#prompts a:has-text('greeter')")
    page.wait_for_url(re.compile(r"/prompts/greeter$"))
    left, right = page.locator(".side-by-side .version").all()
    assert left.get_attribute("data-version") == "1" and right.get_attribute("data-version") == "2"
    assert "temp: 0.2" in left.locator("pre.spec").inner_text()
    assert "Be <b>warm</b>." in right.locator("pre.spec").inner_text()  # shown as text, not markup
    assert page.locator("pre.spec b").count() == 0
    assert "deployed" in left.locator("h3").inner_text() and "deployed" not in right.locator("h3").inner_text()
    assert page.locator("#diff .del").all_inner_texts() == ["-  temp: 0.2"]
    added = ["+  temp: 0.7", "+- role: system", "+  content: Be <b>warm</b>."]
    assert page.locator("#diff .add").all_inner_texts() == added
    # pick the same version twice: no differences
    page.select_option('form.pick select[name="a"]', "2")
    page.click("form.pick button")
    page.wait_for_url(re.compile(r"a=2&b=2"))
    assert page.locator("#diff").inner_text() == "No differences."
    assert page.locator("#versions tbody tr").count() == 2


def test_deploy_and_roll_back_from_the_page(watched: Watched, site: Any) -> None:
    page = watched.page
    server, ids = site
    dep = ids["deployment"]
    page.goto("/prompts/greeter")
    deployment = page.locator(f'.deployment[data-deployment="{dep}"]')
    assert deployment.locator(".serves").inner_text() == "@1"
    assert deployment.locator("button.rollback").is_disabled()  # never moved: nothing to roll back to

    page.select_option('#deploy-form select[name="version"]', "2")
    page.select_option('#deploy-form select[name="deployment_id"]', dep)
    page.click("#deploy-form button")
    page.wait_for_url(re.compile(r"done="))
    assert page.locator("#done").inner_text() == f"{dep} serves greeter@2"
    assert deployment.locator(".serves").inner_text() == "@2"
    first = deployment.locator("table.history tbody tr").first.locator("td")
    assert [first.nth(i).inner_text() for i in (1, 2, 3, 4)] == ["move", "@2", "@1", "web UI"]
    assert deployed_version(server, dep) == 2.0

    button = deployment.locator("button.rollback")
    assert button.inner_text() == "Roll back to @1"
    button.click()
    page.wait_for_url(re.compile(r"again"))
    assert page.locator("#done").inner_text() == f"{dep} serves greeter@1 again"
    assert deployment.locator(".serves").inner_text() == "@1"
    assert deployment.locator("table.history tbody tr").count() == 3
    assert deployed_version(server, dep) == 1.0


def test_runs_and_compare_show_each_runs_prompt_version(watched: Watched, site: Any) -> None:
    page = watched.page
    ids = site[1]
    page.goto("/")
    assert page.locator(f'tr[data-run="{ids["v1"]}"] .chip.prompt').inner_text() == "greeter@1"
    assert page.locator(f'tr[data-run="{ids["v2"]}"] .chip.prompt').inner_text() == "greeter@2"
    page.check(f'input[value="{ids["v1"]}"]')
    page.check(f'input[value="{ids["v2"]}"]')
    page.click("#compare-button")
    page.wait_for_url(re.compile(r"/compare\?a="))
    assert (page.locator("#prompt-a").inner_text(), page.locator("#prompt-b").inner_text()) == ("greeter@1",
                                                                                                "greeter@2")
    page.goto(f"/runs/{ids['v2']}")
    assert "prompt=greeter@2" in page.locator("p.meta").inner_text()


def test_a_form_posted_from_another_site_is_refused(site: Any) -> None:
    server, ids = site
    r = httpx.post(f"{server.url}/prompts/greeter/deploy", data={"version": "2", "deployment_id": ids["deployment"]},
                   headers={"origin": "https://evil.example"})
    assert r.status_code == 403
    assert deployed_version(server, ids["deployment"]) == 1.0
    r = httpx.post(f"{server.url}/prompts/greeter/deploy", data={"version": "7"}, headers={"origin": server.url})
    assert r.status_code == 404 and "has no version 7" in r.text
