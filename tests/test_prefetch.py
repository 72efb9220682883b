"""``runner.prefetch``: a run's summary imports load on a background thread while its rows run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from runner.prefetch import prefetch

ROOT = Path(__file__).resolve().parent.parent


def test_prefetch_imports_on_a_thread_once_and_swallows_failures() -> None:
    thread = prefetch("json.tool", "no_such_module_for_prefetch")
    assert thread is not None and thread.name == "runner-prefetch" and thread is not threading.current_thread()
    thread.join(60)
    assert "json.tool" in sys.modules and "no_such_module_for_prefetch" not in sys.modules
    assert prefetch("json.tool", "no_such_module_for_prefetch") is None  # loaded, or tried already


_CHILD = textwrap.dedent("""
    import asyncio, sys
    from runner import Experiment

    seen = []

    async def answer(x: str) -> str:
        for _ in range(600):  # up to 30 s: until the summary's numpy is loaded
            if "numpy" in sys.modules:
                break
            await asyncio.sleep(0.05)
        seen.append("numpy" in sys.modules)
        return x

    assert "numpy" not in sys.modules
    Experiment(name="prefetch", data=[{"x": "a"}], func=answer, db=sys.argv[1]).run(quiet=True)
    print(seen)
""")


def test_a_fresh_process_loads_numpy_while_its_first_row_runs(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "r.db")], cwd=ROOT, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[True]"
