"""The benchmark's output: one Markdown table, then PASS/FAIL per target.

``render`` takes what the children measured (``run.py`` collects it) and returns the Markdown
text and the list of target verdicts (also saved by ``--json``).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

__all__ = ["render", "summarise"]

FULL_ROWS = 10_000  # W1/W2 targets are for 10,000 rows; --quick scales them to its row count
WHAT = {
    "W1": "no-op sync fn + exact_match, embedded store",
    "W2": "W1 over HTTP to `python -m runner serve`",
    "W2-sdk": "parea-ai SDK: W2 against our `serve`",
    "W3": "async sleep 0.1 s, 20 workers, embedded",
    "W3-sdk": "parea-ai SDK: W3 against our `serve`",
    "W4": "async sleep 0.1 s, 100 workers, embedded",
    "W5": "JSONL file, no-op fn, no scorer, embedded",
    "W6": '`python -c "import runner"`',
    "W7": "sync, runs of 40 instant / 40 × 50 ms rows, 10 workers",
    "W8": "sync, 7 of 200 rows hang, timeout=1, 10 workers",
}
ORDER = ["W1", "W2", "W2-sdk", "W3", "W3-sdk", "W4", "W5", "W6", "W7", "W8"]


def _ideal(r: dict[str, Any]) -> float | None:
    """W3/W4: rows / workers rounds of 0.1 s each; W7: its slow rows' 50 ms spread over the
    workers; W8: one timeout (its 7 hanging rows end together when no thread holds them back)."""
    n_workers = r.get("n_workers")
    if not n_workers:
        return None
    if r["workload"] == "W7":
        slow = sum(1 for x in range(r["rows"]) if (x // 40) % 2)
        return float(math.ceil(slow / n_workers) * 0.05)
    if r["workload"] == "W8":
        return 1.0
    if not r["workload"].startswith(("W3", "W4")):
        return None
    return float(math.ceil(r["rows"] / n_workers) * 0.1)


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    """Median/min/max, rows per second, efficiency and the stored counts of one workload."""
    times = r.get("times") or []
    s: dict[str, Any] = {"ok": r.get("status") == "ok" and bool(times)}
    if times:
        s.update(median=statistics.median(times), min=min(times), max=max(times))
        if r["rows"]:
            s["rows_per_s"] = r["rows"] / s["median"]
        ideal = _ideal(r)
        if ideal is not None:
            s["ideal"] = ideal
            s["efficiency"] = ideal / s["median"]
    detail = [d for d in r.get("detail") or [] if "stored_rows" in d]
    if detail:
        s["stored_rows"] = min(d["stored_rows"] for d in detail)
        s["stored_scores"] = min(d["stored_scores"] for d in detail)
        s["all_stored"] = len(detail) == r["runs"] and all(
            d["stored_rows"] == r["rows"] and d["stored_scores"] == r["expected_scores"] for d in detail
        )
    return s


def _s(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _row(name: str, r: dict[str, Any], s: dict[str, Any], ratio: str) -> str:
    what = WHAT[name]
    if name == "W6" and "baseline_median_s" in r:
        what += f" (incl. `python -c pass`: {_s(r['baseline_median_s'])} s)"
    if r.get("status") == "timeout":
        median, spread = f"TIMEOUT after {r['timeout_s']:.0f} s", "—"
    elif r.get("status") != "ok":
        median, spread = f"ERROR (exit {r.get('returncode')})", "—"
    else:
        median = _s(s["median"])
        spread = f"{_s(s['min'])}–{_s(s['max'])}" if r["runs"] > 1 else "—"
        if name.endswith("-sdk"):
            flushed = max(d.get("flushed_s", 0) for d in r["detail"])
            spread = f"(logs flushed at {_s(flushed)})"
    rps = _n(s["rows_per_s"]) if "rows_per_s" in s else "—"
    rss = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "—"
    if r.get("server_peak_rss_mb"):
        rss += f" (server {r['server_peak_rss_mb']:.0f})"
    eff = f"{s['efficiency']:.1%} of {s['ideal']:.1f} s" if "efficiency" in s else "—"
    if "stored_rows" in s:
        stored = f"{_n(s['stored_rows'])}/{_n(r['rows'])}"
        stored += f" · {_n(s['stored_scores'])}/{_n(r['expected_scores'])}" if r["expected_scores"] else " · no scorer"
        stored += "" if s.get("all_stored") else " ✗"
    else:
        stored = "—"
    rows = _n(r["rows"]) if r["rows"] else "—"
    return (
        f"| {name} | {what} | {rows} | {r['runs']} | {median} | {spread} | {rps} | {rss} | {eff} | {stored} | {ratio} |"
    )


def _ratio(results: dict[str, dict[str, Any]], sums: dict[str, dict[str, Any]], name: str) -> str:
    """Our time per row over the SDK's (a value below 1 means we are faster)."""
    ours, theirs = sums.get(name), sums.get(f"{name}-sdk")
    if not ours or not theirs or not ours["ok"] or not theirs["ok"]:
        return "—"
    q = (ours["median"] / results[name]["rows"]) / (theirs["median"] / results[f"{name}-sdk"]["rows"])
    return f"{q:.4f} ({1 / q:,.0f}× faster)" if q < 1 else f"{q:.2f} ({q:.1f}× slower)"


