"""Scheduler-free shards: 4 shard processes (one killed with SIGKILL and run again) fill one run,
``finish`` ends it, and what is stored equals one unsharded run of the same data, value for value."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from runner.errors import ConfigError
from runner.pipeline.shards import in_shard, parse_shard
from runner.store import Store
from tests.doors import Door

pytestmark = pytest.mark.timeout(240)

CONFIG = textwrap.dedent(
    """
    import os, threading
    from pathlib import Path
    from runner import Experiment, trace
    from evals.dataset import balanced_accuracy

    HERE = Path(__file__).parent

    @trace
    def half(x):
        return x // 2

    def f(x):
        if x == 5:
            raise ValueError("five is bad")
        if x == HANG_ROW and os.environ.get("HANG") == "1":
            (HERE / "hanging").write_text(str(os.getpid()))
            threading.Event().wait(200)  # until kill -9
        return {"even": half(x) * 2 == x, "x": x}

    def right(log):
        return float(log.output["even"] == log.target)

    exp = Experiment(name="sharded", data=[{"x": i, "target": i % 3 != 0} for i in range(60)], func=f,
                     evals=[right], dataset_level_evals=[balanced_accuracy()], n_trials=2, n_workers=1)
    """
)


def _cli(args: list[str], door: Door, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    where = ["--base-url", door.base_url] if door.base_url else ["--db", str(door.db)]
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args, *where, *([] if args[0] == "finish" else ["--quiet"])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )


def _done(p: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=200)
    return p.returncode, out, err


def _experiment(store: Store, run_name: str) -> dict[str, Any]:
    (e,) = [e for e in store.list_experiments() if e["run_name"] == run_name]
    return e


def _rows(store: Store, uuid: str) -> dict[tuple[str, int], tuple[Any, ...]]:
    out = {}
    for r in store.experiment_rows(uuid):
        key = (r["metadata"]["row_id"], r["metadata"]["trial"])
        assert key not in out, f"row-trial {key} stored twice"
        out[key] = (r["trace_id"] is not None, r["status"], r.get("output"), r.get("inputs"), r.get("target"),
                    sorted((s["name"], s["score"]) for s in r.get("scores") or []),
                    (r.get("error") or "").strip().splitlines()[-1:])
    return out


def test_four_shards_one_killed_then_finish_equal_an_unsharded_run(door: Door, tmp_path: Path) -> None:
    config = tmp_path / "cfg.py"
    # the row that hangs in shard 2 on its first run: the first of that shard's rows
    from runner.pipeline.dataset import RowSource

    ids = [r.id for r in RowSource(iter([{"x": i, "target": i % 3 != 0} for i in range(60)]))]
    hang = next(i for i, rid in enumerate(ids) if in_shard(rid, (2, 4)) and i > 10)
    config.write_text(CONFIG.replace("HANG_ROW", str(hang)))

    shards = [_cli(["cfg.py", "--run-name", "nightly", "--shard", f"{i}/4"], door,
                   {"HANG": "1"} if i == 2 else None) for i in range(4)]
    # shard 2 is killed mid-row, once its hanging row says it started
    marker = tmp_path / "hanging"
    wait = threading.Event()
    while not (marker.exists() and marker.read_text()) and shards[2].poll() is None:
        wait.wait(0.05)
    assert marker.exists(), _done(shards[2])
    os.kill(int(marker.read_text()), signal.SIGKILL)
    codes = [_done(p) for p in shards]
    assert codes[2][0] == -signal.SIGKILL
    for i in (0, 1, 3):
        assert codes[i][0] == 0, codes[i]
    # nothing finished it, and finish names what is missing
    code, _, err = _done(_cli(["finish", "cfg.py", "--run-name", "nightly"], door))
    assert code == 1 and "is not complete" in err and f"row {hang} " in err, err
    experiment = _experiment(door.store, "nightly")
    assert experiment["status"] != "completed" and not experiment["dataset_level_stats"]
    # the killed shard runs again (its stored rows are skipped), then finish
    code, _, err = _done(_cli(["cfg.py", "--run-name", "nightly", "--shard", "auto/4"], door,
                              {"JOB_COMPLETION_INDEX": "2"}))
    assert code == 0, err
    code, out, err = _done(_cli(["finish", "cfg.py", "--run-name", "nightly", "--json"], door))
    assert code == 0, err
    (sharded,) = json.loads(out)
    code, out, err = _done(_cli(["cfg.py", "--run-name", "whole", "--json"], door))
    assert code == 0, err
    (whole,) = json.loads(out)["experiments"]

    a, b = _experiment(door.store, "nightly"), _experiment(door.store, "whole")
    assert a["status"] == b["status"] == "completed"
    assert a["num_samples"] == b["num_samples"] == 120
    assert a["dataset_level_stats"] == b["dataset_level_stats"] and a["dataset_level_stats"]
    pinned = lambda e: [p for p in e["pinned_stats"] if p["var1"] != "Latency"]  # noqa: E731
    assert pinned(a) == pinned(b)
    assert _rows(door.store, a["uuid"]).keys() == _rows(door.store, b["uuid"]).keys()
    assert sorted(_rows(door.store, a["uuid"]).values()) == sorted(_rows(door.store, b["uuid"]).values())
    for key in ("scores", "dataset_level_stats", "dataset_level_ci", "n_total", "n_errors", "status"):
        assert sharded[key] == whole[key], key
    assert sharded["n_total"] == 120 and sharded["n_errors"] == 2


def test_parse_shard() -> None:
    assert parse_shard("0/8") == (0, 8)
    assert parse_shard("auto/4", {"SLURM_ARRAY_TASK_ID": "3"}) == (3, 4)
    for bad, message in (("8/8", "0 to 7"), ("x/2", "0 to 1"), ("3", "I/N"), ("1/0", "I/N"), ("auto/2", "neither")):
        with pytest.raises(ConfigError, match=message):
            parse_shard(bad, {})
    # every row is in exactly one shard
    for rid in ("a", "b", "17", "row-99"):
        assert sum(in_shard(rid, (i, 5)) for i in range(5)) == 1
