"""The runner's benchmarks, side by side with the official ``parea-ai`` SDK, as one Markdown table.

Usage::

    python benchmarks/run.py                 # everything: ~10 minutes, most of it the SDK
    python benchmarks/run.py --quick         # smaller sizes, one run each: a sanity check
    python benchmarks/run.py --only W1,W3 --runs 5 --json results.json
    python benchmarks/run.py --no-sdk        # only our runner

Workloads (``benchmarks/README.md`` says what each one measures and how to read the table):

    W1  10,000 rows, no-op sync function, exact_match, embedded store      <= 1.0 s
    W2  W1 over HTTP to `python -m runner serve`                           <= 2.0 s, every score stored
    W3  200 rows, async sleep 0.1 s, 20 workers (ideal 1.0 s), embedded    >= 97 % of ideal
    W4  W3 with 100 workers (ideal 0.2 s) and exact_match                   >= 90 % of ideal
    W5  1,000,000-row JSONL file, no-op function, no scorer, embedded      completes, peak RSS <= 500 MB
    W6  python -c "import runner"                                          <= 0.25 s
    W7  1,000 sync rows, runs of 40 instant then 40 x 50 ms, 10 workers    >= 95 % of ideal (2.5 s)
    W8  200 sync rows, 7 of them hang, timeout=1, 10 workers               >= 90 % of ideal (1.0 s)
    W10 10,000 rows, async sleep 1.0 s, 1,000 workers (issue 22's "W8")   >= 98.5 % of ideal (10 s)
    W11 1,000 concurrent acompletion() via serve, 100 ms provider ("W9")   added p50 <= 5 ms, p99 <= 25 ms

Peers (``benchmarks/peers.py``): Braintrust ``Eval(no_send_logs=True)`` and LangSmith
``evaluate(upload_results=False)`` run W1, W4 and W10 in virtualenvs of their own under
``benchmarks/.peers/`` (made on first use, pinned), offline; ``--no-peers`` skips them and the SDK.

Each workload runs in a fresh child process (``--child NAME``), which prints one JSON line; the
SDK runs W2 and W3 once each against a fresh ``serve`` of ours, never the internet. This script
is not part of the test suite's pass/fail; ``tests/test_benchmarks_smoke.py`` only keeps it
working.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from measure import count_stored  # noqa: E402
from peers import PEERS, ensure_venv, peer_python, render_issue22, run_peer  # noqa: E402
from report import render  # noqa: E402
from workloads import RESULT_PREFIX, main_child  # noqa: E402

API_PREFIX = "/api/parea/v1"


@dataclass(frozen=True)
class Workload:
    """One row of the table: what runs, at which size, and how long the child may take."""

    name: str
    rows: int
    quick_rows: int
    over_http: bool = False
    sdk: bool = False

    @property
    def base(self) -> str:
        return self.name.removesuffix("-sdk")


WORKLOADS = {
    w.name: w
    for w in (
        Workload("W1", 10_000, 2_000),
        Workload("W2", 10_000, 2_000, over_http=True),
        Workload("W3", 200, 200),
        Workload("W4", 200, 200),
        Workload("W5", 1_000_000, 100_000),
        Workload("W6", 0, 0),
        Workload("W7", 1_000, 1_000),
        Workload("W8", 200, 200),
        Workload("W2-sdk", 10_000, 1_000, over_http=True, sdk=True),
        Workload("W3-sdk", 200, 200, over_http=True, sdk=True),
    )
}
# issue 22's big runs (benchmarks/scale.py); its "W8" and "W9", renamed: W8 is the hanging-rows workload
WORKLOADS.update({w.name: w for w in (Workload("W10", 10_000, 2_000), Workload("W11", 1_000, 1_000))})
ISSUE22 = ("W10", "W11")


# -- the machine ----------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:  # pragma: no cover - not Linux
        pass

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):  # pragma: no cover
            return ""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": cpu,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": f"{platform.system()} {platform.release()}",
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "parea_ai": version("parea-ai"),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# -- a `serve` of ours, in its own process --------------------------------------------------------
def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the runner's and the SDK's settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAREA_", "_PAREA", "RUNNER_", "TURN_OFF_PAREA"))}
    env.update(extra)
    return env


def compile_ours() -> None:
    """Write the bytecode of ``runner/``, ``evals/`` and ``benchmarks/`` into their ``__pycache__``
    (as ``pip install`` does for a package it installs), so that "the first run in a fresh process"
    is not also the first compile of every module. The peers' packages got theirs when pip
    installed them; an editable install of ours gets it on first import, unless the environment
    sets ``PYTHONDONTWRITEBYTECODE`` (which this one may: then every fresh process would compile
    our modules from source, and only ours). ``--no-compile`` measures without it."""
    import compileall

    for package in ("runner", "evals", "benchmarks"):
        compileall.compile_dir(str(ROOT / package), quiet=1, workers=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """``python -m runner serve`` on a free loopback port over a fresh SQLite file."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + API_PREFIX
        self._log = (db.parent / "serve.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runner",
                "serve",
                "--port",
                str(self.port),
                "--db",
                str(db),
                "--log-level",
                "warning",
            ],
            env=clean_env(),
            cwd=db.parent,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.base_url + "/", timeout=2).close()
                return
            except urllib.error.HTTPError:  # any HTTP answer: it is up
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"`python -m runner serve` did not start; see {db.parent / 'serve.log'}") from None
                time.sleep(0.05)

    def stop(self) -> float | None:
        """Stop the server (SIGINT, then SIGKILL); its peak RSS in MiB."""
        peak = None
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                peak = next((int(x.split()[1]) / 1024 for x in f if x.startswith("VmHWM:")), None)
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return peak


