"""Rows on a real Dask cluster: a scheduler and two worker processes on 127.0.0.1, no mocks.

Every assertion is about what was stored (read back from the real SQLite file, through either
door) compared with the same experiment run in this process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")

from runner import Experiment, trace  # noqa: E402
from runner.errors import ConfigError, FunctionError  # noqa: E402
from runner.pipeline.executors import DaskExecutor, InProcessExecutor, resolve_executor  # noqa: E402
from runner.store import Store  # noqa: E402
from tests.dask_workers import extra_worker  # noqa: E402
from tests.doors import Door  # noqa: E402

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=":0",
        silence_logs=40,
    ) as c:
        yield c


@pytest.fixture
def address(cluster: Any) -> str:
    return "dask://" + cluster.scheduler_address.removeprefix("tcp://")


# -- the experiment: module-level, so workers import it by name ------------------------------------
@trace
def double(x: int) -> int:
    return x * 2


@trace(name="outer")
def outer(x: int) -> int:
    return double(x) + 1


def sync_fn(x: int) -> dict[str, Any]:
    if x == 3:
        raise ValueError("row three is bad")
    return {"value": outer(x), "pid": os.getpid()}


@trace
async def adouble(x: int) -> int:
    await asyncio.sleep(0.001)
    return x * 2


async def async_fn(x: int) -> dict[str, Any]:
    if x == 3:
        raise ValueError("row three is bad")
    return {"value": await adouble(x) + 1, "pid": os.getpid()}


def odd(log: Any) -> float:
    return float(log.output["value"] % 4 == 1)


async def big(log: Any) -> float:
    return float(log.output["value"] > 10)


DATA = [{"x": i, "target": 2 * i + 1} for i in range(12)]


def _stored(store: Store, uuid: str) -> dict[tuple[str, int], dict[str, Any]]:
    rows = store.experiment_rows(uuid)
    keys = [(str(r["metadata"]["row_id"]), int(r["metadata"]["trial"])) for r in rows]
    assert len(keys) == len(set(keys)), "a row-trial stored twice"
    return dict(zip(keys, rows, strict=True))


def _spans(store: Store, uuid: str) -> list[tuple[str, str, int]]:
    """(root trace id, span name, depth) of every stored child span."""
    out = []
    for (data,) in store._query("SELECT data FROM traces WHERE experiment_uuid=? AND is_root=0", (uuid,)):
        import orjson

        d = orjson.loads(data)
        out.append((d["root_trace_id"], d["trace_name"], int(d.get("depth") or 0)))
    return sorted(out)


def _view(store: Store, uuid: str) -> dict[tuple[str, int], tuple[Any, ...]]:
    """What must not depend on where rows ran (the worker's pid is dropped)."""
    import json

    out = {}
    for key, r in _stored(store, uuid).items():
        output = r.get("output")
        if r["status"] == "success":
            output = json.loads(output) if isinstance(output, str) else output
            output = output["value"] if isinstance(output, dict) else output
        scores = sorted((s["name"], s["score"]) for s in r.get("scores") or [])
        out[key] = (r["trace_id"] is not None, r["status"], output, scores, (r.get("error") or "").splitlines()[-1:])
    return out


@pytest.mark.parametrize("fn", [sync_fn, async_fn], ids=["sync", "async"])
def test_rows_run_on_the_workers_and_are_stored_as_in_process(door: Door, address: str, fn: Any) -> None:
    kwargs = dict(data=DATA, func=fn, evals=[odd, big], n_trials=2, n_workers=4, **door.kwargs())
    local = Experiment(name="here", **kwargs).run(quiet=True)
    remote = Experiment(name="there", **kwargs).run(quiet=True, executor=address)
    assert remote.status == "completed"
    assert (remote.n_total, remote.n_errors) == (local.n_total, local.n_errors) == (24, 2)
    assert remote.scores == local.scores  # means, intervals, counts: value for value
    assert _view(door.store, remote.experiment_uuid) == _view(door.store, local.experiment_uuid)
    # the nested spans were opened on the workers and came back with their rows
    here, there = _spans(door.store, local.experiment_uuid), _spans(door.store, remote.experiment_uuid)
    assert len(there) == len(here) == 2 * 11 * (2 if fn is sync_fn else 1)  # trials x good rows x spans
    assert sorted((n, d) for _, n, d in there) == sorted((n, d) for _, n, d in here)
    roots = {r["trace_id"] for r in _stored(door.store, remote.experiment_uuid).values()}
    assert {root for root, _, _ in there} <= roots
    pids = {r.get("output") for r in _stored(door.store, remote.experiment_uuid).values() if r["status"] == "success"}
    assert os.getpid() not in {__import__("json").loads(p)["pid"] for p in pids}, "rows ran on the driver"


def test_a_distributed_client_is_an_executor(cluster: Any, tmp_path: Path) -> None:
    with distributed.Client(cluster) as client:
        assert isinstance(resolve_executor(client), DaskExecutor)
        r = Experiment(name="c", data=DATA, func=sync_fn, db=tmp_path / "c.db").run(quiet=True, executor=client)
    assert (r.n_total, r.n_errors) == (12, 1)


def test_executor_values_resolve_in_one_place() -> None:
    assert isinstance(resolve_executor(None), InProcessExecutor)
    assert isinstance(resolve_executor("dask"), DaskExecutor)
    assert resolve_executor("dask://10.0.0.1:8786").address == "tcp://10.0.0.1:8786"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="unknown executor"):
        resolve_executor("spark://x")
    with pytest.raises(ConfigError, match="not an executor"):
        resolve_executor(42)


