"""The first ten minutes (issue 21): mistakes caught before any row runs, with the fix in the
message, and output a newcomer reads. Real subprocesses of ``python -m runner`` on temp stores."""

from __future__ import annotations

from pathlib import Path

from tests.test_cli import cli, write

CONFIG = """
from runner import Experiment
from evals import exact_match

def echo(text):
    return text

exp = Experiment(
    name="echo",
    data=[{"id": "a", "text": "x", "target": "x"}, {"id": "b", "text": "y", "target": "z"}],
    func=echo,
    evals=[exact_match],
)
"""


def test_an_experiment_name_names_its_newest_run_and_tilde_the_ones_before(tmp_path: Path) -> None:
    config = write(tmp_path / "echo.py", CONFIG)
    for name in ("first-run", "second-run"):
        assert cli(str(config), "--run-name", name, "--quiet", cwd=tmp_path).returncode == 0
    newest = cli("show", "echo", cwd=tmp_path)
    assert newest.returncode == 0, newest.stderr
    assert "run second-run" in newest.stdout
    before = cli("show", "echo~1", cwd=tmp_path)
    assert "run first-run" in before.stdout
    cmp = cli("compare", "echo~1", "echo", "--json", cwd=tmp_path)
    assert cmp.returncode == 0, cmp.stderr
    assert "first-run" in cmp.stdout and "second-run" in cmp.stdout
    gone = cli("show", "echo~2", cwd=tmp_path)
    assert gone.returncode != 0
    assert "echo is the newest, echo~1 the oldest" in gone.stderr
    # --baseline takes the experiment name too, resolved before the new run starts
    again = cli(str(config), "--quiet", "--baseline", "echo", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "second-run" in again.stdout