# -- running one child ----------------------------------------------------------------------------
def run_child(w: Workload, rows: int, runs: int, timeout: float, tmp: Path, flush_timeout: float) -> dict[str, Any]:
    """Run workload ``w`` in a fresh child process and return what it measured.

    Over HTTP, this process owns the server, so a child that times out or crashes still leaves
    a store to count: the rows that reached it are counted after the server stops."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{w.name}-", dir=tmp))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        w.name,
        "--rows",
        str(rows),
        "--runs",
        str(runs),
        "--flush-timeout",
        str(flush_timeout),
    ]
    server = Serve(workdir / "serve.db") if w.over_http else None
    env = clean_env()
    if server is not None and w.sdk:
        env.update(PAREA_BASE_URL=server.base_url, PAREA_API_KEY="benchmark")
    elif server is not None:
        cmd += ["--base-url", server.base_url]
    out: dict[str, Any] = {"workload": w.name, "rows": rows, "runs": runs, "status": "ok"}
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out.update(status="timeout", timeout_s=timeout, stderr_tail=_tail(exc.stderr))
    else:
        line = next((x for x in reversed(proc.stdout.splitlines()) if x.startswith(RESULT_PREFIX)), None)
        if proc.returncode != 0 or line is None:
            out.update(status="error", returncode=proc.returncode, stderr_tail=_tail(proc.stderr))
        else:
            out.update(json.loads(line.removeprefix(RESULT_PREFIX)))
            if w.sdk:
                out["sdk_errors"] = _error_lines(proc.stderr)
                out["stderr_tail"] = _tail(proc.stderr, 1500)
    out["child_wall_s"] = time.monotonic() - started
    if server is not None:
        out["server_peak_rss_mb"] = server.stop()
        _count_in_server_store(out, server.db, runs, w)
    return out


def _count_in_server_store(out: dict[str, Any], db: Path, runs: int, w: Workload) -> None:
    """Fill each run's ``stored_rows``/``stored_scores`` from the (stopped) server's SQLite file."""
    from runner.store import Store

    score = "exact_match" if w.base == "W2" else None
    prefix = f"sdk-{w.base.lower()}" if w.sdk else w.base.lower()
    store = Store(db)
    try:
        by_run = {e["run_name"]: e["uuid"] for e in store.list_experiments()}
    finally:
        store.close()
    detail = out.get("detail") or [{"run_name": f"{prefix}-run-{k}"} for k in range(1, runs + 1)]
    for d in detail:
        uuid = by_run.get(d["run_name"])
        d["stored_rows"], d["stored_scores"] = count_stored(db, uuid, score) if uuid else (0, 0)
    out["detail"] = detail
    out.setdefault("expected_scores", out["rows"] if score else 0)


def _error_lines(text: str) -> dict[str, int]:
    """Distinct lines of the SDK's stderr that mention an error (the port masked), with counts."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if "error" in line.lower():
            key = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line.strip())[:200]
            counts[key] = counts.get(key, 0) + 1
    return counts


def _tail(text: str | bytes | None, n: int = 3000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]


# -- the command line -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="W1/W2 2,000 rows, W5 100,000 rows, the SDK's W2 1,000 rows, one run each"
    )
    parser.add_argument("--runs", type=int, default=None, help="measured runs per workload (default: 3; --quick: 1)")
    parser.add_argument(
        "--w5-runs",
        type=int,
        default=1,
        help="measured runs of W5, whose target is memory, not speed (default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        default=None,
        metavar="W1,W3",
        help="run only these workloads (W1..W8, W10, W11; W2-sdk, W3-sdk for the SDK alone)",
    )
    parser.add_argument("--no-sdk", action="store_true", help="skip the parea-ai SDK runs")
    parser.add_argument(
        "--no-peers", action="store_true", help="skip every peer: Braintrust, LangSmith and the parea-ai SDK"
    )
    parser.add_argument(
        "--peer-timeout", type=float, default=600, help="seconds per peer child (default: %(default)s)"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also save every number here")
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        metavar="PATH",
        help="print the table of a run saved with --json, running nothing",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child of ours (default: %(default)s)")
    parser.add_argument(
        "--sdk-timeout",
        type=float,
        default=1800,
        help="seconds per SDK child, flushing included (default: %(default)s)",
    )
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="do not write our modules' bytecode first (see compile_ours): measure as the environment has it",
    )
    # the child side: one workload in this process, one JSON line on stdout
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--flush-timeout", type=float, default=300, help=argparse.SUPPRESS)
    return parser


