"""What a run returns: the summary with its uncertainty, and the per-row table on demand.

A :class:`Result` is the same object whether the run was started from a script, from async code
or in a notebook. It holds the summary (each score's mean, spread, interval and counts, the
dataset-level stats, latency, tokens and cost); the per-row table is read back from where the
results are stored when ``to_dataframe()`` is called, so a million-row run does not hold a
million rows in memory.
"""

from __future__ import annotations

import contextlib
import html
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.results.format import money, num, seconds
from runner.results.gate_outcomes import GateReport
from runner.results.stats import ScoreSummary, latency_summary, summarize_score
from runner.scoring import Log, Score

if TYPE_CHECKING:
    import pandas as pd

    from runner.results.compare import Comparison

__all__ = ["Result", "Tally"]


class Tally:
    """Running counts of a run, kept compact: one float per score per row-trial."""

    def __init__(self, keep_logs: bool) -> None:
        self.n_total = 0
        self.n_errors = 0
        self.values: dict[str, array[float]] = {}
        self.clusters: dict[str, list[str]] = {}
        self.scorer_failures: dict[str, int] = {}
        #: per score: errored rows that still carry that score (from a span that ran before the error)
        self.errored_scored: dict[str, int] = {}
        self.scorer_failure_examples: dict[str, str] = {}
        #: scorer name -> the scores it returned under other names (``metadata.score_sources``)
        self.produces: dict[str, set[str]] = {}
        self.latencies: array[float] = array("d")
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.keep_logs = keep_logs
        self.logs: list[Log] = []
        self.row_ids: list[str] = []

    def add(self, log: Log, row_id: str, wire: list[dict[str, Any]]) -> None:
        self.n_total += 1
        if log.status != "success":
            self.n_errors += 1
        self.latencies.append(log.latency)
        for w in wire:
            self.input_tokens += w.get("input_tokens") or 0
            self.output_tokens += w.get("output_tokens") or 0
            self.cost += w.get("cost") or 0.0
        errored = log.status != "success"
        seen: set[str] | None = set() if len(log.scores) > 1 else None
        for s in log.scores:
            if seen is not None:  # a stored row with one name twice (another client's): the first counts
                if s.name in seen:
                    continue
                seen.add(s.name)
            if errored:  # a child span scored before the function failed
                self.errored_scored[s.name] = self.errored_scored.get(s.name, 0) + 1
            vals = self.values.get(s.name)
            if vals is None:
                vals = self.values[s.name] = array("d")
                self.clusters[s.name] = []
            vals.append(s.score)
            self.clusters[s.name].append(row_id)
        for score, scorer in (log.metadata.get("score_sources") or {}).items():
            self.produces.setdefault(scorer, set()).add(score)
        for name, err in log.score_errors.items():
            self.scorer_failures[name] = self.scorer_failures.get(name, 0) + 1
            self.scorer_failure_examples.setdefault(name, err)
        if self.keep_logs:
            self.logs.append(log)
            self.row_ids.append(row_id)

    def summaries(self) -> dict[str, ScoreSummary]:
        """Each score's summary. A scorer that returns scores under other names (``flaky``
        returning ``Score("confidence", ...)``, learnt from ``metadata.score_sources``) has its
        failures counted as errors of those scores, not of a phantom score ``flaky``."""
        failures: dict[str, int] = {}
        for scorer, count in self.scorer_failures.items():
            for name in sorted(self.produces.get(scorer) or {scorer}):
                failures[name] = failures.get(name, 0) + count
        names = list(self.values) + [n for n in failures if n not in self.values]
        out = {}
        for name in names:
            values = self.values.get(name, array("d"))
            clusters = self.clusters.get(name, [])
            # rows finish in no fixed order: sort, so the seeded interval depends on the data only
            order = sorted(range(len(values)), key=lambda i: (clusters[i], values[i]))
            out[name] = summarize_score(
                name,
                [values[i] for i in order],
                [clusters[i] for i in order],
                n_errors=self.n_errors + failures.get(name, 0) - self.errored_scored.get(name, 0),
                n_total=self.n_total,
            )
        return out


# one number format across summaries, show, compare and the web UI
_fmt = num
_fmt_s = seconds


