"""A run's failures are stored with it (issue 15): a dataset-level eval that raised and the
"scorer X failed, e.g. ..." examples reach ``show``, the web UI, the API and the exports, through
both doors. And the web UI's run duration is the one the summary and ``show`` give (issue 21).

Runs go into a real SQLite file, through the embedded store or HTTP to a real ``serve`` on
loopback (the ``door`` fixture); ``show`` runs through the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html import unescape
from pathlib import Path
from typing import Any

import httpx

from runner import Experiment, Score
from runner.results.format import seconds
from runner.scoring import Log
from tests.doors import Door
from tests.servers import API_PREFIX, start_server


def macro_f1(logs: list[Log]) -> float:
    """A dataset-level eval with a bug: it fails on every run while ``broken`` exists."""
    if Path("broken").exists():
        raise ZeroDivisionError("no positive labels in 10 rows")
    return 0.5


def judge(log: Log) -> Score:
    if int(log.inputs["i"]) % 5 == 0:
        raise RuntimeError("judge unavailable")
    return Score("judge", 1.0)


def experiment(**where: Any) -> Experiment:
    """Ten rows; ``where``: the door's keyword arguments (``db`` or ``base_url``)."""
    return Experiment(
        name="fails",
        data=[{"i": i} for i in range(10)],
        func=lambda i: i,
        evals=[judge],
        dataset_level_evals=[macro_f1],
        **where,
    )


