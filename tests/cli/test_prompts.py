"""``python -m runner prompts ...`` in real subprocesses: on the local store (then served by a real
server from the same store), and against a real server with API keys; each on a SQLite file and
on PostgreSQL (``RUNNER_DB``, the ``db`` fixture of ``tests/pg.py``)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.store import Store
from tests.cli.test_main import cli
from tests.servers import start_server

V1 = """\
model: gpt-4o-mini
provider: openai
model_params: {temp: 0.2, max_length: 50}
messages:
  - {role: system, content: "You speak {{language}}."}
  - {role: user, content: "Greet {{name}}."}
"""


def files(tmp_path: Path) -> tuple[Path, Path]:
    v1 = tmp_path / "greeter.yaml"
    v1.write_text(V1, encoding="utf-8")
    v2 = tmp_path / "greeter-v2.json"
    spec = {"model": "gpt-4o", "provider": "openai", "model_params": {"temp": 0.5},
            "messages": [{"role": "user", "content": "Greet {{name}} warmly."}]}
    v2.write_text(json.dumps(spec), encoding="utf-8")
    return v1, v2


def ok(*args: str, cwd: Path) -> str:
    proc = cli(*args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def as_json(*args: str, cwd: Path) -> Any:
    return json.loads(ok(*args, "--json", cwd=cwd))


def test_push_list_show_diff_deploy_and_roll_back_on_the_local_store(
    tmp_path: Path, db: str | Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_DB", str(db))
    v1, v2 = files(tmp_path)
    out = ok("prompts", "push", str(v1), "--name", "greeter", "-m", "first", "--author", "ada", cwd=tmp_path)
    assert "stored greeter@1" in out
    assert "unchanged" in ok("prompts", "push", str(v1), "--name", "greeter", cwd=tmp_path)
    pushed = as_json("prompts", "push", str(v2), "--name", "greeter", "-m", "warmer", cwd=tmp_path)
    assert (pushed["version"], pushed["created"], pushed["spec"]["model"]) == (2, True, "gpt-4o")

    listing = ok("prompts", "list", cwd=tmp_path)
    assert listing.splitlines()[0].split() == ["NAME", "LATEST", "VERSIONS", "DEPLOYED", "UPDATED"]
    assert listing.splitlines()[1].split()[:4] == ["greeter", "2", "2", "-"]

    shown = ok("prompts", "show", "greeter@1", cwd=tmp_path)
    assert shown.startswith("greeter@1  by ada") and "    first" in shown
    assert "content: You speak {{language}}." in shown and "temp: 0.2" in shown
    assert " * @1" in shown and "   @2" in shown
    assert as_json("prompts", "show", "greeter", cwd=tmp_path)["version"] == 2  # no version: the latest

    diff = ok("prompts", "diff", "greeter@1", "greeter@2", cwd=tmp_path)
    assert diff.startswith("--- greeter@1\n+++ greeter@2\n")
    assert "-model: gpt-4o-mini\n+model: gpt-4o\n" in diff and "-  temp: 0.2\n+  temp: 0.5\n" in diff
    assert "no differences" in ok("prompts", "diff", "greeter@1", "greeter@1", cwd=tmp_path)

    deployed = as_json("prompts", "deploy", "greeter@1", cwd=tmp_path)
    dep = deployed["deployment_id"]
    assert dep.startswith("p-") and len(dep) == 23 and deployed["version"] == 1
    assert ok("prompts", "deploy", "greeter@2", cwd=tmp_path).strip() == f"{dep} serves greeter@2 (was @1)"
    assert f"{dep} -> @2" in ok("prompts", "list", cwd=tmp_path)
    assert ok("prompts", "rollback", dep, cwd=tmp_path).strip() == f"{dep} serves greeter@1 again (was @2)"
    store = Store(db)  # the CLI wrote into the store RUNNER_DB names
    try:
        assert store.get_deployment(dep)["version"] == 1
    finally:
        store.close()

    # the same store behind `serve`: Parea's /deployed-prompt serves what the CLI deployed
    with start_server(db) as server:
        r = httpx.post(f"{server.base_url}/deployed-prompt",
                       json={"deployment_id": dep, "llm_inputs": {"language": "French", "name": "Ada"}})
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["version_number"], got["model"], got["model_params"]) == (1.0, "gpt-4o-mini",
                                                                          {"temp": 0.2, "max_length": 50})
    assert got["prompt"]["messages"] == [{"role": "system", "content": "You speak French."},
                                         {"role": "user", "content": "Greet Ada."}]


def test_the_cli_against_a_server_with_keys(tmp_path: Path, db: str | Path) -> None:
    v1, v2 = files(tmp_path)
    with start_server(db, api_keys=["k1", "k2"]) as server:
        door = ("--base-url", server.base_url, "--api-key", "k1")
        ok("prompts", "push", str(v1), "--name", "greeter", *door, cwd=tmp_path)
        ok("prompts", "push", str(v2), "--name", "greeter", *door, cwd=tmp_path)
        dep = as_json("prompts", "deploy", "greeter@2", "--deployment-id", "p-greeter", *door,
                      cwd=tmp_path)["deployment_id"]
        assert dep == "p-greeter"
        assert "-model: gpt-4o-mini" in ok("prompts", "diff", "greeter@1", "greeter@2", *door, cwd=tmp_path)
        headers = {"x-api-key": "k1"}
        r = httpx.post(f"{server.base_url}/deployed-prompt", json={"deployment_id": dep}, headers=headers)
        assert r.json()["model"] == "gpt-4o" and r.json()["version_number"] == 2.0
        # another key's tenant has none of it
        theirs = as_json("prompts", "list", "--base-url", server.base_url, "--api-key", "k2", cwd=tmp_path)
        assert theirs == []
        proc = cli("prompts", "show", "greeter", "--base-url", server.base_url, "--api-key", "k2", cwd=tmp_path)
        assert proc.returncode != 0 and "prompt 'greeter' not found" in proc.stderr


def test_bad_input_is_one_line_naming_the_problem(
    tmp_path: Path, db: str | Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_DB", str(db))
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        model: gpt-4o-mini
        temperature: 0.3
        messages: [{role: user, content: hi}]
    """), encoding="utf-8")
    proc = cli("prompts", "push", str(bad), "--name", "p", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {bad} has unknown key(s) temperature; a prompt has only model, provider, "
                                   "model_params, messages, functions, function_call")
    proc = cli("prompts", "push", str(tmp_path / "missing.yaml"), "--name", "p", cwd=tmp_path)
    assert proc.returncode == 2 and "cannot read prompt file" in proc.stderr
    v1, _ = files(tmp_path)
    ok("prompts", "push", str(v1), "--name", "greeter", cwd=tmp_path)
    proc = cli("prompts", "deploy", "greeter", cwd=tmp_path)
    assert proc.returncode == 2 and "say which version to deploy: greeter@N" in proc.stderr
    proc = cli("prompts", "deploy", "greeter@7", cwd=tmp_path)
    assert proc.returncode != 0 and "has no version 7" in proc.stderr
    proc = cli("prompts", "rollback", "p-nope", cwd=tmp_path)
    assert proc.returncode != 0 and "deployment 'p-nope' not found" in proc.stderr
