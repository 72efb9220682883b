"""The peers a user would pick instead, run beside ours in the same invocation (issue 22).

Each peer gets a virtualenv of its own under ``benchmarks/.peers/<peer>/`` (gitignored), made by
this module on first use with ``python -m venv`` and ``pip install <pinned version>`` from the
package index, and reused while its pins are unchanged (``pins.txt`` inside it records them).
Peers are never installed into the project's environment, and the runner is never installed into
theirs: ``peer_child.py`` needs only the standard library and the peer.

Every peer workload runs in a fresh process with the peer's Python, offline: its settings point at
an unused loopback port, proxies too, and ``peer_child.py`` refuses (and counts) every network
attempt; the table reports the counts.

Then :func:`render_issue22` prints the comparison (ours / theirs per workload, medians) and the
goals of issue 22 with PASS/FAIL.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PEERS", "PEER_DIR", "Peer", "ensure_venv", "peer_python", "render_issue22", "run_peer"]

HERE = Path(__file__).resolve().parent
PEER_DIR = HERE / ".peers"
RESULT_PREFIX = "BENCH-RESULT "
DEAD_PORT = "http://127.0.0.1:9"  # nothing listens on the discard port: a peer that tries is refused


@dataclass(frozen=True)
class Peer:
    name: str
    #: what pip installs, pinned
    pins: tuple[str, ...]
    #: the distribution whose installed version is printed
    dist: str
    #: what the peer's evaluation entry point is called in the table
    entry: str
    workloads: tuple[str, ...] = ("W1", "W4", "W10")


PEERS = {
    p.name: p
    for p in (
        Peer("braintrust", ("braintrust==0.48.1",), "braintrust", "Eval(no_send_logs=True)"),
        Peer("langsmith", ("langsmith==0.14.17",), "langsmith", "evaluate(upload_results=False)"),
    )
}


def _python(d: Path) -> Path:
    return d / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def peer_python(peer: Peer) -> Path:
    """Where the peer's Python is (made by :func:`ensure_venv`)."""
    return _python(PEER_DIR / peer.name)