def cli(door: Door, *args: str) -> subprocess.CompletedProcess[str]:
    where = ["--base-url", door.base_url] if door.base_url is not None else ["--db", str(door.db)]
    proc = subprocess.run([sys.executable, "-m", "runner", *args, *where], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@contextmanager
def web(door: Door) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """The UI and the API over the door's store: the door's own server, or one started on its file."""
    if door.base_url is not None:
        root = door.base_url.removesuffix(API_PREFIX)
        with httpx.Client(base_url=root, timeout=60) as ui, httpx.Client(base_url=door.base_url, timeout=60) as api:
            yield ui, api
        return
    with (
        start_server(door.db) as server,
        httpx.Client(base_url=server.url, timeout=60) as ui,
        httpx.Client(base_url=server.base_url, timeout=60) as api,
    ):
        yield ui, api


def page_text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def listed(api: httpx.Client, uuid: str) -> dict[str, Any]:
    found = api.post("/experiments", json={"experiment_uuids": [uuid]})
    assert found.status_code == 200, found.text
    (exp,) = found.json()
    assert isinstance(exp, dict)
    return exp


def test_a_failed_dataset_level_eval_is_shown_wherever_the_run_is(door: Door, tmp_path: Path) -> None:
    (tmp_path / "broken").touch()
    result = experiment(**door.kwargs()).run(run_name="r1", quiet=True)
    failure = "ZeroDivisionError: no positive labels in 10 rows"
    example = "RuntimeError: judge unavailable"
    assert result.dataset_level_errors == {"macro_f1": failure}
    assert result.scorer_errors == {"judge": example}

    shown = cli(door, "show", "r1").stdout
    assert f"dataset-level macro_f1: failed: {failure}" in shown
    assert f"scorer judge failed on some rows, e.g.: {example}" in shown
    exported = json.loads(cli(door, "show", "r1", "--json").stdout)
    assert exported["dataset_level_errors"] == {"macro_f1": failure}
    assert exported["scorer_errors"] == {"judge": example}

    with web(door) as (ui, api):
        exp = listed(api, result.experiment_uuid)
        assert exp["dataset_level_errors"] == {"macro_f1": failure}
        assert exp["scorer_errors"] == {"judge": example}
        page = ui.get(f"/runs/{result.experiment_uuid}")
        assert page.status_code == 200
        summary = page_text(page.text.split('class="rows"', 1)[0])
        assert f"macro_f1 failed {failure}" in summary
        assert f"judge failed on some rows, e.g.: {example}" in summary


def test_failures_survive_a_re_pin(door: Door, tmp_path: Path) -> None:
    (tmp_path / "broken").touch()
    result = experiment(**door.kwargs()).run(run_name="r1", quiet=True)
    uuid = result.experiment_uuid
    # a late row (issue 13): the run is stale and the next read re-pins its stats
    late = {"trace_id": "late-row", "root_trace_id": "late-row", "parent_trace_id": "late-row"}
    door.store.upsert_traces([{**late, "experiment_uuid": uuid, "start_timestamp": "x"}])
    again = door.store.get_experiment(uuid)
    assert again["num_samples"] == 11 and again["stale"] == 0
    assert again["dataset_level_errors"] == {"macro_f1": "ZeroDivisionError: no positive labels in 10 rows"}
    assert again["scorer_errors"] == {"judge": "RuntimeError: judge unavailable"}


def test_a_resumed_runs_finish_replaces_the_stored_failures(door: Door, tmp_path: Path) -> None:
    (tmp_path / "broken").touch()
    result = experiment(**door.kwargs()).run(run_name="r1", quiet=True)
    uuid = result.experiment_uuid
    assert door.store.get_experiment(uuid)["dataset_level_errors"] != {}
    (tmp_path / "broken").unlink()  # fixed: the resumed run's finish replaces the stored failures
    resumed = experiment(**door.kwargs()).run(run_name="r1", resume=True, quiet=True)
    assert resumed.experiment_uuid == uuid and resumed.dataset_level_errors == {}
    fixed = door.store.get_experiment(uuid)
    assert fixed["dataset_level_errors"] == {}
    assert [s["name"] for s in fixed["dataset_level_stats"]] == ["macro_f1"]
    shown = cli(door, "show", "r1").stdout
    assert "macro_f1: failed" not in shown and "dataset-level macro_f1: 0.50" in shown


def test_a_finish_without_the_extension_keeps_what_is_stored(tmp_path: Path) -> None:
    """Another Parea client finishing the run again (no extension fields) does not erase them."""
    (tmp_path / "broken").touch()
    db = tmp_path / "r.db"
    result = experiment(db=db).run(run_name="r1", quiet=True)
    with start_server(db) as server, httpx.Client(base_url=server.base_url, timeout=60) as api:
        done = api.post(f"/experiment/{result.experiment_uuid}/finished", json={"status": "completed"})
        assert done.status_code == 200, done.text
        assert listed(api, result.experiment_uuid)["dataset_level_errors"] == {
            "macro_f1": "ZeroDivisionError: no positive labels in 10 rows"
        }


SLEEPY = """
import time
from pathlib import Path
from runner import Experiment

def work(x):
    if x >= 2 and Path("fail").exists():
        raise RuntimeError("not yet")
    time.sleep(0.1)
    return x

exp = Experiment(name="sleepy", data=[{"x": i} for i in range(4)], func=work, n_workers=1)
"""


def test_the_ui_gives_a_resumed_run_the_duration_show_gives(door: Door, tmp_path: Path) -> None:
    (tmp_path / "cfg.py").write_text(textwrap.dedent(SLEEPY), encoding="utf-8")
    (tmp_path / "fail").touch()
    run = [sys.executable, "-m", "runner", "cfg.py", "--quiet", "--run-name", "r"]
    where = ["--base-url", door.base_url] if door.base_url is not None else ["--db", str(door.db)]
    first = subprocess.run([*run, *where], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    time.sleep(3.0)  # the run lies dead for a while before it is resumed
    (tmp_path / "fail").unlink()
    again = subprocess.run([*run, "--resume", *where], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    shown = json.loads(cli(door, "show", "r", "--json").stdout)
    assert 0.35 <= shown["duration"] < 3.0, shown["duration"]  # four rows of 0.1 s; not the 3 s pause
    exp = door.store.find_experiment("r")
    with web(door) as (ui, _):
        html = ui.get(f"/runs/{exp['uuid']}").text
    found = re.search(r"duration ([^·<]+?)\s*·", page_text(html))
    assert found is not None, page_text(html)[:500]
    assert found.group(1) == seconds(shown["duration"])


def test_a_spooled_finish_keeps_the_failures_for_sync(tmp_path: Path) -> None:
    """A finish call recorded while the server is away (for ``python -m runner sync``) carries
    the failures, and replaying it stores them."""
    from runner.backends.http.spool import Spool
    from tests.servers import experiment as new_experiment

    failures = {"dataset_level_errors": {"macro_f1": "ZeroDivisionError: x"}, "scorer_errors": {"judge": "E: y"}}
    with start_server(tmp_path / "r.db") as server, httpx.Client(base_url=server.base_url, timeout=60) as api:
        uuid = new_experiment(api)["uuid"]
        spool = Spool.for_experiment(tmp_path / "spool", uuid, server.base_url)
        spool.record_finish("completed", [], failures)
        body = spool.state().finish
        assert body is not None and body["dataset_level_errors"] == failures["dataset_level_errors"]
        assert api.post(f"/experiment/{uuid}/finished", json=body).status_code == 200
        exp = listed(api, uuid)
        assert (exp["dataset_level_errors"], exp["scorer_errors"]) == (
            failures["dataset_level_errors"],
            failures["scorer_errors"],
        )
