"""The first ten minutes (issue 21): mistakes caught before any row runs, with the fix in the
message, and output a newcomer reads. Real subprocesses of ``python -m runner`` on temp stores."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.cli.test_main import cli, write

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


MARKED = """
from pathlib import Path
from runner import Experiment, Score
from evals import exact_match

def echo(text):
    Path("ran").touch()  # proves a row ran
    return text

def grounded(log):
    return Score("grounded", 1.0)

def label_match(log):  # a bare number: its score is called label_match, known before the run
    return 1.0

exp = Experiment(name="echo", data=[{"text": "x", "target": "x"}], func=echo, evals=[exact_match])
mine = Experiment(name="mine", data=[{"text": "x", "target": "x"}], func=echo, evals=[grounded])
plain = Experiment(name="plain", data=[{"text": "x", "target": "x"}], func=echo, evals=[label_match])
"""


# -- mistakes caught before the run ---------------------------------------------------------------
def test_a_gate_on_a_misspelt_score_is_refused_before_any_row_runs(tmp_path: Path) -> None:
    write(tmp_path / "cfg.py", MARKED)
    proc = cli("cfg.py", "--only", "echo", "--fail-under", "exact_mach=0.9", cwd=tmp_path)
    assert proc.returncode == 2
    assert "gate on unknown score 'exact_mach' (--fail-under): no scorer gives it (did you mean 'exact_match'?" in (
        proc.stderr
    )
    assert "nothing has run yet" in proc.stderr
    assert not (tmp_path / "ran").exists() and not (tmp_path / ".runner").exists()
    # a scorer of your own that returns a bare number: its name is known too
    far = cli("cfg.py", "--only", "plain", "--fail-under", "relevance=0.9", cwd=tmp_path)
    assert far.returncode == 2
    assert "gate on unknown score 'relevance' (--fail-under): no scorer gives it (the scores are: label_match)" in (
        far.stderr
    )
    assert not (tmp_path / "ran").exists()


def test_a_gate_on_a_score_only_known_by_running_is_announced_up_front(tmp_path: Path) -> None:
    write(tmp_path / "cfg.py", MARKED)
    # `grounded` returns Score("grounded"): the name is in its code, so the gate is simply checked
    ok = cli("cfg.py", "--only", "mine", "--quiet", "--fail-under", "grounded=0.5", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "note:" not in ok.stderr
    # a name nowhere in sight: said before the run, refused after it
    other = cli("cfg.py", "--only", "mine", "--quiet", "--fail-under", "relevance=0.5", cwd=tmp_path)
    assert other.returncode == 2
    note = "note: --fail-under relevance: no scorer is called 'relevance'; it is checked after the run"
    assert note in other.stderr
    assert (tmp_path / "ran").exists()  # the run went ahead, and then the unknown name was refused
    assert other.stderr.index(note) < other.stderr.index("error: gate on unknown score 'relevance'")


def test_relative_data_paths_are_resolved_from_the_config_files_folder(tmp_path: Path) -> None:
    (tmp_path / "evals_dir").mkdir()
    write(tmp_path / "evals_dir" / "rows.csv", "text,target\nhi,hi\n")
    cfg = """
    from runner import Experiment
    from evals import exact_match
    exp = Experiment(name="rel", data="rows.csv", func=lambda text: text, evals=[exact_match])
    """
    write(tmp_path / "evals_dir" / "cfg.py", cfg)
    proc = cli("evals_dir/cfg.py", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "rel · run" in proc.stdout and "1 rows in" in proc.stdout
    shutil.rmtree(tmp_path / ".runner")
    write(tmp_path / "evals_dir" / "cfg.py", cfg.replace("rows.csv", "missing.csv"))
    missing = cli("evals_dir/cfg.py", cwd=tmp_path)
    assert missing.returncode == 2
    assert f"dataset file 'missing.csv' not found: looked in {tmp_path / 'evals_dir'}" in missing.stderr
    assert not (tmp_path / ".runner").exists()


def test_a_refused_run_from_a_script_leaves_no_store_behind(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = """
    from runner import Experiment
    from runner.errors import DatasetError
    for data in ("nope.csv", [{"wrong": 1}], [], "some-stored-name"):
        try:
            Experiment(name="x", data=data, func=lambda text: text).run(quiet=True)
        except DatasetError as exc:
            print("refused:", exc)
    """
    write(tmp_path / "s.py", script)
    proc = subprocess.run([sys.executable, "s.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4, proc.stdout
    assert f"dataset file nope.csv does not exist (looked in {tmp_path}" in lines[0]
    assert "dataset column 'wrong' is not a parameter" in lines[1]
    assert "the dataset has no rows" in lines[2]
    assert "names a stored dataset, but there is no store at .runner/runner.db yet" in lines[3]
    assert not (tmp_path / ".runner").exists()


def test_a_misspelt_stored_dataset_exits_2_like_every_config_error(tmp_path: Path) -> None:
    write(tmp_path / "rows.csv", "text,target\nhi,hi\n")
    assert cli("datasets", "upload", "rows.csv", "--name", "greetings", cwd=tmp_path).returncode == 0
    write(
        tmp_path / "cfg.py",
        """
        from runner import Experiment
        exp = Experiment(name="typo", data="greetngs", func=lambda text: text)
        """,
    )
    proc = cli("cfg.py", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "greetngs" in proc.stderr and "`python -m runner datasets list` shows the stored datasets" in proc.stderr


def test_a_base_url_without_the_api_prefix_gets_the_prefix_suggested(tmp_path: Path) -> None:
    from tests.servers import start_server

    write(tmp_path / "cfg.py", CONFIG)
    with start_server(tmp_path / "server.db") as server:
        root = f"http://127.0.0.1:{server.port}"
        proc = cli("cfg.py", "--quiet", "--base-url", root, cwd=tmp_path)
    assert proc.returncode != 0
    assert f"give --base-url (or PAREA_BASE_URL) {root}/api/parea/v1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_clone_folder_called_runner_is_named_as_the_shadow(tmp_path: Path) -> None:
    (tmp_path / "runner").mkdir()  # what `git clone ... runner` leaves: a folder without __init__.py
    (tmp_path / "runner" / "pyproject.toml").write_text("", encoding="utf-8")
    proc = cli("--version", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"error: the folder {tmp_path / 'runner'} shadows the installed runner package" in proc.stderr
    assert "cd runner" in proc.stderr and "Traceback" not in proc.stderr


def test_a_misspelt_command_suggests_the_closest(tmp_path: Path) -> None:
    proc = cli("lst", cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown command 'lst': did you mean `python -m runner list`?" in proc.stderr
    assert "not found" not in proc.stderr
    write(tmp_path / "lst", "")  # a file of that name is a config file after all
    assert "unknown command" not in cli("lst", cwd=tmp_path).stderr


def test_no_target_column_and_short_csv_rows_are_warned_once(tmp_path: Path) -> None:
    write(tmp_path / "rows.csv", "text,other\nhi,1\nyo\nho\n")
    write(
        tmp_path / "cfg.py",
        """
        from runner import Experiment
        from evals import exact_match, levenshtein
        exp = Experiment(name="nt", data="rows.csv", func=lambda text, other: text, evals=[exact_match, levenshtein])
        """,
    )
    proc = cli("cfg.py", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, proc.stderr
    assert "the dataset has no `target` column, but exact_match, levenshtein read log.target" in warnings[0] + (
        warnings[1]
    )
    assert any("rows.csv:3: 1 value(s) for 2 columns" in w for w in warnings)


# -- output a newcomer reads ------------------------------------------------------------------------
def test_run_from_a_script_writes_no_bar_to_a_pipe_and_a_total_to_a_terminal(tmp_path: Path) -> None:
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    write(tmp_path / "rows.csv", "text,target\nhi,hi\nyo,yo\nho,ho\n")
    assert cli("datasets", "upload", "rows.csv", "--name", "three", cwd=tmp_path).returncode == 0
    write(
        tmp_path / "s.py",
        """
        from runner import Experiment
        Experiment(name="bar", data="three", func=lambda text: text).run()
        """,
    )
    piped = subprocess.run([sys.executable, "s.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert "row/s" not in piped.stderr and "row [" not in piped.stderr
    assert "bar · run" in piped.stdout
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    proc = subprocess.Popen([sys.executable, "s.py"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(60) == 0
    assert b"0/3" in seen, seen  # the bar knows the stored dataset's length


SLOW = """
import time
from pathlib import Path
from runner import Experiment

