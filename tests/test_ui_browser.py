"""The web UI in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Against a server holding real runs (made by the runner through the server, see ``test_ui.py``):
every page loads, the rows table sorts, filters and pages, a row opens its trace, two runs are
compared, and what the page displays is asserted. Every test also checks that the browser asked
nothing of any other host and logged no error (a Content-Security-Policy violation is one).

Screenshots of each page are taken along the way; set ``UI_SCREENSHOTS=docs/screenshots`` to
keep them (that is how the README's are made).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ServerHandle, start_server
from tests.test_ui import XSS, populate

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# the test command installs chromium; in CI (CI=true) a missing browser is a failure, not a skip
if not Path(CHROMIUM).exists():
    if os.environ.get("UI_BROWSER_REQUIRED") or os.environ.get("CI"):
        raise RuntimeError(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM_PATH)")
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

SHOTS = os.environ.get("UI_SCREENSHOTS")


@pytest.fixture(scope="module")
def site(db_module: str | Path) -> Iterator[tuple[ServerHandle, dict[str, str]]]:
    """The server over each store in turn (``db_module``: SQLite, then PostgreSQL)."""
    with start_server(db_module) as server:
        yield server, populate(server.base_url)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(SHOTS).resolve() if SHOTS else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Watched:
    """A page plus what it asked for and complained about."""

    def __init__(self, context: Any, origin: str) -> None:
        self.page = context.new_page()
        self.origin = origin
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def check(self) -> None:
        foreign = [u for u in self.requests if not u.startswith((self.origin + "/", "data:"))]
        assert not foreign, f"the page fetched from elsewhere: {foreign}"
        assert not self.errors, f"the browser logged errors: {self.errors}"


@pytest.fixture
def watched(browser: Any, site: tuple[ServerHandle, dict[str, str]]) -> Iterator[Watched]:
    context = browser.new_context(base_url=site[0].url, viewport={"width": 1400, "height": 900})
    w = Watched(context, site[0].url)
    yield w
    context.close()
    w.check()


def cells(page: Any, column: int) -> list[str]:
    """The text of one column of the rows table (0 is the row number)."""
    return [t.strip() for t in page.locator(f"#rows tbody tr td:nth-child({column + 1})").all_inner_texts()]


def test_runs_page_then_compare_two_runs(watched: Watched, site: Any, shots: Path) -> None:
    page = watched.page
    ids = site[1]
    page.goto("/")
    assert page.title() == "Runs · runner"
    runs = page.locator("table.runs tbody tr")
    assert runs.count() == 3
    assert runs.nth(0).locator(".run-name").inner_text() == "sentiment-1"  # newest first
    baseline = page.locator(f'tr[data-run="{ids["baseline"]}"]')
    assert baseline.locator("td").nth(5).inner_text() == "24"
    assert baseline.locator("td").nth(6).inner_text() == "2"
    cell = baseline.locator('td.score-cell[data-score="exact_match"]')
    assert re.fullmatch(r"0\.545 \[0\.3\d+, 0\.7\d+\]", cell.inner_text())
    page.screenshot(path=shots / "runs.png", full_page=True)

    button = page.locator("#compare-button")
    assert button.is_disabled()
    page.check(f'input[value="{ids["candidate"]}"]')
    assert button.is_disabled()
    page.check(f'input[value="{ids["baseline"]}"]')
    assert button.is_enabled()
    button.click()
    page.wait_for_url(re.compile(r"/compare\?a="))
    assert page.url.endswith(f"/compare?a={ids['baseline']}&b={ids['candidate']}")  # older run is A
    assert page.locator("h1").inner_text().startswith("Comparing candidate (B) against the baseline baseline (A)")
    row = page.locator('#compare-scores tr[data-score="exact_match"] td')
    assert [row.nth(i).inner_text() for i in (1, 2, 3)] == ["0.545", "0.955", "+0.409"]
    assert row.nth(8).inner_text() == "9 / 13 / 0"
    assert page.locator("svg.scatter").count() == 3
    assert page.locator("svg.scatter").first.locator("circle").count() >= 2
    assert page.locator("section.improvements tbody tr").count() == 10
    assert "No row regressed." in page.locator("section.regressions").inner_text()
    page.screenshot(path=shots / "compare.png", full_page=True)

    # a changed row opens its trace in either run
    page.locator("section.improvements tbody tr").first.locator("a", has_text="B").click()
    page.wait_for_url(re.compile(r"/traces/"))
    assert page.locator(".span-name").first.inner_text() == "answer_v2"


def test_run_page_sorts_filters_and_pages_the_rows(watched: Watched, site: Any, shots: Path) -> None:
    page = watched.page
    page.goto(f"/runs/{site[1]['baseline']}")
    assert page.locator("#n-total").inner_text() == "24"
    assert page.locator("#n-errors").inner_text() == "2"
    card = page.locator('.score-card[data-score="levenshtein"]')
    assert re.fullmatch(r"0\.949 \[0\.\d+, 0\.\d+\]", card.locator(".big").inner_text())
    assert "n = 22 scored of 24" in card.inner_text()
    assert card.locator("svg.hist rect.bar").count() >= 2
    assert page.locator("#rows tbody tr").count() == 24
    page.screenshot(path=shots / "run.png", full_page=True)

    # click a score's header: ascending, then descending; rows without the score stay last
    page.click('th[data-sort="score:levenshtein"] a')
    page.wait_for_url(re.compile(r"sort=score%3Alevenshtein$"))
    values = cells(page, 6)
    scored = [float(v) for v in values if v]
    assert scored == sorted(scored) and values[-2:] == ["", ""]
    assert page.locator('th[data-sort="score:levenshtein"]').get_attribute("aria-sort") == "ascending"
    page.click('th[data-sort="score:levenshtein"] a')
    page.wait_for_url(re.compile(r"desc=1"))
    scored = [float(v) for v in cells(page, 6) if v]
    assert scored == sorted(scored, reverse=True)
    # sorted by a text column
    page.click('th[data-sort="output"] a')
    page.wait_for_url(re.compile(r"sort=output"))
    assert cells(page, 4)[:2] == ["error", "error"]  # errored rows have no output: they sort first

    # errors only (the checkbox submits the form by itself), then a search, then pages of 10
    page.goto(f"/runs/{site[1]['baseline']}")
    page.check('input[name="errors"]')
    page.wait_for_url(re.compile(r"errors=1"))
    assert cells(page, 4) == ["error", "error"]
    assert page.locator("#rows-count").inner_text() == "rows 1–2 of 2 (filtered from 24)"
    page.uncheck('input[name="errors"]')
    page.wait_for_url(re.compile(r"^(?!.*errors=1)"))
    page.select_option('select[name="score"]', "exact_match")  # no threshold yet: nothing to apply
    page.fill('input[name="below"]', "1")
    page.fill('input[name="q"]', "settings")
    page.press('input[name="q"]', "Enter")
    page.wait_for_url(re.compile(r"q=settings"))
    assert cells(page, 5) and set(cells(page, 5)) == {"0.00"}
    assert all("Settings" in t for t in cells(page, 2))
    page.goto(f"/runs/{site[1]['baseline']}")
    page.select_option('select[name="per"]', "10")
    page.wait_for_url(re.compile(r"per=10"))
    assert cells(page, 0) == [str(i) for i in range(1, 11)]
    page.click('a[rel="next"]')
    page.wait_for_url(re.compile(r"page=2"))
    assert cells(page, 0) == [str(i) for i in range(11, 21)]
    assert page.locator("#rows-count").inner_text() == "rows 11–20 of 24"


def test_clicking_a_row_opens_its_trace(watched: Watched, site: Any, shots: Path) -> None:
    page = watched.page
    page.goto(f"/runs/{site[1]['baseline']}")
    drawer = page.locator("#drawer")
    assert drawer.is_hidden()
    page.locator("#rows tr.row.error").first.click()
    drawer.locator(".trace").wait_for()
    assert drawer.is_visible()
    assert drawer.locator(".span-name").all_inner_texts() == ["answer_v1", "retrieve"]
    traceback = drawer.locator("pre.traceback").inner_text()
    assert traceback.startswith("Traceback (most recent call last)")
    assert traceback.strip().endswith("RuntimeError: upstream model timed out after 30 s")
    assert "#trace=" in page.url
    page.screenshot(path=shots / "trace.png")
    page.keyboard.press("Escape")
    assert drawer.is_hidden() and "#trace=" not in page.url

    # a successful row: three spans, the LLM step with its tokens, cost and its own score
    page.locator("#rows tr.row", has_text="Pro plan cost").click()
    drawer.locator(".trace").wait_for()
    assert drawer.locator(".span-name").all_inner_texts() == ["answer_v1", "retrieve", "generate"]
    generate = drawer.locator("li.span", has_text="generate").last
    generate.locator("summary").first.click()  # children start folded
    assert "$0.0004" in generate.inner_text()
    assert re.search(r"grounded\s+1", generate.locator("table.span-scores").inner_text())
    assert drawer.locator("li.span svg.waterfall").count() == 3
    # the trace links to its own page, which reloads the run page with the drawer open
    page.click("#drawer-link", no_wait_after=True)
    page.wait_for_url(re.compile(r"/traces/"))
    assert page.locator(".span-name").all_inner_texts() == ["answer_v1", "retrieve", "generate"]
    page.go_back()
    page.reload()
    drawer.locator(".trace").wait_for()
    assert drawer.locator(".span-name").count() == 3


def test_untrusted_text_is_displayed_not_run(watched: Watched, site: Any) -> None:
    page = watched.page
    page.goto(f"/runs/{site[1]['baseline']}?q=__xss")
    assert page.locator("#rows tbody tr").count() == 1
    assert XSS in page.locator("#rows tbody tr td").nth(1).inner_text()
    assert page.locator("#rows tbody tr td").nth(3).inner_text() == f"You wrote {XSS}"
    page.locator("#rows tr.row").first.click()
    page.locator("#drawer .trace").wait_for()
    assert XSS in page.locator("#drawer pre.output").first.inner_text()
    assert page.evaluate("window.__xss") is None
    assert page.locator("#drawer img").count() == 0


def test_datasets_page(watched: Watched, site: Any, shots: Path) -> None:
    page = watched.page
    page.goto("/datasets")
    assert page.locator("table.datasets tbody tr").count() == 1
    page.click("text=support-faq")
    page.wait_for_url(re.compile(r"/datasets/\d+$"))
    assert page.locator("table.dataset-rows tbody tr").count() == 24
    assert page.locator("table.dataset-rows thead th").all_inner_texts() == ["#", "id", "question", "target", "tags"]
    first = page.locator("table.dataset-rows tbody tr").first.inner_text()
    assert "How do I reset my password?" in first and "Use the reset link on the login page." in first
    page.screenshot(path=shots / "datasets.png", full_page=True)


def test_with_keys_the_pages_ask_for_one_and_show_only_its_runs(browser: Any, db: str | Path) -> None:
    with start_server(db, api_keys=["key-a", "key-b"]) as server:
        mine = populate(server.base_url, "key-a", prefix="alpha-")
        populate(server.base_url, "key-b", prefix="beta-")
        context = browser.new_context(base_url=server.url)
        w = Watched(context, server.url)
        page = w.page
        page.goto("/")
        page.wait_for_url(re.compile(r"/login\?next=%2F$"))
        page.fill('input[name="key"]', "wrong")
        page.click("button[type=submit]")
        assert "not accepted" in page.locator("p.notice").inner_text()
        w.errors.clear()  # the browser logs the 401 of the refused login itself
        page.fill('input[name="key"]', "key-a")
        page.click("button[type=submit]")
        page.wait_for_url(server.url + "/")
        shown = {r.get_attribute("data-run") for r in page.locator("table.runs tbody tr").all()}
        assert shown == set(mine.values())
        assert "beta-" not in page.content()
        page.click("text=Log out")
        page.wait_for_url(re.compile(r"/login$"))
        context.close()
        w.check()
