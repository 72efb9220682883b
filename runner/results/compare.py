"""Run B against run A: per-score differences with intervals and paired tests, and the rows
that changed most.

>>> cmp = compare_rows(rows_a, rows_b, label_a="baseline", label_b="candidate")  # doctest: +SKIP
>>> print(cmp.to_markdown())                                                      # doctest: +SKIP

Rows are paired by their row id (the dataset's ``id`` column or the row's content hash; for logs
without one, e.g. from another Parea client, a hash of the inputs and target), and a row's trials
are averaged before pairing, since trials of one row are not independent samples. Rows present in
only one run are counted and reported, never silently dropped; when few rows are shared, or shared
rows changed content, the comparison carries a warning (the runs are probably of different
datasets).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, ClassVar

from runner._json import json_text
from runner.results.format import money, num, pvalue, seconds, signed
from runner.results.paired import ScoreComparison, compare_scores

__all__ = ["Comparison", "RowChange", "RunRows", "compare_rows", "compare_runs", "run_rows"]


@dataclass(frozen=True)
class RowChange:
    """One row whose scores moved between the runs.

    Scores of different scales (a 0/1 match, a length in characters) and of unknown direction
    cannot be added up, so a row is ranked by its largest single change: each score's B − A is
    divided by the range of that score over the shared rows, and ``worst`` / ``best`` are the
    most negative / positive of these. A score the row had in one run only (the function or the
    scorer failed in the other) counts as a full change (−1 when lost, +1 when gained). A row
    can be in both lists when one score rose and another fell.
    """

    row_id: str
    inputs: dict[str, Any]
    output_a: Any
    output_b: Any
    #: score name -> (value in A, value in B); None where the run has no value for the row
    scores: dict[str, tuple[float | None, float | None]]
    #: most negative scaled change of one score (0 when none fell)
    worst: float
    #: most positive scaled change of one score (0 when none rose)
    best: float
    #: "success" or "error", per run
    status_a: str = "success"
    status_b: str = "success"

    def to_dict(self) -> dict[str, Any]:
        return {
            "row_id": self.row_id,
            "inputs": self.inputs,
            "output_a": self.output_a,
            "output_b": self.output_b,
            "status_a": self.status_a,
            "status_b": self.status_b,
            "scores": {k: list(v) for k, v in self.scores.items()},
            "worst": self.worst,
            "best": self.best,
        }

    def describe_scores(self) -> str:
        """``exact_match 1→0, length 3→5``; ``-`` for a missing value."""
        return ", ".join(f"{k} {_f(a)}→{_f(b)}" for k, (a, b) in self.scores.items())

    def output(self, which: str) -> str:
        """Run ``which``'s output, or its error's last line."""
        status, value = (self.status_a, self.output_a) if which == "a" else (self.status_b, self.output_b)
        return f"error: {value}" if status == "error" else _short(value)


@dataclass
class Comparison:
    """The comparison of two runs (B against A)."""

    label_a: str
    label_b: str
    scores: list[ScoreComparison]
    n_rows_a: int
    n_rows_b: int
    n_shared_rows: int
    regressions: list[RowChange] = field(default_factory=list)
    improvements: list[RowChange] = field(default_factory=list)
    #: metric -> (mean in A, mean in B) for latency, total tokens and cost per row-trial
    usage: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: (errored, total) row-trials in A and in B
    errors_a: tuple[int, int] = (0, 0)
    errors_b: tuple[int, int] = (0, 0)
    #: reasons to doubt that the runs are comparable (few shared rows, changed rows, ...)
    warnings: list[str] = field(default_factory=list)
    #: score name -> row id -> the row's mean over trials, in A and in B (for gates)
    per_row_a: Mapping[str, Mapping[str, float]] = field(default_factory=dict, repr=False)
    per_row_b: Mapping[str, Mapping[str, float]] = field(default_factory=dict, repr=False)
    #: row ids that ran in B (scored or not)
    rows_b: frozenset[str] = field(default_factory=frozenset, repr=False)
    #: the seed of the paired tests (gates re-run them on these rows)
    seed: int = 0

    @property
    def only_a(self) -> int:
        return self.n_rows_a - self.n_shared_rows

    @property
    def only_b(self) -> int:
        return self.n_rows_b - self.n_shared_rows

    @property
    def n_tested(self) -> int:
        return sum(1 for s in self.scores if s.p_value is not None)

    def get(self, name: str) -> ScoreComparison | None:
        return next((s for s in self.scores if s.name == name), None)

    # -- rendering ----------------------------------------------------------------------------
    def _rows(self) -> list[list[str]]:
        out = []
        for s in self.scores:
            out.append(
                [
                    s.name,
                    _f(s.mean_a),
                    _f(s.mean_b),
                    _signed(s.diff),
                    f"[{_signed(s.diff_ci_low)}, {_signed(s.diff_ci_high)}]" if s.diff_ci_low is not None else "-",
                    _p(s.p_value),
                    _p(s.p_adjusted),
                    f"{s.wins}/{s.ties}/{s.losses}",
                    str(s.n_shared),
                    (s.test or "-"),
                ]
            )
        return out

    _HEADER: ClassVar[list[str]] = [
        "score",
        "A",
        "B",
        "B − A",
        "95% CI of B − A",
        "p",
        "p (Holm)",
        "win/tie/loss",
        "n",
        "test",
    ]

    def notes(self) -> list[str]:
        """The lines under the table: warnings, the Holm note, row counts, errors, usage."""
        lines = [f"warning: {w}" for w in self.warnings]
        if self.n_tested > 1:
            lines.append(f"p-values are Holm-adjusted across the {self.n_tested} scores compared.")
        methods = sorted({s.diff_ci_method for s in self.scores if s.diff_ci_method in ("t", "bootstrap")})
        if methods:
            how = {"t": "Student's t (fewer than 50 shared rows)", "bootstrap": "BCa bootstrap over shared rows"}
            lines.append("Intervals of B − A: " + "; ".join(how[m] for m in methods if m) + ".")
        lines.append(
            f"Rows: {self.n_shared_rows} in both runs, {self.only_a} only in {self.label_a}, "
            f"{self.only_b} only in {self.label_b} (trials of a row are averaged before pairing)."
        )
        for s in self.scores:
            if s.n_shared and (s.only_a, s.only_b) != (self.only_a, self.only_b):
                lines.append(
                    f"{s.name}: {s.only_a} row(s) scored only in {self.label_a}, {s.only_b} only in "
                    f"{self.label_b} (errors or missing scores); the test uses the {s.n_shared} scored in both."
                )
        if self.errors_a[0] or self.errors_b[0]:
            lines.append(
                f"Errored row-trials: {self.errors_a[0]}/{self.errors_a[1]} in {self.label_a}, "
                f"{self.errors_b[0]}/{self.errors_b[1]} in {self.label_b}."
            )
        usage = [_usage_text(name, a, b) for name, (a, b) in self.usage.items() if a or b]
        if usage:
            lines.append("Per row-trial: " + "; ".join(usage) + ".")
        return lines

    def to_text(self) -> str:
        rows = [self._HEADER, *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._HEADER))]
        lines = [f"{self.label_b} (B) vs {self.label_a} (A)"]
        for i, r in enumerate(rows):
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
            if i == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        lines.extend("  " + n for n in self.notes())
        for title, changes in (("Regressed most", self.regressions), ("Improved most", self.improvements)):
            if changes:
                lines.append(f"  {title}:")
                for c in changes:
                    lines.append(
                        f"    row {c.row_id}: {_inputs(c)} | A: {c.output('a')} | B: {c.output('b')} | "
                        + c.describe_scores()
                    )
        if self.n_shared_rows and not self.regressions:
            lines.append("  No row regressed.")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """A Markdown report fit for a pull-request comment."""
        md = [f"### {_md(self.label_b)} (B) vs {_md(self.label_a)} (A)", ""]
        md.append("| " + " | ".join(self._HEADER) + " |")
        md.append("|" + "|".join("---" for _ in self._HEADER) + "|")
        for r in self._rows():
            md.append("| " + " | ".join(_md(c) for c in r) + " |")
        md.append("")
        md.extend(f"- {_md(n)}" for n in self.notes())
        for title, changes in (("Regressed most", self.regressions), ("Improved most", self.improvements)):
            if changes:
                md += ["", f"**{title}**", "", "| row | inputs | A | B | scores |", "|---|---|---|---|---|"]
                for c in changes:
                    md.append(
                        f"| {_md(c.row_id)} | {_md(_inputs(c, 80))} | {_md(c.output('a'))} | "
                        f"{_md(c.output('b'))} | {_md(c.describe_scores())} |"
                    )
        if self.n_shared_rows and not self.regressions:
            md += ["", "No row regressed."]
        return "\n".join(md)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.label_a,
            "b": self.label_b,
            "scores": [s.to_dict() for s in self.scores],
            "holm_adjusted": self.n_tested > 1,
            "n_rows_a": self.n_rows_a,
            "n_rows_b": self.n_rows_b,
            "n_shared_rows": self.n_shared_rows,
            "only_a": self.only_a,
            "only_b": self.only_b,
            "usage": {k: list(v) for k, v in self.usage.items()},
            "errors_a": self.errors_a[0],
            "errors_b": self.errors_b[0],
            "warnings": list(self.warnings),
            "regressions": [c.to_dict() for c in self.regressions],
            "improvements": [c.to_dict() for c in self.improvements],
        }

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        import html

        head = "".join(f"<th>{html.escape(h)}</th>" for h in self._HEADER)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self._rows())
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes())
        return (
            f"<p><b>{html.escape(self.label_b)}</b> (B) vs <b>{html.escape(self.label_a)}</b> (A)</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><ul>{notes}</ul>"
        )


def row_key(r: Mapping[str, Any]) -> str:
    """The id that pairs a stored root log with its row in another run.

    The runner's own ``metadata.row_id``; for a log without one (written by another client), a
    hash of its inputs and target, so that the same question pairs up across runs.
    """
    meta = r.get("metadata") or {}
    rid = meta.get("row_id")
    if rid is not None:
        return str(rid)
    blob = json.dumps([r.get("inputs"), r.get("target")], sort_keys=True, default=str)
    return "h-" + hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def _per_row(rows: Iterable[Mapping[str, Any]]) -> tuple[dict[str, dict[str, float]], dict[str, Mapping[str, Any]]]:
    """score name -> row id -> mean over trials; and row id -> its first stored log."""
    sums: dict[str, dict[str, list[float]]] = {}
    first: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        meta = r.get("metadata") or {}
        rid = row_key(r)
        if rid not in first or meta.get("trial", 0) < (first[rid].get("metadata") or {}).get("trial", 0):
            first[rid] = r
        for s in r.get("scores") or []:
            sums.setdefault(s["name"], {}).setdefault(rid, []).append(float(s["score"]))
    # sorted by row id: rows are stored in finishing order, and the seeded bootstrap and
    # permutation draws must depend on the data only
    means = {name: {rid: sum(per[rid]) / len(per[rid]) for rid in sorted(per)} for name, per in sums.items()}
    return means, first


def _usage(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    n = max(len(rows), 1)
    return {
        "latency (s)": sum(float(r.get("latency") or 0) for r in rows) / n,
        "total tokens": sum(float(r.get("total_tokens") or 0) for r in rows) / n,
        "cost ($)": sum(float(r.get("cost") or 0) for r in rows) / n,
    }


@dataclass(frozen=True)
class RunRows:
    """What a comparison reads of one run's root logs (:func:`run_rows`): kept, it compares the
    run again without reading its logs (the web UI stores it with a finished run)."""

    #: score name -> row id -> the row's mean over its trials, rows sorted by id
    means: Mapping[str, Mapping[str, float]]
    #: row id -> the log of the row's first trial (for the rows that changed: inputs, output,
    #: status; and ``metadata.row_hash``), rows in logging order
    first: Mapping[str, Mapping[str, Any]]
    #: mean latency, total tokens and cost per row-trial
    usage: Mapping[str, float]
    n_errors: int
    #: row-trials
    n_logs: int
    #: row id -> ``metadata.row_hash`` of its first trial (None without one); None: read from ``first``
    row_hash: Mapping[str, str | None] | None = None

    def hashes(self) -> Mapping[str, str | None]:
        """Row id -> the content hash of the row's first trial (None when it has none)."""
        if self.row_hash is not None:
            return self.row_hash
        return {rid: (log.get("metadata") or {}).get("row_hash") for rid, log in self.first.items()}


