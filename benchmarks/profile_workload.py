"""Where a workload's time goes: py-spy samples of one benchmark child, by category (issue 22).

    pip install -e '.[bench]'                      # pyinstrument and py-spy, into this venv only
    python benchmarks/profile_workload.py W1                 # 10,000 rows, 3 runs, every thread sampled
    python benchmarks/profile_workload.py W4 --runs 5 --gil  # only the samples holding the GIL
    python benchmarks/profile_workload.py W10 --rows 3000 --keep /tmp/w10.raw

It runs ``python benchmarks/run.py --child NAME`` under ``py-spy record --nonblocking -f raw``
(the child is not paused to sample it, so its timings stay close to an unprofiled run), then sorts
every sample of the run (imports, data generation and the counting afterwards left out) into one
category by the innermost frame that names one:

* **SQLite**: a frame in ``runner/store/`` (the writes, the schema, the reads of ``finish``);
* **JSON**: a frame whose function encodes (``dumps``, ``encode``, ``runner/_json``), or ``json/``;
* **event loop**: ``asyncio/`` or ``selectors`` with no runner frame inside it;
* **per-row Python**: any other frame in ``runner/`` or ``evals/`` (rows, tracing, scoring, sink);
* **the user function**: ``benchmarks/workloads.py``/``scale.py`` frames (the no-op, the sleeps);
* **other**: the rest (threading, the standard library).

With ``--gil`` py-spy keeps only samples of the thread holding the GIL: their share of the run's
wall time is how busy the interpreter is; the same categories then say who holds it.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = ("count_stored", "_find_and_load", "qa_rows", "x_rows", "xt_rows", "write_jsonl", "peak_rss_mb", "main_child")
CATEGORIES = ("SQLite", "JSON", "event loop", "per-row Python", "user function", "other")


def categorise(stack: str) -> str | None:
    """The category of one collapsed stack (root first, ``;``-separated), or None to leave it out."""
    frames = stack.split(";")
    if any(s in stack for s in SKIP):
        return None
    for frame in reversed(frames):  # innermost first
        if "dumps" in frame or "encode" in frame or "runner/_json" in frame or "/json/" in frame:
            return "JSON"
        if "runner/store/" in frame or "sqlite" in frame.lower():
            return "SQLite"
        if "benchmarks/workloads.py" in frame or "benchmarks/scale.py" in frame:
            return "user function"
        if "runner/" in frame or "evals/" in frame:
            return "per-row Python"
        if "asyncio/" in frame or "selectors.py" in frame:
            return "event loop"
    return "other"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/profile_workload.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", help="W1, W4, W10, ... (as for run.py --only)")
    parser.add_argument("--rows", type=int, default=None, help="rows (default: the workload's full size)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=200, help="samples per second (default: %(default)s)")
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    parser.add_argument("--native", action="store_true", help="also sample C frames (py-spy --native)")
    parser.add_argument("--keep", type=Path, default=None, help="also keep py-spy's raw output here")
    parser.add_argument("--top", type=int, default=8, help="show the N heaviest innermost runner frames")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(spy):
        parser.error("py-spy is not installed: pip install -e '.[bench]'")
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        raw = args.keep or Path(tmp) / "profile.raw"
        child = [sys.executable, str(HERE / "run.py"), "--child", args.workload, "--runs", str(args.runs)]
        if args.rows is not None:
            child += ["--rows", str(args.rows)]
        # --native needs py-spy to pause the child at each sample: its run times are then inflated
        cmd = [spy, "record", *([] if args.native else ["--nonblocking"]), "-r", str(args.rate)]
        cmd += ["-f", "raw", "-o", str(raw), "-t"]
        cmd += ["--gil"] if args.gil else []
        cmd += ["--native"] if args.native else []
        proc = subprocess.run([*cmd, "--", *child], cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        line = next((x for x in reversed(proc.stdout.splitlines()) if x.startswith("BENCH-RESULT ")), "")
        counts: collections.Counter[str] = collections.Counter()
        leaves: collections.Counter[str] = collections.Counter()
        for row in raw.read_text().splitlines():
            stack, _, n = row.rpartition(" ")
            cat = categorise(stack)
            if cat is None:
                continue
            counts[cat] += int(n)
            inner = next((f for f in reversed(stack.split(";")) if "runner/" in f or "evals/" in f), None)
            if inner:
                name, _, where = inner.partition(" (")
                leaves[f"{name} ({where.split('/runner/')[-1].split('/evals/')[-1]}"] += int(n)
    total = sum(counts.values()) or 1
    import json

    got = json.loads(line.removeprefix("BENCH-RESULT ")) if line else {}
    times = got.get("times") or []
    print(f"{args.workload}: {got.get('rows')} rows, run times {', '.join(f'{t:.3f}' for t in times)} s; "
          f"{total} samples at {args.rate}/s{' holding the GIL' if args.gil else ' (all threads, idle excluded)'}")
    if times and args.gil:
        busy = total / args.rate / (sum(times) + got.get("warmup_s", 0.0))
        print(f"GIL held during {busy:.0%} of the runs' wall time (warm-up included)")
    for cat in CATEGORIES:
        print(f"  {cat:<16} {counts[cat]:>6}  {counts[cat] / total:6.1%}")
    print("heaviest innermost runner/evals frames:")
    for frame, n in leaves.most_common(args.top):
        print(f"  {n / total:6.1%}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
