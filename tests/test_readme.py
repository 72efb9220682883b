"""Every shell and Python example of README.md and docs/*.md runs as written, twice in a row.

The conventions, for whoever adds a section (new blocks are picked up without touching this file):

* A block fenced ```bash, ```sh, ```shell or ```console runs in bash (``set -e``: every line must
  succeed); a block fenced ```python or ```py runs in Python. Any other fence (```text, plain
  ```, ```toml, ...) is not run.
* ``<!-- no-run: REASON -->`` on the line(s) just before the fence skips the block; the reason is
  required (installing packages, long-running commands such as ``serve``) and names the test.
* ``<!-- needs: serve -->`` before the fence starts ``python -m runner serve`` in the background,
  in the block's folder, on a free port, while the block runs; the block's ``8765`` (the default
  port) is replaced by that port, so the block must not start a server itself.
* Each block runs in a fresh temporary folder holding copies of ``experiments/`` and
  ``datasets/`` (a fresh clone, minus the package, which is installed), with this Python first
  on ``PATH`` and no ``RUNNER_*``/``PAREA_*`` variables, and then once more in the same folder:
  the second run sees what the first stored, so an example with a fixed run name fails here as
  it would for a reader who runs it twice. A block passes when it exits 0 both times and its
  output reports no errored rows, failed scorers or dataset-level evals, warnings or errors.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
PYTHON = {"python", "py"}
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
#: what a run's output says when rows, scorers or dataset-level evals failed
_FAILED = re.compile(
    r"\d+ rows, [1-9]\d* errored|dataset-level \S+: failed:|scorer \S+ failed on|^warning: |^error: ", re.M
)
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>no-run|needs)\s*:\s*(?P<what>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str
    skip: str | None
    needs_serve: bool

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start, lang, indent = i, m["lang"].lower(), len(m["indent"])
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][indent:])
            i += 1
        i += 1  # the closing fence
        skip, needs_serve = None, False
        j = start - 1
        while j >= 0 and (found := _MARKER.match(lines[j])):
            if found["kind"] == "no-run":
                assert found["what"], f"{path}:{j + 1}: `no-run:` needs a reason"
                skip = found["what"]
            elif found["what"] == "serve":
                needs_serve = True
            else:
                raise AssertionError(f"{path}:{j + 1}: unknown `needs: {found['what']}` (only `serve` exists)")
            j -= 1
        if lang in SHELL or lang in PYTHON:
            yield Block(path, start + 1, lang, "\n".join(body) + "\n", skip, needs_serve)


ALL = [b for doc in DOCS for b in blocks(doc)]


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "PAREA_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["HOME"] = str(folder)  # nothing of the reader's own configuration
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve(folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "serve", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # uvicorn says so once the socket listens
        if "Uvicorn running on" in line:
            return proc, port
    raise AssertionError(f"serve exited ({proc.wait()}) without its banner")


def _run(block: Block, folder: Path) -> subprocess.CompletedProcess[str]:
    env = _env(folder)
    code = block.code
    server = None
    if block.needs_serve:
        server, port = _serve(folder, env)
        code = code.replace("8765", str(port))
    try:
        if block.lang in SHELL:
            cmd = ["bash", "-e", "-o", "pipefail", "-c", code]
            return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
        return subprocess.run(
            [sys.executable, "-"], input=code, cwd=folder, env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(60)


def test_the_docs_have_runnable_blocks() -> None:
    runnable = [b for b in ALL if b.skip is None]
    assert len(runnable) >= 4, [b.id for b in ALL]
    assert any(b.lang in PYTHON for b in runnable) and any(b.needs_serve for b in runnable)


def test_ci_runs_exactly_the_readmes_second_command() -> None:
    readme = [b for b in ALL if b.path.name == "README.md"]
    second = readme[1].code.strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line for line in ci.splitlines() if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands[-1].strip() == second


@pytest.mark.parametrize("block", ALL, ids=lambda b: b.id)
def test_block_runs_twice(block: Block, tmp_path: Path) -> None:
    if block.skip is not None:
        pytest.skip(f"no-run: {block.skip}")
    for folder in ("experiments", "datasets"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    for attempt in ("first", "second"):
        proc = _run(block, tmp_path)
        shown = f"{block.code}\n{proc.stdout}\n{proc.stderr}"
        assert proc.returncode == 0, f"{block.id} failed the {attempt} time:\n{shown}"
        assert "Traceback" not in proc.stderr, proc.stderr
        failed = _FAILED.search(proc.stdout + proc.stderr)
        assert failed is None, f"{block.id}, {attempt} run: {failed[0] if failed else ''!r}\n{shown}"