def test_a_function_that_cannot_travel_fails_before_any_row_runs(address: str, tmp_path: Path) -> None:
    lock = threading.Lock()

    def holds_a_lock(x: int) -> int:
        with lock:
            return x

    db = tmp_path / "p.db"
    with pytest.raises(FunctionError, match=r"cannot send the function 'holds_a_lock'.*lock"):
        Experiment(name="p", data=DATA, func=holds_a_lock, db=db).run(quiet=True, executor=address)
    store = Store(db)
    try:
        assert store._query("SELECT COUNT(*) FROM traces", ())[0][0] == 0
    finally:
        store.close()


def shown(x: Any) -> str:
    return type(x).__name__


def test_a_row_that_cannot_travel_is_that_rows_error_and_the_others_run(address: str, tmp_path: Path) -> None:
    # a lock among a row's values (a dataset made in Python): pickle refuses it, so that row
    # cannot reach a worker. Before, the whole run failed with pickle's TypeError.
    data: list[dict[str, Any]] = [{"x": 1}, {"x": threading.Lock()}, {"x": "three"}, {"x": 4.0}]
    result = Experiment(name="t", data=data, func=shown, n_workers=2, db=tmp_path / "t.db").run(
        quiet=True, executor=address
    )
    assert (result.n_total, result.n_errors) == (4, 1)
    rows = sorted(result.rows(), key=lambda r: r["metadata"]["row_index"])
    assert [r["output"] for i, r in enumerate(rows) if i != 1] == ["int", "str", "float"]
    assert rows[1]["status"] == "error"
    assert "cannot be sent to the Dask workers" in rows[1]["error"] and "lock" in rows[1]["error"]


def flaky(x: int, d: str) -> int:
    """Fails on even rows until a marker file exists in ``d`` (the 'fixed' code of a resumed run)."""
    if x % 2 == 0 and not (Path(d) / "fixed").exists():
        raise RuntimeError(f"not yet {x}")
    return x