def work(x):
    if x >= 3:
        Path("started").touch()
        while not Path("go").exists():
            time.sleep(0.01)
    return x

slow = Experiment(name="slow", data=[{"x": i} for i in range(10)], func=work, n_workers=1)
"""


def test_ctrl_c_prints_the_command_that_continues_the_run(tmp_path: Path) -> None:
    import shlex
    import signal
    import subprocess
    import sys
    import time

    write(tmp_path / "slow.py", SLOW)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "slow.py", "--run-name", "stopped", "--limit", "8"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no row started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    for line in proc.stderr:  # the run has seen the interrupt: now let the running row finish
        if "Interrupted: letting running rows finish" in line:
            break
    (tmp_path / "go").touch()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    expected = "to continue it: python -m runner slow.py --resume --run-name stopped --limit 8"
    assert expected in err
    command = shlex.split(expected.removeprefix("to continue it: "))
    again = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "slow · run stopped · completed · 8 rows" in again.stdout


def test_csv_output_writes_json_for_what_is_not_a_string(tmp_path: Path) -> None:
    import csv
    import json

    write(
        tmp_path / "cfg.py",
        """
        from runner import Experiment
        exp = Experiment(name="js", data=[{"q": "a"}], func=lambda q: {"answer": q, "ok": True, "n": [1, 2]})
        """,
    )
    proc = cli("cfg.py", "--quiet", "--output", "out.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as f:
        (row,) = list(csv.DictReader(f))
    assert json.loads(row["output"]) == {"answer": "a", "ok": True, "n": [1, 2]}
    assert row["q"] == "a"


def test_run_names_get_the_sanitised_name_offered_or_applied(tmp_path: Path) -> None:
    config = write(tmp_path / "echo.py", CONFIG)
    bad = cli(str(config), "--run-name", "v1.2", cwd=tmp_path)
    assert bad.returncode == 2
    assert "invalid run name 'v1.2'" in bad.stderr and "e.g. 'v1-2'" in bad.stderr
    prefixed = cli(str(config), "--quiet", "--run-prefix", "feat/new-prompt", cwd=tmp_path)
    assert prefixed.returncode == 0, prefixed.stderr
    assert "note: --run-prefix 'feat/new-prompt' becomes 'feat-new-prompt'" in prefixed.stderr
    assert "run feat-new-prompt-echo" in prefixed.stdout


def test_serve_names_the_web_ui_url(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "serve", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Uvicorn running on" in line:
                break
        assert f"runner: web UI at http://127.0.0.1:{port}/ " in "".join(lines)
    finally:
        proc.terminate()
        proc.wait(60)


# -- one number format, a run's own duration ------------------------------------------------------
FORMATS = """
from runner import Experiment
from evals import exact_match
from evals.dataset import pearson