def run_rows(rows: Sequence[Mapping[str, Any]]) -> RunRows:
    """One run's root logs as a comparison reads them."""
    means, first = _per_row(rows)
    return RunRows(means, first, _usage(rows), _n_errors(rows), len(rows))


def compare_rows(
    rows_a: Sequence[Mapping[str, Any]],
    rows_b: Sequence[Mapping[str, Any]],
    *,
    label_a: str = "A",
    label_b: str = "B",
    top: int = 5,
    seed: int = 0,
) -> Comparison:
    """Compare two runs given their stored root logs (``Result.rows()`` or the store's).

    Run A is the baseline, B the candidate: differences are B − A. The ``top`` rows that regressed
    and improved most are kept (ranked by their largest scaled change of one score, see
    :class:`RowChange`).

    >>> rows_a = [{"metadata": {"row_id": "r1"}, "scores": [{"name": "em", "score": 0.0}]}]
    >>> rows_b = [{"metadata": {"row_id": "r1"}, "scores": [{"name": "em", "score": 1.0}]}]
    >>> compare_rows(rows_a, rows_b).get("em").diff
    1.0
    """
    if top < 0:
        raise ValueError(f"compare_rows: top must be >= 0, got {top}")
    return compare_runs(run_rows(rows_a), run_rows(rows_b), label_a=label_a, label_b=label_b, top=top, seed=seed)