def test_resume_and_retries_through_dask(address: str, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    data = [{"x": i, "d": str(tmp_path)} for i in range(12)]
    exp = Experiment(name="r", data=data, func=flaky, db=db, retries=1, retry_backoff=0.01)
    first = exp.run("r-1", quiet=True, executor=address)
    assert (first.n_total, first.n_errors) == (12, 6)
    store = Store(db)
    try:
        rows = _stored(store, first.experiment_uuid)
        assert all(r["metadata"].get("attempts") == 2 for r in rows.values() if r["status"] == "error")
        (tmp_path / "fixed").write_text("")
        again = exp.run("r-1", quiet=True, executor=address, resume=True)
        assert again.experiment_uuid == first.experiment_uuid
        assert (again.n_total, again.n_errors, again.resumed_rows) == (12, 0, 6)
        rows = _stored(store, first.experiment_uuid)
        assert len(rows) == 12 and all(r["status"] == "success" for r in rows.values())
    finally:
        store.close()


def killed_once(x: int, d: str) -> int:
    """Row 7's first attempt announces its pid (in ``d``) and waits to be killed; later attempts run."""
    if x == 7:
        marker = Path(d) / "started-7"
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass  # a re-run after the kill
        else:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            threading.Event().wait(200)  # until SIGKILL ends this process
    return x * 3


def thrice(log: Any) -> float:
    return float(log.output == 3 * log.inputs["x"])


def test_a_worker_killed_mid_row_has_its_row_rerun_and_each_row_stored_once(
    door: Door, address: str, tmp_path: Path
) -> None:
    data = [{"x": i, "d": str(tmp_path)} for i in range(40)]
    kwargs = dict(data=data, func=killed_once, evals=[thrice], n_workers=4, **door.kwargs())
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            box["result"] = Experiment(name="k", **kwargs).run(quiet=True, executor=address)
        except BaseException as exc:  # pragma: no cover - reported below
            box["error"] = exc

    t = threading.Thread(target=go)
    t.start()
    marker = tmp_path / "started-7"
    waited = threading.Event()
    while not (marker.exists() and marker.read_text()) and t.is_alive():
        waited.wait(0.05)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    t.join(200)
    assert "error" not in box, box.get("error")
    killed = box["result"]
    (tmp_path / "started-7").unlink()
    (tmp_path / "started-7").write_text("0")  # the uninterrupted run goes straight through row 7
    whole = Experiment(name="whole", **kwargs).run(quiet=True)
    assert (killed.status, killed.n_total, killed.n_errors) == ("completed", 40, 0)
    assert (killed.n_total, killed.n_errors) == (whole.n_total, whole.n_errors)
    assert killed.scores == whole.scores
    rows = _stored(door.store, killed.experiment_uuid)  # asserts no row-trial twice
    assert sorted(int(r["metadata"]["row_index"]) for r in rows.values()) == list(range(40))
    assert _view(door.store, killed.experiment_uuid) == _view(door.store, whole.experiment_uuid)


def two_calls(question: str) -> str:
    from runner import completion

    first = completion(f"first {question}", model="gpt-4o-mini")
    return completion(f"second {first.content}", model="gpt-4o-mini", name="second").content


def test_completion_calls_run_on_the_workers_with_the_runs_cache(
    door: Door, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import runner.integrations.llm
    from tests.proxy_fakes import FakeProvider

    with FakeProvider.running("openai") as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        # workers started now inherit the provider's address, as a real cluster's would be configured
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=":0",
            silence_logs=40,
        ) as c, distributed.Client(c) as client:
            data = [{"question": f"q{i}"} for i in range(4)]
            exp = Experiment(name="llm", data=data, func=two_calls, **door.kwargs())
            first = exp.run(quiet=True, executor=client)
            assert first.n_errors == 0 and fake.calls == 8
            again = exp.run(quiet=True, executor=client)
            assert again.n_errors == 0 and fake.calls == 8  # the second run was served from the cache
        runner.integrations.llm.close()
    for r in (first, again):
        stats = door.store.experiment_stats(r.experiment_uuid)
        assert len(stats) == 4 and all(s["total_tokens"] > 0 for s in stats)
        for s in stats:
            tree = door.store.get_trace_tree(s["trace_id"])
            names = [c["trace_name"] for c in tree["children_logs"]]
            assert names == ["llm-openai", "second"]
    assert first.stats["cost"] > 0
    if door.kind != "postgresql":  # a PostgreSQL store keeps the completion cache in memory
        with sqlite3.connect(door.db) as conn:
            assert conn.execute("SELECT count(*) FROM completion_cache").fetchone()[0] == 8


def where(x: int) -> int:
    return os.getpid()


def test_resources_send_rows_only_to_workers_that_have_them(tmp_path: Path) -> None:
    # a scheduler with one plain worker process, and one more worker process that has a GPU
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=":0",
        silence_logs=40,
    ) as c, distributed.Client(c) as client, extra_worker(c.scheduler_address, "GPU=1", "gpu"):
        client.wait_for_workers(2, timeout=120)
        pids = client.run(os.getpid)
        info = client.scheduler_info()["workers"]
        gpu_pid = {pids[a] for a, w in info.items() if w.get("resources", {}).get("GPU")}
        assert len(gpu_pid) == 1 and len(pids) == 2
        data = [{"x": i} for i in range(24)]
        exp = Experiment(name="gpu", data=data, func=where, resources={"GPU": 1}, n_workers=4, db=tmp_path / "g.db")
        r = exp.run(quiet=True, executor=client)
        plain = Experiment(name="any", data=data, func=where, n_workers=4, db=tmp_path / "g.db")
        r_any = plain.run(quiet=True, executor=client)
    store = Store(tmp_path / "g.db")
    try:
        ran_on = {int(row["output"]) for row in store.experiment_rows(r.experiment_uuid)}
        anywhere = {int(row["output"]) for row in store.experiment_rows(r_any.experiment_uuid)}
    finally:
        store.close()
    assert r.n_total == 24 and r.n_errors == 0
    assert ran_on == gpu_pid
    assert anywhere <= set(pids.values()) and os.getpid() not in anywhere


