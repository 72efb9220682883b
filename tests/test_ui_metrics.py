"""An experiment's page: its runs over time, against runs made by the runner through a server
(``tests.test_ui.populate``: a baseline and a candidate of ``support-bot``), in headless Chromium.

The figures must be the runs page's own: the test reads each run's mean and interval from the
runs page and finds the same digits in the chart's tooltips and in the table under it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ServerHandle, start_server
from tests.test_ui import populate
from tests.test_ui_logs import browser, shots  # noqa: F401  (fixtures)

pytest.importorskip("playwright.sync_api")

URL = "/experiment?project=helpdesk&name=support-bot"


@pytest.fixture(scope="module")
def site(db_module: str | Path) -> Iterator[tuple[ServerHandle, dict[str, str]]]:
    """The server over each store in turn (``db_module``: SQLite, then PostgreSQL)."""
    with start_server(db_module) as server:
        yield server, populate(server.base_url)


@pytest.fixture
def watched(browser: Any, site: tuple[ServerHandle, dict[str, str]]) -> Iterator[Any]:  # noqa: F811
    from tests.test_ui_browser import Watched

    context = browser.new_context(base_url=site[0].url, viewport={"width": 1400, "height": 900})
    w = Watched(context, site[0].url)
    yield w
    context.close()
    w.check()


def test_unknown_experiment_is_a_404(site: tuple[ServerHandle, dict[str, str]]) -> None:
    with httpx.Client(base_url=site[0].url) as web:
        response = web.get("/experiment?project=helpdesk&name=nope")
    assert (
        response.status_code == 404
        and "There is no experiment &#39;nope&#39; in project &#39;helpdesk&#39;" in response.text
    )


def test_each_score_over_time_with_the_runs_page_s_figures(watched: Any, site: Any) -> None:
    page = watched.page
    ids = site[1]
    page.goto("/")
    runs_page = {
        (uid, name): page.locator(f'tr[data-run="{uid}"] td.score-cell[data-score="{name}"]').inner_text()
        for uid in (ids["baseline"], ids["candidate"])
        for name in ("exact_match", "levenshtein")
    }
    page.locator(f'tr[data-run="{ids["baseline"]}"] a.experiment-link').click()
    page.wait_for_url(re.compile(r"/experiment\?"))
    assert page.locator("h1").inner_text().startswith("support-bot")
    cards = page.locator(".trend-card")
    metrics = cards.evaluate_all("cs => cs.map(c => c.dataset.metric)")
    assert metrics == [
        "exact_match",
        "levenshtein",
        "grounded",
        "latency per row (s)",
        "tokens per row",
        "cost per row ($)",
        "lev_vs_exact",
    ]
    for name in ("exact_match", "levenshtein"):
        card = page.locator(f'.trend-card[data-metric="{name}"]')
        points = card.locator("a.run-point")
        assert points.count() == 2
        assert card.locator("line.whisker").count() == 6  # a whisker and its two caps per run
        for i, uid in enumerate((ids["baseline"], ids["candidate"])):
            tip = points.nth(i).locator("title").text_content() or ""
            mean, low, high = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", runs_page[uid, name]).groups()  # type: ignore[union-attr]
            run_name = "baseline" if i == 0 else "candidate"
            assert tip.startswith(f"{run_name}: "), tip
            # the tooltip has three significant digits; the runs page's figures, rounded alike
            assert tip.split(": ")[1].split(" ")[0] == f"{float(mean):.3g}"
            assert f"[95% CI {float(low):.3g}, {float(high):.3g}]" in tip
            row = page.locator(f'table.experiment-runs tr[data-run="{uid}"]')
            assert f"{mean} [{low}, {high}]" in row.inner_text()

    # a click on a point opens its run
    page.locator('.trend-card[data-metric="exact_match"] a.run-point').nth(1).click()
    page.wait_for_url(re.compile(rf"/runs/{ids['candidate']}$"))
    page.go_back()
    # with "pick points", two clicks pick two runs, and Compare opens them (older as A)
    page.check("#pick-points")
    button = page.locator("#compare-button")
    assert button.is_disabled()
    page.locator('.trend-card[data-metric="levenshtein"] a.run-point').nth(1).click()
    page.locator('.trend-card[data-metric="grounded"] a.run-point').nth(0).click()
    assert page.url.endswith(URL) or "/experiment?" in page.url  # picking does not navigate
    assert page.locator("a.run-point.picked").count() == 2 * 7
    assert button.is_enabled()
    button.click()
    page.wait_for_url(re.compile(r"/compare\?a="))
    assert page.url.endswith(f"/compare?a={ids['baseline']}&b={ids['candidate']}")


def test_the_run_page_links_its_experiment(watched: Any, site: Any) -> None:
    page = watched.page
    page.goto(f"/runs/{site[1]['candidate']}")
    page.locator(".crumbs a", has_text="support-bot").click()
    page.wait_for_url(re.compile(r"/experiment\?"))
    assert page.locator("table.experiment-runs tbody tr").count() == 2


# -- the time axis: runs made at known, irregular times ------------------------------------------
#: when each run of ``nightly`` was made (UTC): 6.5 hours, then almost two days apart
RUN_TIMES = {
    "v1": dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.timezone.utc),
    "v2": dt.datetime(2024, 5, 1, 15, 30, tzinfo=dt.timezone.utc),
    "v3": dt.datetime(2024, 5, 3, 11, 0, tzinfo=dt.timezone.utc),
}
TIMELINE = "/experiment?project=timeline&name=nightly"


def texts(locator: Any) -> list[str]:
    """The text of each SVG element found (SVG text has no innerText)."""
    found: list[str] = locator.evaluate_all("es => es.map(e => e.textContent)")
    return found


@pytest.fixture(scope="module")
def timeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, dict[str, str]]]:
    """Three runs of one experiment made by the runner (embedded door) with the clock set to
    :data:`RUN_TIMES`, then a server on their file."""
    time_machine = pytest.importorskip("time_machine")
    from runner import Experiment, Score

    path = tmp_path_factory.mktemp("ui-timeline") / "runner.db"
    rows = [{"id": i, "question": f"question {i}", "target": str(i % 3)} for i in range(12)]
    ids = {}
    for k, (run, at) in enumerate(RUN_TIMES.items()):

        def answer(question: str, id: int, k: int = k) -> str:
            return str((id + k) % 3 if id % 4 else id % 3)

        def match(log: Any) -> Score:
            return Score("exact_match", float(log.output == log.target))

        with time_machine.travel(at, tick=True):
            result = Experiment(
                name="nightly", data=rows, func=answer, evals=[match], project_name="timeline", db=path
            ).run(run_name=run, quiet=True)
        ids[run] = result.experiment_uuid
    with start_server(path) as server:
        yield server, ids


def test_runs_are_placed_on_a_time_axis_by_when_they_ran(
    browser: Any, timeline: tuple[ServerHandle, dict[str, str]], shots: Path  # noqa: F811
) -> None:
    from tests.test_ui_browser import Watched

    server, ids = timeline
    context = browser.new_context(base_url=server.url, viewport={"width": 1400, "height": 900})
    watched = Watched(context, server.url)
    try:
        page = watched.page
        page.goto(TIMELINE)
        card = page.locator('.trend-card[data-metric="exact_match"]')
        ticks = card.locator("text.time-tick")
        # 50 hours of runs: a tick every 12 hours, the day named where it changes (UTC)
        assert texts(ticks) == ["May 1 12:00", "May 2 00:00", "12:00", "May 3 00:00", "12:00"]
        assert ticks.evaluate_all("ts => ts.map(t => t.dataset.time)") == [
            "2024-05-01T12:00:00+00:00",
            "2024-05-02T00:00:00+00:00",
            "2024-05-02T12:00:00+00:00",
            "2024-05-03T00:00:00+00:00",
            "2024-05-03T12:00:00+00:00",
        ]
        assert texts(card.locator("text.axis-label")) == ["UTC"]
        # each point where its run's time falls on that axis: not evenly spaced by index
        points = card.locator("a.run-point")
        assert points.evaluate_all("ps => ps.map(p => p.dataset.run)") == [ids["v1"], ids["v2"], ids["v3"]]
        xs = [float(x) for x in points.locator("circle.point").evaluate_all("cs => cs.map(c => c.getAttribute('cx'))")]
        tick_x = [float(x) for x in ticks.evaluate_all("ts => ts.map(t => t.getAttribute('x'))")]
        per_hour = (xs[2] - xs[0]) / 50
        assert xs[1] - xs[0] == pytest.approx(6.5 * per_hour, abs=0.2)
        assert tick_x[1] - xs[0] == pytest.approx(15 * per_hour, abs=0.2)  # May 2 00:00 is 15 h after v1
        assert tick_x[4] - tick_x[0] == pytest.approx(48 * per_hour, abs=0.2)
        # every chart of the page shares the axis
        for metric in ("latency per row (s)",):
            other = page.locator(f'.trend-card[data-metric="{metric}"] text.time-tick')
            assert texts(other) == texts(ticks)
        started = page.locator(f'table.experiment-runs tr[data-run="{ids["v2"]}"] td.when').inner_text()
        assert started.startswith("2024-05-01 15:30:")
        page.screenshot(path=shots / "experiment.png", full_page=True)
    finally:
        context.close()
    watched.check()
