"""The web UI over HTTP (no browser): every page against a server holding real runs.

The runs are made by the runner itself through the server (``Experiment(..., base_url=...)``):
a support bot answering a named dataset twice (a baseline and a candidate to compare), with
nested ``@trace`` spans, token usage, a child-span score, rows that raise, and a question that
is an XSS payload; plus a run in another project. Pages are read with httpx; what the browser
does with them (sorting by clicking, the trace drawer) is in ``test_ui_browser.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest

from evals import exact_match, levenshtein
from evals.dataset import pearson
from runner import Experiment, Score, current_span, trace
from runner.cli.datasets import upload_dataset
from runner.results.format import num
from runner.store import Store
from tests.servers import ServerHandle, start_server

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'

#: the questions of the named dataset ``support-faq``
QUESTIONS: list[dict[str, Any]] = [
    {"id": f"q{i:02d}", "question": q, "target": t}
    for i, (q, t) in enumerate(
        [
            ("How do I reset my password?", "Use the reset link on the login page."),
            ("Can I change my username?", "Usernames cannot be changed."),
            ("How much does the Pro plan cost?", "The Pro plan costs $12 per month."),
            ("Is there a student discount?", "Students get 50% off with a school email."),
            ("How do I cancel my subscription?", "Cancel any time under Settings > Billing."),
            ("Can I get a refund for last month?", "Refunds are possible within 30 days."),
            ("Which browsers are supported?", "The latest Chrome, Firefox, Safari and Edge."),
            ("Do you have an iOS app?", "Yes, on the App Store."),
            ("How do I export my data?", "Use Export under Settings > Data."),
            ("Where are your servers?", "In Frankfurt and Oregon."),
            ("Is my data encrypted?", "Yes, with AES-256 at rest."),
            ("How do I invite a teammate?", "Invite people under Team > Members."),
            (XSS, "This is not a question."),
            ("What is the upload limit?", "Files up to 5 GB."),
            ("How do I enable two-factor login?", "Turn it on under Settings > Security."),
            ("Can I pay by invoice?", "Invoices are available on the Business plan."),
            ("Do you offer a free trial?", "Every plan has a 14-day free trial."),
            ("How do I delete my account?", "Delete it under Settings > Account."),
            ("Is there an API?", "Yes, see the developer docs."),
            ("Can I use my own domain?", "Custom domains are on the Pro plan."),
            ("Why was my refund denied?", "Refunds after 30 days are not possible."),
            ("How do I contact support?", "Write to support@example.com."),
            ("Is there a dark mode?", "Yes, under Settings > Appearance."),
            ("How many projects can I create?", "Unlimited projects on every plan."),
        ],
        start=1,
    )
]

KNOWN = {row["question"]: row["target"] for row in QUESTIONS}


@trace
def retrieve(question: str) -> list[str]:
    """Pretend retrieval: the documents the answer is drawn from."""
    return [f"kb/{len(question) % 7}.md", "kb/billing.md"]


@trace(eval_funcs=[lambda log: Score("grounded", 1.0 if log.output and "." in str(log.output) else 0.0)])
def generate(question: str, docs: list[str], careful: bool) -> str:
    """Pretend LLM call: records tokens and cost on its span."""
    span = current_span()
    if span is not None:
        span.record_usage(input_tokens=40 + len(question), output_tokens=12, cost=0.0004)
    answer = KNOWN.get(question, "I am not sure.")
    if question == XSS:
        return f"You wrote {question}"
    if not careful and len(question) % 3 == 0:
        return answer.rstrip(".")  # the baseline drops the final period on some answers
    return answer


def answer_v1(question: str, id: str) -> str:
    docs = retrieve(question)
    if "refund" in question.lower():
        raise RuntimeError("upstream model timed out after 30 s")
    return generate(question, docs, careful=False)


def answer_v2(question: str, id: str) -> str:
    docs = retrieve(question)
    if "refund denied" in question.lower():
        raise RuntimeError("upstream model timed out after 30 s")
    return generate(question, docs, careful=True)


def classify(text: str) -> str:
    return "positive" if "good" in text else "negative"


def populate(base_url: str, api_key: str | None = None, *, prefix: str = "") -> dict[str, str]:
    """Real runs through the server at ``base_url``: run uuids by name ("baseline", ...)."""
    upload_dataset(QUESTIONS, f"{prefix}support-faq", base_url=base_url, api_key=api_key)
    common: dict[str, Any] = dict(
        name=f"{prefix}support-bot",
        data=f"{prefix}support-faq",
        evals=[exact_match, levenshtein],
        dataset_level_evals=[pearson("levenshtein", "exact_match", name="lev_vs_exact")],
        project_name=f"{prefix}helpdesk",
        base_url=base_url,
        api_key=api_key,
        metadata={"model": "faq-1"},
    )
    baseline = Experiment(func=answer_v1, **common).run(run_name="baseline", quiet=True)
    candidate = Experiment(func=answer_v2, **common).run(run_name="candidate", quiet=True)
    sentiment = Experiment(
        name=f"{prefix}sentiment",
        data=[
            {"text": "good stuff", "target": "positive"},
            {"text": "bad", "target": "negative"},
            {"text": "not good", "target": "negative"},
        ],
        func=classify,
        evals=[exact_match],
        project_name=f"{prefix}reviews",
        base_url=base_url,
        api_key=api_key,
    ).run(run_name="sentiment-1", quiet=True)
    return {
        "baseline": baseline.experiment_uuid,
        "candidate": candidate.experiment_uuid,
        "sentiment": sentiment.experiment_uuid,
    }


@pytest.fixture(scope="module")
def site(db_module: str | Path) -> Iterator[tuple[ServerHandle, dict[str, str]]]:
    with start_server(db_module) as server:
        yield server, populate(server.base_url)


@pytest.fixture
def web(site: tuple[ServerHandle, dict[str, str]]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site[0].url, timeout=30) as client:
        yield client


def text(html: str) -> str:
    """The visible text of a page, roughly: tags dropped, entities decoded, spaces collapsed."""
    html = re.sub(r"<(head|script|style|svg)\b.*?</\1>", " ", html, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def row_cells(html: str) -> list[list[str]]:
    """The rows table's cells, as text."""
    body = html.split('id="rows"', 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r'<tr class="row[^"]*" data-trace="[^"]+">(.*?)</tr>', body, flags=re.S)
    return [[text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.S)] for r in rows]


