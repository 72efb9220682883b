"""Result: the summary text, HTML, dict, and the compact tally behind them."""

from __future__ import annotations

from runner.results.result import Result, Tally
from runner.scoring import Log, Score


def tally() -> Tally:
    t = Tally(keep_logs=False)
    for i in range(10):
        status = "error" if i == 9 else "success"
        scores = [] if status == "error" else [Score("em", float(i % 2))]
        log = Log(inputs={"i": i}, status=status, latency=0.01 * i, scores=scores,
                  score_errors={"judge": "RuntimeError: x"} if i == 0 else {})
        t.add(log, f"r{i}", [{"input_tokens": 2, "output_tokens": 1, "cost": 0.001}])
    return t


def test_tally_counts_scored_errored_and_total() -> None:
    s = tally().summaries()
    assert (s["em"].n, s["em"].n_errors, s["em"].n_total) == (9, 1, 10)
    assert (s["judge"].n, s["judge"].n_errors) == (0, 2)  # the failed row and the scorer's own failure
    assert s["em"].ci_low is not None and s["em"].ci_low < s["em"].mean < s["em"].ci_high


def test_summary_text_html_and_dict() -> None:
    t = tally()
    from runner.results.result import run_stats

    r = Result(name="exp", experiment_uuid="u", run_name="r-1", project_name="p", status="completed",
               scores=t.summaries(), dataset_level_stats={"acc": 0.5}, stats=run_stats(t), n_total=10, n_errors=1,
               location="x.db")
    text = r.summary_text()
    assert "exp · run r-1 · completed · 10 rows, 1 errored" in text
    assert "n=9/10 (1 error)" in text and "dataset-level acc: 0.5" in text and "stored in x.db" in text
    html = r._repr_html_()
    assert "<table" in html and "&lt;" not in r.name
    d = r.to_dict()
    assert d["scores"]["em"]["n_total"] == 10 and d["stats"]["total_tokens"] == 30