def selected(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Workload]:
    names = (
        [n.strip() for n in args.only.split(",") if n.strip()]
        if args.only
        else ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"]
    )
    if not args.only:
        names += list(ISSUE22)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    if not (args.no_sdk or args.no_peers):
        names += [f"{n}-sdk" for n in names if f"{n}-sdk" in WORKLOADS and f"{n}-sdk" not in names]
    else:
        names = [n for n in names if not n.endswith("-sdk")]
    # ours first, the slow SDK last
    return sorted((WORKLOADS[n] for n in dict.fromkeys(names)), key=lambda w: (w.sdk, w.name))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.child is not None:
        if args.child not in WORKLOADS:
            parser.error(f"unknown workload {args.child!r}")
        w = WORKLOADS[args.child]
        main_child(
            w.name, args.rows if args.rows is not None else w.rows, args.runs or 1, args.base_url, args.flush_timeout
        )
        return 0
    if args.rows is not None or args.base_url is not None:
        parser.error("--rows and --base-url are for --child")
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        print(render(saved["machine"], saved["results"], quick=saved["mode"] == "quick", runs=saved["runs"])[0])
        print(render_issue22(saved["machine"], saved["results"], saved.get("peers", {}),
                             saved.get("peer_versions", {}))[0])
        return 0
    runs = args.runs or (1 if args.quick else 3)
    if runs < 1 or args.w5_runs < 1:
        parser.error("--runs and --w5-runs must be at least 1")

    info = machine()
    info["bytecode"] = "precompiled" if not args.no_compile else "as the environment has it"
    if not args.no_compile:
        compile_ours()
    results: dict[str, dict[str, Any]] = {}
    peer_results: dict[str, dict[str, Any]] = {}
    versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp_name:
        for w in selected(args, parser):
            rows = w.quick_rows if args.quick else w.rows
            n = (
                1
                if w.sdk
                else args.w5_runs
                if w.name == "W5"
                else (5 if args.quick else max(10, runs))
                if w.name == "W6"
                else runs
            )
            print(f"[{w.name}] {rows:,} rows x {n} run(s) ...", file=sys.stderr, flush=True)
            results[w.name] = run_child(
                w, rows, n, args.sdk_timeout if w.sdk else args.timeout, Path(tmp_name), args.flush_timeout
            )
            r = results[w.name]
            shown = f"median {statistics.median(r['times']):.3f} s" if r.get("times") else r["status"]
            print(f"[{w.name}] {shown} (child {r['child_wall_s']:.1f} s)", file=sys.stderr, flush=True)
            if not args.no_peers:  # right after ours, so that the machine's drift hits both alike
                run_peers(args, w.name, results[w.name], runs, peer_results, versions)
    if hasattr(os, "getloadavg"):
        info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    saved = {"machine": info, "mode": "quick" if args.quick else "full", "runs": runs, "results": results,
             "peers": peer_results, "peer_versions": versions}
    if args.json is not None:  # first, so that nothing measured is lost
        args.json.write_text(json.dumps(saved, indent=2))
    text, saved["targets"] = render(info, results, quick=args.quick, runs=runs)
    more, saved["goals_issue22"] = render_issue22(info, results, peer_results, versions)
    print(text + "\n" + more)
    if args.json is not None:
        args.json.write_text(json.dumps(saved, indent=2))
    return 0


def run_peers(
    args: argparse.Namespace,
    workload: str,
    ours: dict[str, Any],
    runs: int,
    out: dict[str, dict[str, Any]],
    versions: dict[str, str],
) -> None:
    """Each peer that runs ``workload``, at our row count, in a fresh process; into ``out``."""
    for peer in PEERS.values():
        if workload not in peer.workloads:
            continue
        if peer.name not in versions:
            python, versions[peer.name] = ensure_venv(peer)
            print(f"[peers] {peer.name} {versions[peer.name]} ({python})", file=sys.stderr, flush=True)
        python = peer_python(peer)
        rows = ours["rows"]
        name = f"{workload}-{peer.name}"
        print(f"[{name}] {rows:,} rows x {runs} run(s) ...", file=sys.stderr, flush=True)
        r = out[name] = run_peer(peer, python, workload, rows, runs, args.peer_timeout)
        shown = f"median {statistics.median(r['times']):.3f} s" if r.get("times") else r["status"]
        print(f"[{name}] {shown} (child {r['child_wall_s']:.1f} s)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