rows = [{"id": f"r{i}", "x": i, "target": str(i)} for i in range(8)]
exp = Experiment(
    name="fmt",
    data=rows,
    func=lambda x: str(x),
    evals=[exact_match, lambda log: float(log.inputs["x"]) / 8],
    dataset_level_evals=[pearson("score", lambda log: float(log.inputs["x"]) ** 2, name="r_x")],
)
"""


def test_summary_show_compare_and_the_ui_write_numbers_alike(tmp_path: Path) -> None:
    import json

    import httpx

    from tests.servers import start_server

    write(tmp_path / "cfg.py", FORMATS)
    first = cli("cfg.py", "--quiet", "--run-name", "one", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "exact_match   1.00 [" in first.stdout  # not "1 [0.676, 1]"
    line = next(ln for ln in first.stdout.splitlines() if "dataset-level r_x" in ln)
    shown = cli("show", "one", cwd=tmp_path).stdout
    assert line in shown  # the stat, its interval and its reason, as the run printed them
    summary = json.loads(cli("show", "one", "--json", cwd=tmp_path).stdout)
    em = summary["scores"]["exact_match"]
    from runner.results.format import interval, num

    text = f"{num(em['mean'])} {interval(em['ci_low'], em['ci_high'])}"
    assert text.startswith("1.00 [") and text in shown
    assert cli("cfg.py", "--quiet", "--run-name", "two", cwd=tmp_path).returncode == 0
    cmp = cli("compare", "one", "two", cwd=tmp_path).stdout
    em_line = next(ln for ln in cmp.splitlines() if ln.strip().startswith("exact_match"))
    assert em_line.split()[1:4] == ["1.00", "1.00", "+0.00"], em_line
    with start_server(tmp_path / ".runner" / "runner.db") as server:
        page = httpx.get(f"http://127.0.0.1:{server.port}/", timeout=60).text
    import re

    flat = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    assert "exact_match" in flat and f" {text} " in flat  # few scores: a column each, the same digits


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


def test_a_runs_duration_is_the_time_its_rows_ran(tmp_path: Path) -> None:
    import json
    import time

    write(tmp_path / "cfg.py", SLEEPY)
    (tmp_path / "fail").touch()
    first = cli("cfg.py", "--quiet", "--run-name", "r", cwd=tmp_path)
    assert first.returncode == 0 and "2 errored" in first.stdout, first.stdout + first.stderr
    time.sleep(3.0)  # the run lies dead for a while before it is resumed
    (tmp_path / "fail").unlink()
    again = cli("cfg.py", "--quiet", "--run-name", "r", "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    shown = json.loads(cli("show", "r", "--json", cwd=tmp_path).stdout)
    assert 0.35 <= shown["duration"] < 3.0, shown["duration"]  # four rows of 0.1 s; not the 3 s pause
    assert " in 0.00 s" not in cli("show", "r", cwd=tmp_path).stdout
