"""docs/cli.md against the help the commands print."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runner.cli.docs import DOCS_PATH, DOCS_WIDTH, docs_main, render_docs


def test_docs_match_the_help() -> None:
    assert DOCS_PATH.read_text(encoding="utf-8") == render_docs(), (
        "docs/cli.md is out of date: run `python -m runner.cli.docs --write-docs`"
    )


def test_docs_show_what_the_terminal_shows(tmp_path: Path) -> None:
    docs = DOCS_PATH.read_text(encoding="utf-8")
    for args in (["--help"], ["run", "--help"], ["datasets", "upload", "--help"]):
        proc = subprocess.run(
            [sys.executable, "-m", "runner", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60,
            env={**os.environ, "COLUMNS": str(DOCS_WIDTH + 2)},
        )
        assert proc.returncode == 0
        assert proc.stdout in docs, f"`python -m runner {' '.join(args)}` differs from docs/cli.md"


def test_write_and_check(tmp_path: Path) -> None:
    path = tmp_path / "cli.md"
    assert docs_main(["--check-docs", str(path)]) == 1  # missing
    assert docs_main(["--write-docs", str(path)]) == 0
    assert docs_main(["--check-docs", str(path)]) == 0
    path.write_text(path.read_text(encoding="utf-8") + "edited\n", encoding="utf-8")
    assert docs_main(["--check-docs", str(path)]) == 1
    assert docs_main([]) == 2