def uuids(site: tuple[ServerHandle, dict[str, str]]) -> dict[str, str]:
    return site[1]


def store_of(site: tuple[ServerHandle, dict[str, str]]) -> Store:
    assert site[0].store is not None
    return site[0].store


def find_trace(store: Store, run: str, question_part: str) -> str:
    for r in store.experiment_rows(run):
        if question_part in r["inputs"]["question"]:
            return str(r["trace_id"])
    raise AssertionError(f"no row asking {question_part!r}")


# -- the runs page --------------------------------------------------------------------------------
def test_runs_page_lists_every_run_newest_first_with_intervals(site: Any, web: httpx.Client) -> None:
    from runner.results.stored import rebuild_result

    page = web.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    order = re.findall(r'<tr data-run="([^"]+)"', page.text)
    ids = uuids(site)
    assert order == [ids["sentiment"], ids["candidate"], ids["baseline"]]
    body = text(page.text)
    for project in ("helpdesk", "reviews"):
        assert project in body
    # the baseline's row: 24 rows, 2 errors, each score's mean with the interval `show` prints
    store = store_of(site)
    exp = store.get_experiment(ids["baseline"])
    result = rebuild_result(exp, store.experiment_rows(ids["baseline"]), "x")
    row = page.text.split(f'<tr data-run="{ids["baseline"]}">', 1)[1].split("</tr>", 1)[0]
    cells = [text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)]
    assert cells[3:7] == ["baseline", "completed", "24", "2"]
    for i, (name, s) in enumerate(result.scores.items()):  # few scores: one column each
        assert cells[7 + i] == f"{num(s.mean)} [{num(s.ci_low)}, {num(s.ci_high)}]", name
    assert cells[7 + len(result.scores) + 1].startswith("$")  # the generate spans' cost, rolled up