def compare_runs(
    a: RunRows, b: RunRows, *, label_a: str = "A", label_b: str = "B", top: int = 5, seed: int = 0
) -> Comparison:
    """:func:`compare_rows` of two runs read with :func:`run_rows`."""
    if top < 0:
        raise ValueError(f"compare_runs: top must be >= 0, got {top}")
    scores_a, first_a = a.means, a.first
    scores_b, first_b = b.means, b.first
    comparisons = compare_scores(scores_a, scores_b, seed=seed)
    shared = list(filter(first_b.keys().__contains__, first_a))
    regressions, improvements = _row_changes(scores_a, scores_b, first_a, first_b, shared, top)
    ua, ub = a.usage, b.usage
    warnings = _warnings(a, b, shared, label_a, label_b)
    return Comparison(
        label_a=label_a,
        label_b=label_b,
        scores=comparisons,
        n_rows_a=len(first_a),
        n_rows_b=len(first_b),
        n_shared_rows=len(shared),
        regressions=regressions,
        improvements=improvements,
        usage={k: (ua[k], ub[k]) for k in ua},
        errors_a=(a.n_errors, a.n_logs),
        errors_b=(b.n_errors, b.n_logs),
        warnings=warnings,
        per_row_a=scores_a,
        per_row_b=scores_b,
        rows_b=frozenset(first_b),
        seed=seed,
    )


