"""Text and numbers one store could keep and the other cannot are stored alike through every door.

PostgreSQL's text cannot hold a NUL character; SQLite's can, and the server refuses one (422).
So that a run reads back the same whatever the store, a NUL anywhere in a row's log is stored
as U+FFFD, as a lone UTF-16 surrogate already is; a non-finite number is ``null`` (or
``"Infinity"`` as a whole output). The ``door`` fixture runs each test through the embedded
SQLite store, HTTP to a server, and the embedded PostgreSQL store.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from runner import Experiment, trace
from runner._json import without_nul
from tests.doors import Door

CUT = json.loads('"cut \\ud83d"')  # a model answer cut inside an escape: a lone surrogate


@trace
def step(text: Any) -> Any:
    return text


def _answer(kind: str, text: str) -> Any:
    if kind == "span":
        return step(text)
    if kind == "json":
        return {"k\x00": text}
    if kind == "inf":
        return float("inf")
    if kind == "span-inf":
        return step(float("-inf"))
    if kind == "surrogate":
        return {"k" + CUT: CUT}
    return text


def test_nul_surrogates_and_infinities_read_back_the_same_through_every_door(door: Door, tmp_path: Path) -> None:
    kinds = ["plain", "span", "json", "inf", "span-inf", "surrogate"]
    data = [{"id": i, "kind": k, "text": f"{k}\x00{i}", "col\x00": float("inf")} for i, k in enumerate(kinds)]

    def answer(kind: str, text: str, **_: Any) -> Any:
        return _answer(kind, text)

    result = Experiment(name="nul", data=data, func=answer, **door.kwargs()).run("nul-1", quiet=True)
    assert result.status == "completed" and result.n_total == 6 and result.n_errors == 0
    rows = {int(r["metadata"]["row_id"]): r for r in door.store.experiment_rows(result.experiment_uuid)}
    assert sorted(rows) == list(range(6)) and all(r["status"] == "success" for r in rows.values())
    for i, kind in enumerate(kinds):
        assert rows[i]["inputs"] == {"id": i, "kind": kind, "text": f"{kind}\ufffd{i}", "col\ufffd": None}
    assert rows[0]["output"] == "plain\ufffd0"
    assert rows[1]["output"] == "span\ufffd1"
    (child,) = door.store.get_trace_tree(rows[1]["trace_id"])["children_logs"]
    assert (child["inputs"], child["output"]) == ({"text": "span\ufffd1"}, "span\ufffd1")
    # a JSON output is text holding the escape: it keeps the NUL (json.loads gives it back)
    assert json.loads(rows[2]["output"]) == {"k\x00": "json\x002"}
    assert rows[3]["output"] == "Infinity"
    (child,) = door.store.get_trace_tree(rows[4]["trace_id"])["children_logs"]
    assert (child["inputs"], child["output"]) == ({"text": None}, "-Infinity")
    assert json.loads(rows[5]["output"]) == {"kcut \ufffd": "cut \ufffd"}
    # and `show --json` reads the same values back
    shown = subprocess.run(
        [sys.executable, "-m", "runner", "show", "nul-1", "--json", "--db", str(door.db)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    listed = {r["row_id"]: r for r in json.loads(shown.stdout)["worst_rows"]}
    assert (listed["0"]["output"], listed["0"]["inputs"]["text"]) == ("plain\ufffd0", "plain\ufffd0")


def test_without_nul_leaves_everything_else_alone() -> None:
    value = {"a\x00": ["b\x00c", 1, 2.5, None, True, {"d": "\\u0000"}]}
    assert without_nul(value) == {"a\ufffd": ["b\ufffdc", 1, 2.5, None, True, {"d": "\\u0000"}]}
    assert without_nul("plain") == "plain"
