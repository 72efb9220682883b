"""What a new user tripped on, in headless Chromium: the commands the UI suggests work as shown,
the Compare button fits a narrow screen, scores get their own sortable columns in the runs table,
a histogram's interval is a labelled whisker, and the compare page reads plainly (its header, its
difference chart's axis, outputs of A and B diff-highlighted, inputs as columns when few).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ServerHandle, start_server
from tests.test_ui import populate
from tests.test_ui_logs import browser  # noqa: F401  (fixture)

pytest.importorskip("playwright.sync_api")


def _watch(browser: Any, url: str, **options: Any) -> Any:  # noqa: F811
    from tests.test_ui_browser import Watched

    context = browser.new_context(base_url=url, **options)
    return context, Watched(context, url)


def test_the_empty_datasets_page_s_command_works_as_shown(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    """The page's command, run word for word in a shell-like split (FILE and NAME filled in) in a
    project folder, stores a dataset that the page served over that folder's store then lists.
    SQLite only: the command writes the folder's default store, which is a SQLite file."""
    with start_server(tmp_path / ".runner" / "runner.db") as server:
        context, w = _watch(browser, server.url)
        try:
            w.page.goto("/datasets")
            command = w.page.locator("#no-datasets code.command").inner_text()
            assert command == "python -m runner datasets upload FILE --name NAME"
            (tmp_path / "faq.csv").write_text("question,target\nhi?,hello\nbye?,goodbye\n")
            argv = [
                {"python": sys.executable, "FILE": "faq.csv", "NAME": "faq"}.get(a, a) for a in shlex.split(command)
            ]
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PAREA_", "RUNNER_"))}
            proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            w.page.reload()
            rows = w.page.locator("table.datasets tbody tr")
            assert rows.count() == 1 and rows.first.locator("td").nth(0).inner_text() == "faq"
            assert rows.first.locator("td").nth(1).inner_text() == "2"
        finally:
            context.close()
        w.check()


@pytest.fixture(scope="module")
def site(db_module: str | Path) -> Iterator[tuple[ServerHandle, dict[str, str]]]:
    """The server over each store in turn (``db_module``: SQLite, then PostgreSQL)."""
    with start_server(db_module) as server:
        yield server, populate(server.base_url)


def test_on_a_narrow_screen_the_compare_button_fits(browser: Any, site: Any) -> None:  # noqa: F811
    context, w = _watch(browser, site[0].url, viewport={"width": 375, "height": 800})
    try:
        w.page.goto("/")
        box = w.page.locator("#compare-button").bounding_box()
        one_line = w.page.locator("form.filters button").bounding_box()
        assert box is not None and one_line is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375
        assert abs(box["height"] - one_line["height"]) < 2  # its label is not squeezed onto two lines
        # the page itself does not scroll sideways: the wide table scrolls within its frame
        assert w.page.evaluate("document.documentElement.scrollWidth") <= 375
    finally:
        context.close()
    w.check()


def test_few_scores_get_their_own_sortable_columns_in_the_runs_table(browser: Any, site: Any) -> None:  # noqa: F811
    context, w = _watch(browser, site[0].url, viewport={"width": 1400, "height": 900})
    try:
        page = w.page
        page.goto("/")
        headers = page.locator("table.runs th.score-col").evaluate_all("hs => hs.map(h => h.dataset.sort)")
        assert headers == ["score:exact_match", "score:levenshtein", "score:grounded"]

        def column() -> list[str]:
            return [
                t.split(" ")[0]
                for t in page.locator('table.runs td.score-cell[data-score="exact_match"]').all_inner_texts()
            ]

        page.click('th[data-sort="score:exact_match"] a')
        page.wait_for_url(re.compile(r"sort=score%3Aexact_match$"))
        assert page.locator('th[data-sort="score:exact_match"]').get_attribute("aria-sort") == "ascending"
        ascending = column()
        assert [float(v) for v in ascending] == sorted(float(v) for v in ascending) and len(ascending) == 3
        page.click('th[data-sort="score:exact_match"] a')
        page.wait_for_url(re.compile(r"desc=1"))
        assert column() == ascending[::-1]
        # a run without the score sorts last either way
        page.click('th[data-sort="score:grounded"] a')
        page.wait_for_url(re.compile(r"sort=score%3Agrounded$"))
        assert page.locator("table.runs tbody tr").last.locator(".run-name").inner_text() == "sentiment-1"
        page.click('th[data-sort="score:grounded"] a')
        page.wait_for_url(re.compile(r"desc=1"))
        assert page.locator("table.runs tbody tr").last.locator(".run-name").inner_text() == "sentiment-1"
    finally:
        context.close()
    w.check()


def test_a_histogram_s_interval_is_a_labelled_whisker(browser: Any, site: Any) -> None:  # noqa: F811
    context, w = _watch(browser, site[0].url, viewport={"width": 1400, "height": 900})
    try:
        page = w.page
        page.goto(f"/runs/{site[1]['baseline']}")
        card = page.locator('.score-card[data-score="exact_match"]')
        figures = re.fullmatch(r"0\.545 \[(\S+), (\S+)\]", card.locator(".big").inner_text())
        assert figures is not None
        hist = card.locator("svg.hist")
        assert hist.locator("rect.band").count() == 0  # no shaded band that reads like a glitch
        assert hist.locator("g.whisker line").count() == 3  # the line and its two end caps
        low, high = (float(x) for x in figures.groups())
        assert hist.locator("text.ci-label").text_content() == f"95% CI [{low:.3g}, {high:.3g}]"
        assert hist.locator("circle.mean-dot").count() == 1
    finally:
        context.close()
    w.check()


def test_the_compare_page_reads_plainly(browser: Any, site: Any) -> None:  # noqa: F811
    context, w = _watch(browser, site[0].url, viewport={"width": 1400, "height": 900})
    ids = site[1]
    try:
        page = w.page
        page.goto(f"/compare?a={ids['baseline']}&b={ids['candidate']}")
        assert page.locator("h1").inner_text() == "Comparing candidate (B) against the baseline baseline (A)"
        # the difference chart has an axis labelled at zero and at both ends
        chart = page.locator('#compare-scores tr[data-score="exact_match"] svg.diff')
        ticks = chart.locator("text.tick").all_text_contents()
        assert len(ticks) == 3 and ticks[1] == "0" and ticks[0].startswith("-") and ticks[2].startswith("+")
        assert chart.locator("line.axis").count() == 1
        # inputs as columns (the dataset has id and question), outputs diff-highlighted
        changed = page.locator("section.improvements table.changes")
        assert changed.locator("th.input-col").all_inner_texts() == ["question", "id"] or changed.locator(
            "th.input-col"
        ).all_inner_texts() == ["id", "question"]
        # the baseline dropped the final period on some answers: there B's period alone is marked
        dropped = changed.locator("tbody tr", has=page.locator("td.out-b ins"))
        assert dropped.count() >= 1
        for i in range(dropped.count()):
            a, b = dropped.nth(i).locator("td.out-a"), dropped.nth(i).locator("td.out-b")
            assert a.locator("ins").count() == 0 and b.locator("del").count() == 0
            if not a.locator("del").count():
                assert b.locator("ins").all_inner_texts() == ["."]
                assert b.inner_text() == a.inner_text() + "."
    finally:
        context.close()
    w.check()