def _row_changes(
    scores_a: Mapping[str, Mapping[str, float]],
    scores_b: Mapping[str, Mapping[str, float]],
    first_a: Mapping[str, Mapping[str, Any]],
    first_b: Mapping[str, Mapping[str, Any]],
    shared: Sequence[str],
    top: int,
) -> tuple[list[RowChange], list[RowChange]]:
    """The ``top`` shared rows that regressed most (most negative ``worst`` first) and improved most
    (highest ``best`` first), ties in the order of ``shared``.

    Every shared row's largest scaled drop and rise is computed at once, over arrays of the
    scores (a comparison of two 100,000-row runs would otherwise build a :class:`RowChange`
    for each of the tens of thousands of rows that moved, to keep ten); only the rows kept are
    then made into :class:`RowChange`."""
    import numpy as np

    names = list(scores_a) + [n for n in scores_b if n not in scores_a]
    n = len(shared)
    worst, best = np.zeros(n), np.zeros(n)
    values: dict[str, tuple[Any, Any, Any, Any]] = {}
    for name in names:
        va, has_a = _aligned(scores_a.get(name, {}), shared)
        vb, has_b = _aligned(scores_b.get(name, {}), shared)
        values[name] = (has_a, has_b, va, vb)
        present = np.concatenate((va[has_a], vb[has_b]))
        scale = float(present.max() - present.min()) if len(present) else 0.0
        # a score the row had in one run only counts as a full change (-1 lost, +1 gained)
        moves = np.where(has_a & ~has_b, -1.0, np.where(has_b & ~has_a, 1.0, 0.0))
        both = has_a & has_b & (va != vb)
        if scale > 0:
            moves[both] = (vb[both] - va[both]) / scale
        np.minimum(worst, moves, out=worst)
        np.maximum(best, moves, out=best)

    def change(i: int) -> RowChange:
        rid = shared[i]
        per: dict[str, tuple[float | None, float | None]] = {}
        for name, (has_a, has_b, va, vb) in values.items():
            if has_a[i] or has_b[i]:
                per[name] = (float(va[i]) if has_a[i] else None, float(vb[i]) if has_b[i] else None)
        ra, rb = first_a[rid], first_b[rid]
        return RowChange(
            row_id=rid,
            inputs=dict(ra.get("inputs") or {}),
            output_a=_output(ra),
            output_b=_output(rb),
            scores=per,
            worst=float(worst[i]),
            best=float(best[i]),
            status_a=str(ra.get("status") or "success"),
            status_b=str(rb.get("status") or "success"),
        )

    fell, rose = np.flatnonzero(worst < 0), np.flatnonzero(best > 0)
    regressed = fell[np.argsort(worst[fell], kind="stable")][:top]
    improved = rose[np.argsort(-best[rose], kind="stable")][:top]
    return [change(int(i)) for i in regressed], [change(int(i)) for i in improved]