def _targets(results: dict[str, dict[str, Any]], sums: dict[str, dict[str, Any]], quick: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, target: str, measured: str | None, ok: bool | None) -> None:
        verdict = "NOT RUN" if measured is None else "PASS" if ok else "FAIL"
        out.append({"workload": name, "target": target, "measured": measured, "verdict": verdict})

    def timed(name: str, limit: float) -> None:
        r, s = results.get(name), sums.get(name)
        if r is None or s is None:
            return
        scaled = limit * r["rows"] / FULL_ROWS if name in ("W1", "W2") else limit
        target = f"≤ {_s(scaled)} s" + (
            f" (quick: {limit} s scaled to {_n(r['rows'])} rows)" if scaled != limit else ""
        )
        add(name, target, f"{_s(s['median'])} s" if s["ok"] else r["status"], s["ok"] and s["median"] <= scaled)

    def stored(name: str, what: str) -> None:
        r, s = results.get(name), sums.get(name)
        if r is None or s is None:
            return
        got = f"{_n(s.get('stored_rows', 0))} of {_n(r['rows'])} rows"
        if r.get("expected_scores"):
            got += f", {_n(s.get('stored_scores', 0))} of {_n(r['expected_scores'])} scores"
        add(name, what, got, bool(s.get("all_stored")))

    timed("W1", 1.0)
    stored("W1", "every row and score stored")
    timed("W2", 2.0)
    stored("W2", "every row and score stored")
    for name, floor in (("W3", 0.97), ("W4", 0.90), ("W7", 0.95), ("W8", 0.90)):
        r, s = results.get(name), sums.get(name)
        if r is not None and s is not None:
            add(
                name,
                f"≥ {floor:.0%} of ideal",
                f"{s['efficiency']:.1%}" if "efficiency" in s else r["status"],
                "efficiency" in s and s["efficiency"] >= floor,
            )
            stored(name, "every row stored")
    if "W5" in results:
        r, s = results["W5"], sums["W5"]
        stored("W5", "completes, every row stored")
        rss = r.get("peak_rss_mb")
        add("W5", "peak RSS ≤ 500 MB", f"{rss:.0f} MB" if rss else r["status"], bool(s["ok"] and rss and rss <= 500))
    timed("W6", 0.25)
    return out


def render(
    info: dict[str, Any], results: dict[str, dict[str, Any]], *, quick: bool, runs: int
) -> tuple[str, list[dict[str, Any]]]:
    sums = {name: summarise(r) for name, r in results.items()}
    load = info.get("load_average")
    end = f", {info['load_average_end'][0]} at end" if info.get("load_average_end") else ""
    lines = [
        f"## runner benchmarks ({'quick' if quick else 'full'} mode, median of {runs} run(s); "
        "W5 and the SDK runs once)",
        "",
        f"{info['nproc']} CPUs (nproc) · {info['cpu']} · {info['python']} · {info['platform']} · "
        f"runner @ {info['commit']}{' + local changes' if info['dirty'] else ''} · parea-ai {info['parea_ai']} · "
        f"load average {load[0] if load else '?'} at start{end} · {info['date']}"
        + (f" · our bytecode {info['bytecode']}" if info.get("bytecode") else ""),
        "",
        "| workload | what | rows | runs | median s | min–max s | rows/s | peak RSS MB | ideal/actual "
        "| stored rows · scores | ours/SDK per row |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in ORDER:
        if name not in results:
            continue
        lines.append(_row(name, results[name], sums[name], _ratio(results, sums, name)))
    verdicts = _targets(results, sums, quick)
    lines += ["", "### Targets", ""]
    for v in verdicts:
        lines.append(f"- **{v['verdict']}** {v['workload']}: {v['target']} — measured {v['measured']}")
    if not verdicts:
        lines.append("- (no target among the selected workloads)")
    sdk_notes = []
    for name, r in results.items():
        if not name.endswith("-sdk"):
            continue
        note = f"- {name}: {r['status']}"
        if r.get("blocked_hosts"):
            note += f"; blocked attempts to reach {', '.join(r['blocked_hosts'])}"
        errors = r.get("sdk_errors") or {}
        if errors:
            shown = "; ".join(f"{n}× `{line}`" for line, n in sorted(errors.items(), key=lambda kv: -kv[1])[:3])
            note += f"; the SDK printed {sum(errors.values())} error line(s): {shown}"
        sdk_notes.append(note)
    if sdk_notes:
        lines += [
            "",
            "SDK runs (time is `Experiment.run()`; their logs are posted from threads and counted after they flush):",
            "",
            *sdk_notes,
        ]
    return "\n".join(lines), verdicts