def test_bad_resources_are_refused() -> None:
    with pytest.raises(ConfigError, match="resources must be a dict"):
        Experiment(name="x", data=DATA, func=sync_fn, resources={"GPU": "one"})  # type: ignore[dict-item]


def test_cli_executor_flag_runs_rows_on_the_cluster(address: str, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    (tmp_path / "cfg.py").write_text(
        "import os\nfrom runner import Experiment\n\nDRIVER = os.getpid()\n\n"
        "def f(x):\n    return os.getpid() == DRIVER  # the function travels by value, DRIVER with it\n\n"
        "exp = Experiment(name='cli', data=[{'x': i} for i in range(10)], func=f)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "cfg.py", "--executor", address, "--db", "c.db", "--json"],
        capture_output=True, text=True, timeout=200, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary,) = json.loads(proc.stdout)["experiments"]
    store = Store(tmp_path / "c.db")
    try:
        on_driver = {r["output"] for r in store.experiment_rows(summary["experiment_uuid"])}
    finally:
        store.close()
    assert summary["n_total"] == 10 and summary["n_errors"] == 0
    assert on_driver == {"false"} or on_driver == {False}, on_driver


def hangs_on_three(x: int) -> int:
    if x == 3:
        threading.Event().wait(60)
    return x


def test_timeouts_work_on_the_workers(address: str, tmp_path: Path) -> None:
    exp = Experiment(name="t", data=[{"x": i} for i in range(8)], func=hangs_on_three, timeout=1, db=tmp_path / "t.db")
    r = exp.run(quiet=True, executor=address)
    assert (r.n_total, r.n_errors) == (8, 1)
    store = Store(tmp_path / "t.db")
    try:
        (bad,) = [row for row in store.experiment_rows(r.experiment_uuid) if row["status"] == "error"]
    finally:
        store.close()
    assert bad["error"] == "timeout after 1 s" and bad["inputs"] == {"x": 3}


CTRL_C_CONFIG = """
import threading
from pathlib import Path
from runner import Experiment

def f(x, d):
    Path(d, f"started-{x}").write_text("")
    while not Path(d, "release").exists():
        threading.Event().wait(0.05)
    return x

exp = Experiment(name="c", data=[{"x": i, "d": DIR} for i in range(40)], func=f, n_workers=4)
"""


def test_ctrl_c_starts_no_more_rows_and_lets_running_ones_finish(address: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "cfg.py").write_text(CTRL_C_CONFIG.replace("DIR", repr(str(tmp_path))))
    err = (tmp_path / "err.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "cfg.py", "--executor", address, "--db", "c.db", "--run-name", "c-1"],
        stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path, text=True,
    )
    wait = threading.Event()
    started = lambda: sorted(tmp_path.glob("started-*"))  # noqa: E731
    while len(started()) < 4 and proc.poll() is None:
        wait.wait(0.05)
    proc.send_signal(signal.SIGINT)
    while "Interrupted" not in (tmp_path / "err.txt").read_text() and proc.poll() is None:
        wait.wait(0.05)
    (tmp_path / "release").write_text("")
    assert proc.wait(200) == 1
    err.close()
    store = Store(tmp_path / "c.db")
    try:
        (e,) = store.list_experiments()
        rows = store.experiment_rows(e["uuid"])
    finally:
        store.close()
    # the rows running at Ctrl-C finished and were stored; none started after it
    assert len(rows) == len(started()) == 4 and all(r["status"] == "success" for r in rows)
    assert e["status"] == "failed"


def noop_row(x: int, text: str) -> int:
    return x


class CountingRows:
    """A dataset read lazily; every 500 records it counts the dataset rows alive in this (the
    driver's) process."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.alive: list[int] = []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import gc

        from runner.pipeline.dataset import Row

        for i in range(self.n):
            if i and i % 500 == 0:
                gc.collect()  # count the rows something still holds, not garbage yet to be collected
                self.alive.append(sum(1 for o in gc.get_objects() if type(o) is Row))
            yield {"x": i, "text": f"row {i} " + "y" * 40}


def test_a_long_dataset_streams_through_the_cluster_without_piling_up_rows(tmp_path: Path) -> None:
    # executor="dask": the LocalCluster's scheduler lives in this process, like the driver's
    rows = CountingRows(3000)
    executor = DaskExecutor()
    exp = Experiment(name="stream", data=rows, func=noop_row, n_workers=8, db=tmp_path / "runner.db")
    result = exp.run(quiet=True, executor=executor)
    assert result.n_total == 3000 and result.n_errors == 0
    # the executor's own counters: rows are submitted through a window (n_workers running, as many
    # more at most queued on the workers), never more at once
    assert 0 < executor.peak_in_flight <= 16 and 0 < executor.peak_tasks <= 16
    # nor does anything else on the driver keep the rows that went by (the connections' message
    # logs kept the last 1,000 batches each, arguments and all): the count stays flat. Rows finished
    # but not yet logged are held too, more of them on a loaded machine (427 once, at load 12),
    # so the bound is what a leak could not meet: one kept every row read, 2,500 at the last count
    assert len(rows.alive) == 5 and max(rows.alive) < 1000, rows.alive


USER_MODULE = '''
class Ticket:
    def __init__(self, n):
        self.n = n


def read_ticket(ticket):
    return ticket.n * 2
'''


def test_rows_pass_the_scheduler_unread_so_it_needs_none_of_the_users_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A row whose values are of the user's own class: the driver and the workers can import it,
    # the scheduler (a process of its own, as a cluster's usually is) cannot. Given as a list,
    # the scheduler unpickled every row of a task, and the task failed there.
    from tests.dask_workers import extra_worker, scheduler_process

    code = tmp_path / "usercode"
    code.mkdir()
    (code / "tickets_of_the_user.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(code))
    import tickets_of_the_user as user  # type: ignore[import-not-found]

    data = [{"ticket": user.Ticket(i)} for i in range(6)]
    exp = Experiment(name="tickets", data=data, func=user.read_ticket, n_workers=4, db=tmp_path / "t.db")
    with (
        scheduler_process(tmp_path) as address,
        extra_worker(address, "any=1", "w", pythonpath=(code,)),
        distributed.Client(address, timeout="60s") as client,
    ):
        client.wait_for_workers(1, timeout=120)
        result = exp.run(quiet=True, executor=client)
    assert (result.n_total, result.n_errors) == (6, 0), [r.get("error") for r in result.rows()][:1]
    assert sorted(int(r["output"]) for r in result.rows()) == [0, 2, 4, 6, 8, 10]
