"""The team server's remaining guarantees on PostgreSQL with several ``serve`` workers: concurrent
``PUT /trace_log`` of one log loses no acknowledged update, slow clients are cut off in every
worker, and the ``/completion`` cache is shared by the workers.

Every test runs a real ``python -m runner serve --workers 2`` over a real PostgreSQL
(``tests/pg.py``) and talks to it over a loopback socket.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.pg import PgCluster
from tests.servers import experiment, log
from tests.test_postgres import _serve, _workers

# one writer process: PUT ``field`` of log ``t`` n times, the k-th value k; prints the last acknowledged k
_PUTTER = """
import sys, httpx
base, field, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
last = None
with httpx.Client(base_url=base, timeout=120) as api:
    for k in range(n):
        if field == "scores":
            value = [{"name": "acc", "score": float(k)}]
        elif field == "metadata":
            value = {"k": k}
        else:
            value = f"{field}-{k}"
        r = api.put("/trace_log", json={"trace_id": "t", "field_name_to_value_map": {field: value}})
        if r.status_code != 200:
            sys.exit(f"{field} {k}: {r.status_code} {r.text}")
        last = k
print(last)
"""

_FIELDS = ["scores", "metadata", "output", "target", "error", "session_id", "end_user_identifier", "trace_name"]


def test_concurrent_puts_of_one_log_through_two_workers_lose_no_acknowledged_update(
    pg: PgCluster, tmp_path: Path
) -> None:
    """Eight processes PUT different fields of one log of a finished run (its trigger marks the
    run stale on every write) through two server workers at once: at the end the log holds
    every process's last acknowledged value, and the run's pinned stats see the last score."""
    url = pg.url()
    script = tmp_path / "putter.py"
    script.write_text(_PUTTER)
    with _serve(url, "--workers", "2") as (base, proc):
        assert len(_workers(proc.pid)) == 2
        with httpx.Client(base_url=base, timeout=60) as api:
            exp = experiment(api)
            assert api.post("/trace_log", json=log("t", experiment_uuid=exp["uuid"])).status_code == 200
            finished = api.post(f"/experiment/{exp['uuid']}/finished", json={"status": "completed"})
            assert finished.status_code == 200
            writers = [
                subprocess.Popen([sys.executable, str(script), base, field, "20"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
                for field in _FIELDS
            ]
            outs = [w.communicate(timeout=300) for w in writers]
            assert [w.returncode for w in writers] == [0] * len(_FIELDS), [err for _, err in outs]
            last = {field: int(out.strip()) for field, (out, _) in zip(_FIELDS, outs, strict=True)}
            got = api.get("/trace_log/t").json()
            assert [(s["name"], s["score"]) for s in got["scores"]] == [("acc", float(last["scores"]))]
            assert got["metadata"] == {"k": last["metadata"]}
            for field in _FIELDS[2:]:
                assert got[field] == f"{field}-{last[field]}", field
            (listed,) = api.post("/experiments", json={}).json()
            assert {p["var1"]: p["value"] for p in listed["pinned_stats"]}["acc"] == float(last["scores"])