def _aligned(per: Mapping[str, float], rows: Sequence[str]) -> tuple[Any, Any]:
    """``per``'s values on ``rows`` as an array, and which rows have one."""
    import numpy as np

    values = np.fromiter(map(per.get, rows, repeat(float("nan"))), dtype=np.float64, count=len(rows))
    if np.isnan(np.fromiter(per.values(), dtype=np.float64, count=len(per))).any():  # NaN is a value here
        return values, np.fromiter(map(per.__contains__, rows), dtype=np.bool_, count=len(rows))
    return values, ~np.isnan(values)


def _output(r: Mapping[str, Any]) -> Any:
    """A stored log's output, or the last line of its error."""
    if r.get("status") == "error":
        lines = [ln.strip() for ln in str(r.get("error") or "").splitlines() if ln.strip()]
        return lines[-1] if lines else "error"
    return r.get("output")


def _n_errors(rows: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for r in rows if r.get("status") == "error")


def _warnings(a: RunRows, b: RunRows, shared: Sequence[str], label_a: str, label_b: str) -> list[str]:
    """Signs that the two runs are not of the same dataset."""
    out = []
    larger = max(len(a.first), len(b.first))
    if larger and len(shared) < larger / 2:
        out.append(
            f"only {len(shared)} of the {len(a.first)} rows of {label_a} and {len(b.first)} rows of {label_b} "
            "are in both runs: are they runs of the same dataset?"
        )
    hash_a, hash_b = a.hashes(), b.hashes()
    changed = [
        rid
        for rid, h_a, h_b in zip(shared, map(hash_a.get, shared), map(hash_b.get, shared), strict=True)
        if h_a != h_b and h_a is not None and h_b is not None
    ]
    if changed:
        out.append(
            f"{len(changed)} row(s) in both runs have different content (e.g. row {changed[0]}): "
            "the dataset changed between the runs"
        )
    return out


# one number format across summaries, show, compare and the web UI (runner.results.format)
_f, _signed, _p = num, signed, pvalue


def _inputs(change: RowChange, n: int = 60) -> str:
    """A row's inputs as ``key: value; ...`` (without an ``id`` column that is the row id)."""
    items = [
        f"{k}: {v if isinstance(v, str) else json_text(v, ascii_only=False)}"
        for k, v in change.inputs.items()
        if not (k == "id" and str(v) == change.row_id)
    ]
    return _short("; ".join(items), n)


def _usage_text(name: str, a: float, b: float) -> str:
    if name.startswith("latency"):
        return f"latency {seconds(a)} → {seconds(b)} ({'+' if b >= a else '−'}{seconds(abs(b - a))})"
    if name.startswith("cost"):
        return f"cost {money(a)} → {money(b)} ({'+' if b >= a else '-'}{money(abs(b - a))})"
    if float(a).is_integer() and float(b).is_integer():  # token counts
        a, b = int(a), int(b)
    return f"{name} {_f(a)} → {_f(b)} ({_signed(b - a)})"


def _short(value: Any, n: int = 60) -> str:
    text = value if isinstance(value, str) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
