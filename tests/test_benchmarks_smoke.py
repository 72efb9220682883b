"""``benchmarks/run.py`` keeps working: one tiny workload in a subprocess, its JSON checked.

No timing is asserted: the benchmark is run by hand (``python benchmarks/run.py``), this test
only makes sure the script cannot rot as the runner changes under it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
PREFIX = "BENCH-RESULT "


def test_child_w1_stores_every_row_and_score(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(RUN), "--child", "W1", "--rows", "200", "--runs", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith(PREFIX))
    result = json.loads(line.removeprefix(PREFIX))
    assert result["workload"] == "W1" and result["rows"] == 200 and len(result["times"]) == 1
    (run,) = result["detail"]
    assert run["n_total"] == run["stored_rows"] == 200
    assert run["n_scored"] == run["stored_scores"] == 200
    assert result["peak_rss_mb"] > 0