@dataclass
class Result:
    """The outcome of one experiment run."""

    name: str
    experiment_uuid: str
    run_name: str
    project_name: str
    #: ``completed``, ``failed`` (when interrupted or when the run itself broke), or ``spooled``:
    #: every row ran, but the server was away at the end and some results wait in the spool
    #: (:attr:`spool_path`) for ``python -m runner sync``
    status: str
    #: per score name: mean, std, n scored, n_errors, n_total and a 95 % interval
    scores: dict[str, ScoreSummary]
    #: dataset-level eval name -> value
    dataset_level_stats: dict[str, float]
    #: latency (mean/p50/p95/max, seconds), input/output/total tokens and cost (sums and means)
    stats: dict[str, Any]
    n_total: int
    n_errors: int
    #: where the results are stored: a SQLite path or a server URL
    location: str
    duration: float = 0.0
    interrupted: bool = False
    #: dataset-level eval name -> its full Score (with the reason: r, p, n, ...)
    dataset_level_details: dict[str, Score] = field(default_factory=dict)
    #: dataset-level eval name -> its interval (low, high), where one was computed
    dataset_level_ci: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    #: dataset-level eval name -> error message, for evals that failed
    dataset_level_errors: dict[str, str] = field(default_factory=dict)
    #: scorer name -> one example error message
    scorer_errors: dict[str, str] = field(default_factory=dict)
    #: scorer name -> the scores it produces, for scorers whose scores are named otherwise
    scorer_scores: dict[str, list[str]] = field(default_factory=dict)
    #: which of the experiment's gates (``fail_under``, ``max_error_rate``) passed
    gates: GateReport = field(default_factory=GateReport)
    #: rows still running when the run was stopped: (row id, trial) pairs
    still_running: list[tuple[str, int]] = field(default_factory=list)
    #: what the watchdog said when no row finished for a while (names the rows still running)
    stalls: list[str] = field(default_factory=list)
    #: row-trials taken over from the interrupted run this one resumed
    resumed_rows: int = 0
    #: trace logs not delivered to the server yet: they wait in :attr:`spool_path`
    spooled: int = 0
    #: the spool file holding them (and the finish call), or ``None`` when nothing waits
    spool_path: str | None = None
    _rows_loader: Callable[[], list[dict[str, Any]]] | None = field(default=None, repr=False)

    @property
    def n_success(self) -> int:
        return self.n_total - self.n_errors

    # -- the per-row table --------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """The stored root trace logs of this run (one per row-trial), scores rolled up."""
        if self._rows_loader is None:
            return []
        return self._rows_loader()

    def to_dataframe(self) -> pd.DataFrame:
        """One row per row-and-trial: input columns, target, output, status, error, the row's
        scorer errors (``{scorer: message}``, or None), latency, scores."""
        import orjson
        import pandas as pd

        records = []
        score_names = list(self.scores)
        for r in self.rows():
            meta = r.get("metadata") or {}
            rec: dict[str, Any] = {"row_id": meta.get("row_id"), "trial": meta.get("trial")}
            rec.update(r.get("inputs") or {})
            output = r.get("output")
            if meta.get("output_is_json") and isinstance(output, str):
                with contextlib.suppress(orjson.JSONDecodeError):
                    output = orjson.loads(output)
            rec.update(
                {
                    "target": r.get("target"),
                    "output": output,
                    "status": r.get("status"),
                    "error": r.get("error"),
                    # scorer name -> its error on this row (None: every scorer ran)
                    "scorer_errors": dict(meta.get("scorer_errors") or {}) or None,
                    "latency": r.get("latency"),
                }
            )
            for s in r.get("scores") or []:
                if s["name"] not in score_names:
                    score_names.append(s["name"])
                rec[s["name"]] = s["score"]
            rec["_order"] = (meta.get("row_index", 0), meta.get("trial", 0))
            records.append(rec)
        records.sort(key=lambda x: x.pop("_order"))
        df = pd.DataFrame.from_records(records)
        for name in score_names:
            if name not in df.columns:
                df[name] = float("nan")
        return df

    def compare(self, other: Result, *, top: int = 5) -> Comparison:
        """This run (B) against ``other`` (A, the baseline): per-score differences with their
        95 % interval and a paired p-value (McNemar's exact test for 0/1 scores, a paired
        permutation test otherwise; Holm-adjusted across scores), win/tie/loss, and the rows
        that regressed and improved most.

        >>> candidate.compare(baseline)            # doctest: +SKIP
        """
        from runner.results.compare import compare_rows

        return compare_rows(
            other.rows(), self.rows(), label_a=other.run_name, label_b=self.run_name, top=top
        )

    # -- rendering ----------------------------------------------------------------------------
    def headline(self) -> str:
        errs = f", {self.n_errors} errored" if self.n_errors else ""
        stop = " (interrupted)" if self.interrupted else ""
        return (
            f"{self.name} · run {self.run_name} · {self.status}{stop} · {self.n_total} rows{errs}"
            f" in {seconds(self.duration)}"
        )

    def summary_text(self) -> str:
        """The summary table printed at the end of a run."""
        lines = [self.headline()]
        if self.scores:
            width = max(12, *(len(n) for n in self.scores))
            lines.append(f"  {'score':<{width}}  mean [95% CI] n=scored/total    std")
            for name, s in self.scores.items():
                lines.append(f"  {name:<{width}}  {s.format():<34} {_fmt(s.std):>6}")
        else:
            lines.append("  no scores")
        for name, value in self.dataset_level_stats.items():
            detail = self.dataset_level_details.get(name)
            reason = f"  ({detail.reason})" if detail is not None and detail.reason else ""
            lo, hi = self.dataset_level_ci.get(name, (None, None))
            ci = f" [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None else ""
            lines.append(f"  dataset-level {name}: {_fmt(value)}{ci}{reason}")
        for name, err in self.dataset_level_errors.items():
            lines.append(f"  dataset-level {name}: failed: {err}")
        for name, err in self.scorer_errors.items():
            produced = self.scorer_scores.get(name)
            counted = f" (counted as errors of {', '.join(produced)}, the scores it returns)" if produced else ""
            lines.append(f"  scorer {name} failed on some rows{counted}, e.g.: {err}")
        lat = self.stats.get("latency") or {}
        cost = self.stats.get("cost", 0.0)
        tokens = self.stats.get("total_tokens", 0)
        lines.append(
            f"  latency mean {_fmt_s(lat.get('mean'))} · p50 {_fmt_s(lat.get('p50'))} · p95 {_fmt_s(lat.get('p95'))}"
            + (f" · tokens {tokens:,}" if tokens else "")
            + (f" · cost {money(cost)}" if cost else "")
        )
        for message in self.stalls:
            lines.append(f"  watchdog: {message}")
        if self.resumed_rows:
            lines.append(f"  resumed: {self.resumed_rows} row-trials were already done and kept")
        if self.still_running:
            lines.append(f"  still running when stopped: {', '.join(f'{r}#{t}' for r, t in self.still_running)}")
        if self.spool_path is not None:
            what = f"{self.spooled} trace log(s) and the finish call wait" if self.spooled else "the finish call waits"
            lines.append(
                f"  not stored yet: the server did not answer; {what} in {self.spool_path}:"
                " `python -m runner sync` delivers them"
            )
        lines.append(f"  stored in {self.location} (experiment {self.experiment_uuid})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary_text()

    def _repr_html_(self) -> str:
        e = html.escape
        parts = [
            "<div class='runner-result'>",
            f"<p><b>{e(self.name)}</b> · run <code>{e(self.run_name)}</code> · {e(self.status)}"
            f"{' (interrupted)' if self.interrupted else ''} · {self.n_total} rows, {self.n_errors} errored"
            f" · {seconds(self.duration)}</p>",
            "<table><thead><tr><th>score</th><th>mean</th><th>95% CI</th><th>std</th><th>n scored</th>"
            "<th>errors</th><th>total</th></tr></thead><tbody>",
        ]
        for name, s in self.scores.items():
            parts.append(
                f"<tr><td>{e(name)}</td><td>{_fmt(s.mean)}</td><td>[{_fmt(s.ci_low)}, {_fmt(s.ci_high)}]</td>"
                f"<td>{_fmt(s.std)}</td><td>{s.n}</td><td>{s.n_errors}</td><td>{s.n_total}</td></tr>"
            )
        for name, value in self.dataset_level_stats.items():
            lo, hi = self.dataset_level_ci.get(name, (None, None))
            parts.append(
                f"<tr><td>{e(name)} (dataset-level)</td><td>{_fmt(value)}</td>"
                f"<td>{'[' + _fmt(lo) + ', ' + _fmt(hi) + ']' if lo is not None else ''}</td>"
                "<td></td><td></td><td></td><td></td></tr>"
            )
        parts.append("</tbody></table>")
        try:
            df = self.to_dataframe().head(10)
            parts.append(f"<p>First rows (of {self.n_total}):</p>")
            parts.append(df.to_html(max_cols=20, escape=True))
        except Exception as exc:  # rendering must never raise in a notebook
            parts.append(f"<p>rows unavailable: {e(str(exc))}</p>")
        parts.append(f"<p>stored in <code>{e(self.location)}</code></p></div>")
        return "".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-able data (what ``--json`` prints)."""
        return {
            "name": self.name,
            "experiment_uuid": self.experiment_uuid,
            "run_name": self.run_name,
            "project_name": self.project_name,
            "status": self.status,
            "interrupted": self.interrupted,
            "n_total": self.n_total,
            "n_errors": self.n_errors,
            "duration": self.duration,
            "scores": {k: v.to_dict() for k, v in self.scores.items()},
            "dataset_level_stats": dict(self.dataset_level_stats),
            "dataset_level_ci": {k: list(v) for k, v in self.dataset_level_ci.items()},
            "dataset_level_errors": dict(self.dataset_level_errors),
            "scorer_errors": dict(self.scorer_errors),
            "stats": self.stats,
            "location": self.location,
            "spooled": self.spooled,
            "spool_path": self.spool_path,
        }


def run_stats(tally: Tally) -> dict[str, Any]:
    n = max(tally.n_total, 1)
    return {
        "latency": latency_summary(tally.latencies),
        "input_tokens": tally.input_tokens,
        "output_tokens": tally.output_tokens,
        "total_tokens": tally.input_tokens + tally.output_tokens,
        "cost": tally.cost,
        "mean_cost": tally.cost / n,
        "mean_total_tokens": (tally.input_tokens + tally.output_tokens) / n,
    }


def mapping_str(m: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): v if isinstance(v, str) else str(v) for k, v in m.items()}