def ensure_venv(peer: Peer, log: Any = sys.stderr) -> tuple[Path, str]:
    """The peer's Python (creating or refreshing its virtualenv) and its installed version."""
    d = PEER_DIR / peer.name
    marker = d / "pins.txt"
    wanted = "\n".join(peer.pins) + "\n"
    if not (marker.exists() and marker.read_text() == wanted and _python(d).exists()):
        print(f"[peers] creating {d} with {' '.join(peer.pins)} ...", file=log, flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(d)
        subprocess.run([str(_python(d)), "-m", "pip", "install", "-q", "--disable-pip-version-check", *peer.pins],
                       check=True, stdout=subprocess.DEVNULL)
        marker.write_text(wanted)
    got = subprocess.run([str(_python(d)), "-c", f"import importlib.metadata as m; print(m.version({peer.dist!r}))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return _python(d), got


def offline_env() -> dict[str, str]:
    """This environment without any peer's credentials or endpoints, pointed at a dead loopback port."""
    drop = ("PAREA_", "_PAREA", "RUNNER_", "BRAINTRUST_", "LANGSMITH_", "LANGCHAIN_", "OPENAI_", "ANTHROPIC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k.lower() not in ("http_proxy",
                                                                                                "https_proxy")}
    env.update(
        LANGSMITH_TRACING="false", LANGCHAIN_TRACING_V2="false", LANGSMITH_ENDPOINT=DEAD_PORT,
        BRAINTRUST_APP_URL=DEAD_PORT, BRAINTRUST_API_URL=DEAD_PORT,
        HTTP_PROXY=DEAD_PORT, HTTPS_PROXY=DEAD_PORT, NO_PROXY="",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def run_peer(peer: Peer, python: Path, workload: str, rows: int, runs: int, timeout: float) -> dict[str, Any]:
    """One peer workload in a fresh process of the peer's Python; what it measured."""
    out: dict[str, Any] = {"workload": f"{workload}-{peer.name}", "rows": rows, "runs": runs, "status": "ok"}
    cmd = [str(python), str(HERE / "peer_child.py"), peer.name, workload, "--rows", str(rows), "--runs", str(runs)]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"peer-{peer.name}-") as cwd:
        try:
            proc = subprocess.run(cmd, env={**offline_env(), "HOME": cwd}, cwd=cwd, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            out.update(status="timeout", timeout_s=timeout)
        else:
            line = next((x for x in reversed(proc.stdout.splitlines()) if x.startswith(RESULT_PREFIX)), None)
            if proc.returncode != 0 or line is None:
                out.update(status="error", returncode=proc.returncode, stderr_tail=proc.stderr[-3000:])
            else:
                out.update(json.loads(line.removeprefix(RESULT_PREFIX)))
    out["child_wall_s"] = time.monotonic() - started
    return out


# -- the table and the goals ----------------------------------------------------------------------------
def _median(r: dict[str, Any] | None) -> float | None:
    if not r or r.get("status", "ok") != "ok" or not r.get("times"):
        return None
    return float(statistics.median(r["times"]))


def _per_row(r: dict[str, Any] | None) -> float | None:
    m = _median(r)
    return m / r["rows"] if m is not None and r and r.get("rows") else None


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}" if x < 10 else f"{x:.2f}"


def _ideal(name: str, r: dict[str, Any]) -> float | None:
    if name == "W4":
        return math.ceil(r["rows"] / 100) * 0.1
    if name == "W10":
        return math.ceil(r["rows"] / 1000) * 1.0
    return None


def render_issue22(info: dict[str, Any], results: dict[str, dict[str, Any]], peers: dict[str, dict[str, Any]],
                   versions: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """The peers table, W10/W11, and issue 22's goals with PASS/FAIL."""
    load = info.get("load_average") or ["?"]
    end = info.get("load_average_end") or ["?"]
    lines = ["", "## Beside the peers (issue 22)", ""]
    if versions:
        shown = ", ".join(f"{n} {v} (`{PEERS[n].entry}`)" for n, v in versions.items())
        lines += [f"Peers, each in its own virtualenv under `benchmarks/.peers/`: {shown}. Load average "
                  f"{load[0]} at start, {end[0]} at end (1-minute), {info.get('nproc')} CPUs.", ""]
    header = "| workload | rows | ours median s | " + " | ".join(
        f"{n} median s | ours/{n}" for n in PEERS) + " |"
    lines += [header, "|---|--:|--:|" + "--:|--:|" * len(PEERS)]
    for w in ("W1", "W4", "W10"):
        ours = results.get(w)
        if ours is None and not any(f"{w}-{n}" in peers for n in PEERS):
            continue
        cells = [w, f"{ours['rows']:,}" if ours else "—", _fmt(_median(ours))]
        for n in PEERS:
            theirs = peers.get(f"{w}-{n}")
            cells.append(_fmt(_median(theirs)) if theirs and theirs["status"] == "ok" else
                         (theirs["status"] if theirs else "not run"))
            a, b = _per_row(ours), _per_row(theirs)
            cells.append(f"{a / b:.2f}" if a is not None and b else "—")
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    for name, r in peers.items():
        net = r.get("network_attempts")
        if net is not None:
            attempts = sum(len(v) for v in net.values())
            notes.append(f"{name}: network attempts: {'none' if not attempts else json.dumps(net)}; "
                         f"first run in its fresh process {_fmt(r.get('warmup_s'))} s ({r.get('warmup_rows')} rows)")
        else:
            notes.append(f"{name}: {r['status']} {r.get('stderr_tail', '')[-300:]!r}")
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    if "W10" in results and results["W10"].get("times"):
        r = results["W10"]
        lines += ["", f"W10 (the issue's W8): {r['rows']:,} × sleep(1.0), 1,000 workers: median {_fmt(_median(r))} s, "
                  f"ideal {r['ideal_s']:.0f} s, bare `asyncio.gather` of the same sleeps {_fmt(r['floor_s'])} s, "
                  f"runner CPU {r['cpu_ms_per_row']:.3f} ms per row, peak RSS {r['peak_rss_mb']:.0f} MB"]
        if r.get("split_s"):  # medians: run() to the first row's start, first start to last end, then to return
            sp = r["split_s"]
            lines[-1] += (f"; split: {sp['before_first_row_s'] * 1000:.0f} ms before the first row, rows "
                          f"{sp['rows_span_s']:.3f} s, {sp['after_last_row_s'] * 1000:.0f} ms after the last row")
    if "W11" in results and results["W11"].get("medians"):
        m = results["W11"]["medians"]
        lines += ["", f"W11 (the issue's W9): {results['W11']['rows']:,} concurrent `acompletion()` calls via "
                  "`serve` to the fake provider (100 ms), medians of the runs:", "",
                  "| phase | wall s | calls/s | p50 ms | p99 ms | added p50 ms | added p99 ms |",
                  "|---|--:|--:|--:|--:|--:|--:|"]
        for phase, what in (("direct", "straight to the provider (floor)"), ("miss", "via serve, provider answers"),
                            ("hit", "via serve, cached")):
            s = m[phase]
            lines.append(f"| {what} | {s['wall_s']:.3f} | {s['calls_per_s']:,.0f} | {s['p50_ms']:.1f} | "
                         f"{s['p99_ms']:.1f} | {s['added_p50_ms']:.1f} | {s['added_p99_ms']:.1f} |")
        if "one" in m:
            o = m["one"]
            lines += ["", f"One call at a time (context, not the goal): straight {o['straight_p50_ms']:.1f} ms, "
                      f"via serve {o['via_p50_ms']:.1f} ms (p50); serve adds {o['added_p50_ms']:.1f} ms p50, "
                      f"{o['added_p99_ms']:.1f} ms p99 over the median straight call."]
    goals = _goals(results, peers)
    lines += ["", "### Goals of issue 22", ""]
    lines += [f"- **{g['verdict']}** {g['workload']}: {g['target']} — measured {g['measured']}" for g in goals]
    return "\n".join(lines), goals


def _goals(results: dict[str, dict[str, Any]], peers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, target: str, measured: str | None, ok: bool) -> None:
        out.append({"workload": name, "target": target, "measured": measured or "not run",
                    "verdict": "NOT RUN" if measured is None else "PASS" if ok else "FAIL"})

    bt = _per_row(peers.get("W1-braintrust"))
    for name, limit in (("W1", 0.5), ("W2", 1.0)):
        ours = _per_row(results.get(name))
        if name in results or "W1-braintrust" in peers:
            q = ours / bt if ours is not None and bt else None
            add(name, f"≤ {limit} × Braintrust W1 (logging off), per row",
                f"{q:.2f} ×" if q is not None else None, q is not None and q <= limit)
    r4 = results.get("W4")
    if r4 and _median(r4):
        ideal = _ideal("W4", r4) or 0.0
        eff = ideal / (_median(r4) or 1)
        add("W4", "≥ 0.95 of ideal warm (median of the runs after the first)", f"{eff:.3f}", eff >= 0.95)
        first = ideal / r4["warmup_s"] if r4.get("warmup_s") else None
        add("W4", "first run in a fresh process ≥ 0.85 of ideal", f"{first:.3f}" if first else None,
            bool(first and first >= 0.85))
    r10 = results.get("W10")
    if r10 and _median(r10):
        eff = r10["ideal_s"] / (_median(r10) or 1)
        add("W10", "(issue's W8) ≥ 0.985 of ideal", f"{eff:.4f} (CPU {r10['cpu_ms_per_row']:.3f} ms/row)",
            eff >= 0.985)
    r11 = results.get("W11")
    if r11 and r11.get("medians"):
        m = r11["medians"]
        add("W11", "(issue's W9) added latency p50 ≤ 5 ms", f"{m['miss']['added_p50_ms']:.1f} ms",
            m["miss"]["added_p50_ms"] <= 5)
        add("W11", "(issue's W9) added latency p99 ≤ 25 ms", f"{m['miss']['added_p99_ms']:.1f} ms",
            m["miss"]["added_p99_ms"] <= 25)
        add("W11", "(issue's W9) cached calls ≥ 2,000/s", f"{m['hit']['calls_per_s']:,.0f}/s",
            m["hit"]["calls_per_s"] >= 2000)
    r5 = results.get("W5")
    if r5 and _median(r5):
        scaled = 30.0 * r5["rows"] / 1_000_000
        add("W5", f"≤ {scaled:g} s ({r5['rows']:,} rows)", f"{_median(r5):.1f} s", (_median(r5) or 0) <= scaled)
        rss = r5.get("peak_rss_mb") or 0
        add("W5", "peak RSS ≤ 250 MB", f"{rss:.0f} MB", 0 < rss <= 250)
    return out