def test_runs_page_filters_by_project_and_name(site: Any, web: httpx.Client) -> None:
    ids = uuids(site)
    by_project = web.get("/", params={"project": "reviews"}).text
    assert re.findall(r'<tr data-run="([^"]+)"', by_project) == [ids["sentiment"]]
    by_name = web.get("/", params={"q": "CANDI"}).text
    assert re.findall(r'<tr data-run="([^"]+)"', by_name) == [ids["candidate"]]
    by_experiment = web.get("/", params={"q": "support", "project": "helpdesk"}).text
    assert re.findall(r'<tr data-run="([^"]+)"', by_experiment) == [ids["candidate"], ids["baseline"]]
    assert "No run matches these filters." in web.get("/", params={"q": "nothing-like-this"}).text


# -- the run page ---------------------------------------------------------------------------------
def test_run_summary_is_the_one_show_prints(site: Any, web: httpx.Client) -> None:
    """Same means, intervals and counts as ``python -m runner show``, computed the same way."""
    from runner.results.stored import rebuild_result
    from runner.server.ui.runs import RunView

    store = store_of(site)
    ids = uuids(site)
    for run in ("baseline", "candidate"):
        assert store.run_logs(ids[run]) == store.experiment_rows(ids[run])  # what the comparison reads
        exp = store.get_experiment(ids[run])
        expected = rebuild_result(exp, store.experiment_rows(ids[run]), "x")
        view = RunView.build(store, exp, (), "")
        assert view.summaries == expected.scores
        assert (view.n_total, view.n_errors) == (expected.n_total, expected.n_errors)
        assert view.latency_stats == expected.stats["latency"]
        assert view.cost == pytest.approx(expected.stats["cost"])
        assert view.total_tokens == expected.stats["total_tokens"] > 0
    page = web.get(f"/runs/{ids['baseline']}")
    assert page.status_code == 200
    body = text(page.text)
    expected = rebuild_result(store.get_experiment(ids["baseline"]), store.experiment_rows(ids["baseline"]), "x")
    for name, s in expected.scores.items():
        card = text(page.text.split(f'data-score="{name}">', 1)[1].split("</div>", 1)[0])
        assert f"{num(s.mean)} [{num(s.ci_low)}, {num(s.ci_high)}]" in card
        assert f"n = {s.n} scored of {s.n_total}" in card
    assert "row-trials 24 errored 2" in body
    assert "latency p50" in body and "latency p95" in body
    (dls,) = store.get_experiment(ids["baseline"])["dataset_level_stats"]
    table = text(page.text.split('class="grid compact dataset-level"', 1)[1].split("</table>", 1)[0])
    assert f"lev_vs_exact {dls['score']:.4g}" in table and dls["reason"] in table
    assert page.text.count('<svg class="chart hist"') == 3  # exact_match, levenshtein, grounded
    assert "grounded" in body  # scored on the generate span, rolled up to the rows


def test_rows_sort_by_any_column(site: Any, web: httpx.Client) -> None:
    run = uuids(site)["baseline"]
    header = web.get(f"/runs/{run}").text.split('id="rows"', 1)[1].split("</thead>", 1)[0]
    columns = [text(c) for c in re.findall(r"<th[^>]*>(.*?)</th>", header, flags=re.S)]
    assert columns == [
        "# ▲",
        "inputs",
        "target",
        "output",
        "status",
        "exact_match",
        "levenshtein",
        "grounded",
        "latency",
    ]

    cells = row_cells(web.get(f"/runs/{run}", params={"sort": "score:levenshtein", "desc": "1"}).text)
    values = [c[6] for c in cells]
    scored = [float(v) for v in values if v]
    assert scored == sorted(scored, reverse=True) and len(scored) == 22
    assert values[-2:] == ["", ""]  # rows without the score (errors) come last either way

    cells = row_cells(web.get(f"/runs/{run}", params={"sort": "score:levenshtein"}).text)
    assert [float(c[6]) for c in cells[:22]] == sorted(scored)

    cells = row_cells(web.get(f"/runs/{run}", params={"sort": "status"}).text)
    assert [c[4] for c in cells[:3]] == ["error", "error", "success"]

    cells = row_cells(web.get(f"/runs/{run}", params={"sort": "latency", "desc": "1"}).text)
    assert len(cells) == 24

    cells = row_cells(web.get(f"/runs/{run}", params={"sort": "target"}).text)
    targets = [c[2] for c in cells]
    assert targets == sorted(targets)

    cells = row_cells(web.get(f"/runs/{run}", params={"sort": "row", "desc": "1"}).text)
    assert [c[0] for c in cells][:3] == ["24", "23", "22"]


