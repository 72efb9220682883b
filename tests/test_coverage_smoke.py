"""``benchmarks/coverage.py`` keeps working: a few repetitions of a few scenarios in a subprocess.

No coverage figure is asserted (a handful of repetitions says nothing); the simulation is run by
hand (``python benchmarks/coverage.py``) and its table is in the closing note of issue 15.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "coverage.py"


def test_coverage_script_runs_and_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "cov.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--reps", "3", "--only", "n=10", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| scenario | reps |" in proc.stdout
    rows = json.loads(out.read_text())
    names = [r["scenario"] for r in rows]
    assert "pearson, rho=0.5, n=10" in names and "A/A binary, n=10" in names
    assert all(0.0 <= r["coverage"] <= 1.0 and r["reps"] == 3 for r in rows)