def test_rows_filters_combine(site: Any, web: httpx.Client) -> None:
    run = uuids(site)["baseline"]
    errors = row_cells(web.get(f"/runs/{run}", params={"errors": "1"}).text)
    assert [c[4] for c in errors] == ["error", "error"]
    assert all("RuntimeError: upstream model timed out" in c[3] for c in errors)

    below = row_cells(web.get(f"/runs/{run}", params={"score": "levenshtein", "below": "0.975"}).text)
    assert below and all(float(c[6]) < 0.975 for c in below)
    assert len(below) == 9

    found = web.get(f"/runs/{run}", params={"q": "REFUND"}).text
    assert [c[4] for c in row_cells(found)] == ["error", "error"]
    assert "rows 1–2 of 2 (filtered from 24)" in text(found)

    both = row_cells(web.get(f"/runs/{run}", params={"q": "settings", "score": "exact_match", "below": "1"}).text)
    assert both and all("Settings" in c[2] and c[5] == "0.00" for c in both)

    # search is for text, not patterns: LIKE's wildcards and JSON's escapes match literally
    assert row_cells(web.get(f"/runs/{run}", params={"q": "50%"}).text)[0][2].startswith("Students get 50%")
    assert row_cells(web.get(f"/runs/{run}", params={"q": "%"}).text)[0][2].startswith("Students get 50%")
    # an underscore is in the tracebacks (`_call_sync`) and the XSS payload only, not "any character"
    assert len(row_cells(web.get(f"/runs/{run}", params={"q": "_"}).text)) == 3
    assert len(row_cells(web.get(f"/runs/{run}", params={"q": 'onerror="'}).text)) == 1
    assert "no rows match" in web.get(f"/runs/{run}", params={"q": "zebra crossing"}).text


def test_rows_are_paginated_on_the_server(site: Any, web: httpx.Client) -> None:
    run = uuids(site)["baseline"]
    first = web.get(f"/runs/{run}", params={"per": "10"}).text
    assert [c[0] for c in row_cells(first)] == [str(i) for i in range(1, 11)]
    assert "rows 1–10 of 24" in text(first) and "page 1 of 3" in text(first)
    assert 'rel="next"' in first and 'rel="prev"' not in first
    last = web.get(f"/runs/{run}", params={"per": "10", "page": "3"}).text
    assert [c[0] for c in row_cells(last)] == ["21", "22", "23", "24"]
    # a page past the end shows the last page; the sort and filters stay in the pager's links
    past = web.get(f"/runs/{run}", params={"per": "10", "page": "99"}).text
    assert [c[0] for c in row_cells(past)] == ["21", "22", "23", "24"]
    sorted_page = web.get(f"/runs/{run}", params={"per": "5", "sort": "score:levenshtein", "q": "?"}).text
    assert "sort=score%3Alevenshtein" in sorted_page.split('rel="next"')[0].rsplit("<a", 1)[1]


def test_bad_query_parameters_are_named_not_errors(site: Any, web: httpx.Client) -> None:
    run = uuids(site)["baseline"]
    page = web.get(f"/runs/{run}", params={"sort": "nonsense", "below": "abc", "page": "x", "score": "nope"})
    assert page.status_code == 200
    body = text(page.text)
    assert "cannot sort by 'nonsense'" in body
    assert "'score below' needs a number" in body
    assert "page must be a whole number" in body
    assert len(row_cells(page.text)) == 24
    trace = find_trace(store_of(site), run, "API")
    for url in ("/?page=x", "/datasets/support-faq?page=-3", f"/traces/{trace}?partial=no"):
        assert web.get(url).status_code == 200, url


# -- traces ---------------------------------------------------------------------------------------
def test_trace_shows_spans_scores_usage_and_traceback(site: Any, web: httpx.Client) -> None:
    store = store_of(site)
    run = uuids(site)["baseline"]
    failed = web.get(f"/traces/{find_trace(store, run, 'refund for last month')}")
    assert failed.status_code == 200
    body = text(failed.text)
    assert "answer_v1 error" in body and "retrieve success" in body
    assert "Traceback (most recent call last)" in body
    assert 'raise RuntimeError("upstream model timed out after 30 s")' in body
    assert f'href="/runs/{run}"' in failed.text

    ok_id = find_trace(store, run, "Pro plan cost")
    ok = web.get(f"/traces/{ok_id}")
    body = text(ok.text)
    spans = re.findall(r'<span class="span-name">(.*?)</span>', ok.text)
    assert spans == ["answer_v1", "retrieve", "generate"]
    assert 'class="span depth-1' in ok.text  # children are indented under the root
    assert "grounded 1" in body  # the generate span's own score
    tokens_in = 40 + len("How much does the Pro plan cost?")
    assert f"tokens in · out · total {tokens_in} · 12 · {tokens_in + 12}" in body  # generate's usage
    assert "$0.0004" in body
    assert "The Pro plan costs $12 per month" in body

    # a child's id opens its whole tree, with the child marked; the fragment has no page around it
    child = next(c for c in store.get_trace_tree(ok_id)["children_logs"] if c["trace_name"] == "generate")
    fragment = web.get(f"/traces/{child['trace_id']}", params={"partial": "1"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert re.findall(r'<span class="span-name">(.*?)</span>', fragment.text) == ["answer_v1", "retrieve", "generate"]
    assert f'selected" data-span="{child["trace_id"]}"' in fragment.text


# -- compare --------------------------------------------------------------------------------------
def test_compare_two_runs(site: Any, web: httpx.Client) -> None:
    from runner.results.compare import compare_rows
    from runner.results.format import signed

    store = store_of(site)
    ids = uuids(site)
    expected = compare_rows(store.experiment_rows(ids["baseline"]), store.experiment_rows(ids["candidate"]), top=10)
    # ticking two runs on the runs page sends ?run=&run=: the older one becomes the baseline A
    picked = web.get("/compare", params=[("run", ids["candidate"]), ("run", ids["baseline"])])
    assert picked.status_code == 303
    assert picked.headers["location"] == f"/compare?a={ids['baseline']}&b={ids['candidate']}"
    page = web.get(picked.headers["location"])
    assert page.status_code == 200
    assert text(page.text).startswith(
        "runner Runs Logs Compare Datasets Prompts Runs › compare"
        " Comparing candidate (B) against the baseline baseline (A)"
    )
    for s in expected.scores:
        row = text(page.text.split(f'<tr data-score="{s.name}">', 1)[1].split("</tr>", 1)[0])
        assert f"{signed(s.diff)} [{signed(s.diff_ci_low)}, {signed(s.diff_ci_high)}]" in row  # one format
        p = "<0.001" if s.p_value < 0.001 else f"{s.p_value:.3f}"
        assert p in row and f"{s.wins} / {s.ties} / {s.losses}" in row
    assert page.text.count('<svg class="chart scatter"') == len(expected.scores)
    improved = page.text.split('<section class="improvements">', 1)[1]
    assert improved.split("<tbody>", 1)[1].count("<tr>") == len(expected.improvements) > 0
    assert "No row regressed." in page.text
    assert "p-values are Holm-adjusted across the 3 scores compared." in text(page.text)
    # the changed rows link to their traces in both runs
    links = re.findall(r'href="/traces/([^"]+)">([AB])</a>', improved)
    assert {label for _, label in links} == {"A", "B"}
    assert all(web.get(f"/traces/{t}").status_code == 200 for t, _ in links[:2])


def test_compare_needs_two_runs(site: Any, web: httpx.Client) -> None:
    ids = uuids(site)
    assert "Compare two runs" in web.get("/compare").text
    one = web.get("/compare", params={"run": ids["baseline"]})
    assert one.status_code == 400 and "Select exactly two runs" in one.text
    assert web.get("/compare", params={"a": ids["baseline"], "b": "no-such-run"}).status_code == 404


# -- datasets -------------------------------------------------------------------------------------
def test_datasets_and_their_rows(site: Any, web: httpx.Client) -> None:
    listing = web.get("/datasets")
    assert listing.status_code == 200
    assert "support-faq" in text(listing.text) and ">24<" in listing.text
    ds_id = re.search(r'href="/datasets/(\d+)">support-faq<', listing.text)
    assert ds_id is not None
    page = web.get(f"/datasets/{ds_id.group(1)}")
    assert page.status_code == 200
    body = text(page.text)
    assert "24 row(s)" in body
    assert "How do I reset my password?" in body and "Use the reset link on the login page." in body
    by_name = web.get("/datasets/support-faq")
    assert by_name.status_code == 200 and "How do I reset my password?" in by_name.text
    assert web.get("/datasets/nope").status_code == 404


# -- safety ---------------------------------------------------------------------------------------
def test_user_data_is_shown_as_text_never_as_markup(site: Any, web: httpx.Client) -> None:
    store = store_of(site)
    ids = uuids(site)
    xss_trace = find_trace(store, ids["baseline"], "<script>")
    for url in (
        f"/runs/{ids['baseline']}?q=script",
        f"/traces/{xss_trace}",
        f"/traces/{xss_trace}?partial=1",
        "/datasets/support-faq",
    ):
        html = web.get(url).text
        assert "<script>window" not in html and "<img src=x" not in html, url
        assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html, url


def test_pages_load_nothing_from_elsewhere(site: Any, web: httpx.Client) -> None:
    page = web.get(f"/runs/{uuids(site)['baseline']}")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert not re.search(r'(src|href)="(https?:)?//', page.text)
    assert ' style="' not in page.text  # the CSP forbids inline styles: charts use classes
    css = web.get("/static/ui.css")
    js = web.get("/static/ui.js")
    assert css.status_code == js.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "http" not in css.text and "http" not in js.text


def test_unknown_things_are_404_pages(site: Any, web: httpx.Client) -> None:
    for url in ("/runs/nope", "/traces/nope", "/datasets/999"):
        page = web.get(url)
        assert page.status_code == 404, url
        assert page.headers["content-type"].startswith("text/html")
    # the API keeps its JSON errors
    api = web.get("/api/parea/v1/experiment/nope/stats")
    assert api.status_code == 404 and api.json() == {"detail": "experiment nope not found"}


# -- keys -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tenants(db_module: str | Path) -> Iterator[tuple[ServerHandle, dict[str, str], dict[str, str]]]:
    with start_server(db_module, api_keys=["key-a", "key-b"]) as server:
        a = populate(server.base_url, "key-a", prefix="alpha-")
        b = populate(server.base_url, "key-b", prefix="beta-")
        yield server, a, b


def _web(server: ServerHandle) -> httpx.Client:
    """A client on the pages that posts its forms the way a browser on them does (same Origin)."""
    return httpx.Client(base_url=server.url, headers={"origin": server.url})


def test_pages_ask_for_a_key(tenants: Any) -> None:
    server, a, _ = tenants
    with _web(server) as web:
        for url in ("/", f"/runs/{a['baseline']}", "/datasets", "/compare"):
            page = web.get(url)
            assert page.status_code == 303, url
            assert page.headers["location"].startswith("/login?next=")
        login = web.get("/login", params={"next": "/datasets"})
        assert login.status_code == 200 and 'name="key"' in login.text
        wrong = web.post("/login", data={"key": "nope", "next": "/datasets"})
        assert wrong.status_code == 401 and "not accepted" in wrong.text
        assert "runner_session" not in wrong.headers.get("set-cookie", "")
        right = web.post("/login", data={"key": "key-a", "next": "/datasets"})
        assert right.status_code == 303 and right.headers["location"] == "/datasets"
        cookie = right.headers["set-cookie"]
        assert "runner_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "key-a" not in cookie  # a signed session, never the key
        assert "alpha-support-faq" in web.get("/datasets").text
        # the cookie opens the pages, not the API: that still wants the header
        assert web.post("/api/parea/v1/experiments", json={}).status_code == 401
        assert web.get("/logout").status_code == 405  # a link or an image cannot log you out
        out = web.post("/logout")
        assert out.status_code == 303
        assert web.get("/datasets").status_code == 303


def test_a_key_in_a_link_is_never_used(tenants: Any) -> None:
    server, a, _ = tenants
    with _web(server) as web:
        first = web.get(f"/runs/{a['baseline']}", params={"key": "key-a", "sort": "status"})
        assert first.status_code == 303
        assert first.headers["location"].startswith("/login?next=")
        assert "set-cookie" not in first.headers
        assert "key-a" not in first.headers["location"]
        form = web.get(first.headers["location"])
        assert form.status_code == 200 and "Keys in links are not accepted" in form.text


def test_login_only_returns_to_this_site(tenants: Any) -> None:
    server, _, _ = tenants
    with _web(server) as web:
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            response = web.post("/login", data={"key": "key-a", "next": target})
            assert response.headers["location"] == "/", target


def test_each_key_sees_only_its_own_runs(tenants: Any) -> None:
    server, a, b = tenants
    with _web(server) as web:
        web.post("/login", data={"key": "key-a"})
        runs = web.get("/").text
        assert set(re.findall(r'<tr data-run="([^"]+)"', runs)) == set(a.values())
        assert "beta-" not in runs
        store = server.store
        owner_b = __import__("runner.server.auth", fromlist=["key_owner"]).key_owner("key-b")
        b_trace = next(r["trace_id"] for r in store.experiment_rows(b["baseline"], owner_b))
        b_dataset = store.list_datasets(owner_b)[0]["id"]
        for url in (
            f"/runs/{b['baseline']}",
            f"/traces/{b_trace}",
            f"/traces/{b_trace}?partial=1",
            f"/datasets/{b_dataset}",
            "/datasets/beta-support-faq",
            f"/compare?a={a['baseline']}&b={b['candidate']}",
        ):
            assert web.get(url).status_code == 404, url
        assert "beta-" not in web.get("/datasets").text
        assert web.get("/compare", params=[("run", a["baseline"]), ("run", b["baseline"])]).status_code == 404
        # and the other way round
        web.post("/login", data={"key": "key-b"})
        assert set(re.findall(r'<tr data-run="([^"]+)"', web.get("/").text)) == set(b.values())
        assert web.get(f"/runs/{a['baseline']}").status_code == 404


# -- the cache ------------------------------------------------------------------------------------
def test_a_run_view_is_reused_until_the_run_changes(db: str | Path) -> None:
    from runner.server.ui.runs import RunCache

    store = Store(db)
    try:
        result = Experiment(
            name="tiny",
            data=[{"x": i, "target": str(i)} for i in range(5)],
            func=lambda x: str(x),
            evals=[exact_match],
            db=db,
        ).run(run_name="r1", quiet=True)
        cache = RunCache()
        exp = store.get_experiment(result.experiment_uuid)
        first = cache.get(store, exp, "")
        assert cache.get(store, exp, "") is first
        assert first.n_total == 5 and first.summaries["exact_match"].mean == 1.0
        # a log added after the run finished (e.g. by another client) is seen on the next view
        row = store.experiment_rows(result.experiment_uuid)[0]
        store.upsert_traces(
            [
                {
                    **row,
                    "trace_id": "extra",
                    "parent_trace_id": "extra",
                    "root_trace_id": "extra",
                    "scores": [{"name": "exact_match", "score": 0.0}],
                }
            ]
        )
        second = cache.get(store, exp, "")
        assert second is not first and second.n_total == 6
        # the added log carries row 0's row_id: a second trial of that row, so the mean over
        # rows of each row's mean is (0.5 + 4) / 5 (issue 15: one estimand)
        assert second.summaries["exact_match"].mean == pytest.approx(0.9)
        # so is a score changed later (PUT /trace_log rewrites the log, under a new rowid)
        store.update_trace(row["trace_id"], {"scores": [{"name": "exact_match", "score": 0.0}]})
        third = cache.get(store, exp, "")
        assert third.summaries["exact_match"].mean == pytest.approx(0.8)  # row 0: both trials 0
    finally:
        store.close()


def test_big_runs_are_listed_with_their_pinned_means_until_read(site: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """As ``runner list``: the runs page does not read every big run to list it."""
    from runner.server.ui import runs

    monkeypatch.setattr(runs, "LIST_MAX_ROWS", 5)
    store = store_of(site)
    exp = store.get_experiment(uuids(site)["baseline"])
    cache = runs.RunCache()
    quick = runs.listing(cache, store, exp, "")
    assert not quick.exact and (quick.n_total, quick.n_errors) == (24, 2)
    assert quick.scores["exact_match"][0] == pytest.approx(12 / 22) and quick.scores["exact_match"][1] is None
    assert runs.listing(cache, store, exp, "") is quick  # kept until the run changes
    assert quick.cost == pytest.approx(cache.get(store, exp, "").cost)
    full = runs.listing(cache, store, exp, "")  # once the run's page has read it, its intervals show
    assert full.exact and full.scores["exact_match"][1] is not None
    assert full.scores["exact_match"][0] == pytest.approx(quick.scores["exact_match"][0])


# -- the store's reads for the pages --------------------------------------------------------------
def test_store_page_queries(db: str | Path) -> None:
    store = Store(db)
    try:
        project = store.project_uuid("p")
        exp = store.create_experiment(name="e", project_uuid=project)["uuid"]
        outputs = ["100% sure", "a_b", "plain", 'say "hi"\nthen go', "Ünïcode ✓", None]
        store.upsert_traces(
            [
                {
                    "trace_id": f"t{i}",
                    "experiment_uuid": exp,
                    "inputs": {"i": i},
                    "output": out,
                    "status": "success" if out else "error",
                    "scores": [{"name": "s", "score": float(i)}],
                }
                for i, out in enumerate(outputs)
            ]
            + [
                {
                    "trace_id": "c0",
                    "parent_trace_id": "t0",
                    "root_trace_id": "t0",
                    "experiment_uuid": exp,
                    "input_tokens": 7,
                    "cost": 0.5,
                    "scores": [{"name": "child", "score": 0.25}],
                },
                # a span scored without usage, and a span without experiment_uuid (another client's)
                {
                    "trace_id": "c1",
                    "parent_trace_id": "t1",
                    "experiment_uuid": exp,
                    "scores": [{"name": "child", "score": 1}],
                },
                {"trace_id": "c2", "parent_trace_id": "t2", "cost": 0.25},
            ]
        )
        cols = store.root_columns(exp)
        assert cols.trace_id == [f"t{i}" for i in range(6)]
        assert cols.scores[0] == [{"name": "s", "score": 0.0}, {"name": "child", "score": 0.25}]
        assert cols.input_tokens[0] == 7 and cols.cost[0] == 0.5
        assert cols.status[5] == "error"
        assert cols.scores[1][1] == {"name": "child", "score": 1.0} and cols.input_tokens[1] == 0
        assert cols.cost[2] == 0.25 and cols.scores[2] == [{"name": "s", "score": 2.0}]
        assert store.experiment_stats(exp)[2]["cost"] == 0.25  # as the API rolls it up
        assert store.run_logs(exp) == store.experiment_rows(exp)

        def found(q: str) -> list[str]:
            ids = store.search_roots(exp, q)
            return [d["trace_id"] for d in sorted(store.roots_by_rowid(exp, ids).values(), key=lambda d: d["trace_id"])]

        assert found("%") == ["t0"]
        assert found("_") == ["t1"]
        assert found('"hi"') == ["t3"]
        assert found("\nthen") == ["t3"]  # a newline is searched as a newline...
        assert found("\\nthen") == []  # ...and a backslash as a backslash, though JSON escapes both
        assert found("ünïcode ✓".upper()) == []  # LIKE folds ASCII only
        assert found("Ünïcode ✓") == ["t4"]
        assert found("PLAIN") == ["t2"]
        by_rowid = store.roots_by_rowid(exp, cols.rowid[:1])
        assert by_rowid[cols.rowid[0]]["scores"] == [{"name": "s", "score": 0.0}, {"name": "child", "score": 0.25}]
        assert by_rowid[cols.rowid[0]]["input_tokens"] == 7
        order = store.root_order(exp, "output")
        assert cols.trace_id[cols.rowid.index(order[0])] == "t5"  # no output sorts first
        with pytest.raises(ValueError, match="cannot sort rows by 'data'"):
            store.root_order(exp, "data")
        assert store.run_version(exp)[0] == max(cols.rowid)
        ds = store.create_dataset("d", ["q"], [{"inputs": {"q": str(i)}, "target": str(i)} for i in range(7)])
        meta, total, rows = store.dataset_rows(ds["id"], limit=3, offset=3)
        assert (meta["name"], total, [r["inputs"]["q"] for r in rows]) == ("d", 7, ["3", "4", "5"])
    finally:
        store.close()
