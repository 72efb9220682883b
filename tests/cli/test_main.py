"""The command line, through real subprocesses (``python -m runner ...``) on a temporary store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runner.cli.main import with_default_command

ROOT = Path(__file__).resolve().parents[2]

# A config like a user's: a function, a scorer, data in the file (no scipy: fast to start).
CONFIG = """
from runner import Experiment
from evals import exact_match

def shout(text):
    if text == "boom":
        raise ValueError("cannot shout boom")
    return text.upper()

loud = Experiment(
    name="loud",
    data=[{"text": "a", "target": "A"}, {"text": "b", "target": "x"}, {"text": "boom", "target": "BOOM"}],
    func=shout,
    evals=[exact_match],
)
"""

TWO = """
from runner import Experiment

first = Experiment(name="first", data=[{"x": 1}, {"x": 2}], func=lambda x: x)
second = Experiment(name="second", data=[{"x": 3}], func=lambda x: x)
"""


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


# -- help and startup -----------------------------------------------------------------------------
def test_help_lists_commands_and_examples(tmp_path: Path) -> None:
    proc = cli("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for word in ("run", "list", "show", "datasets", "serve", "examples:", "exit codes"):
        assert word in proc.stdout
    run_help = cli("experiments/x.py", "--help", cwd=tmp_path)  # the default command's own help
    assert run_help.returncode == 0 and "--limit N" in run_help.stdout and "--run-prefix" in run_help.stdout


def test_version_and_help_import_no_heavy_modules(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom runner.cli.main import main\n"
        "for argv in (['--version'], ['--help'], ['run', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('pandas', 'scipy', 'numpy', 'fastapi', 'uvicorn') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "runner 0.1.0" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_default_command_is_run() -> None:
    assert with_default_command(["x.py", "--limit", "2"]) == ["run", "x.py", "--limit", "2"]
    assert with_default_command(["--debug", "x.py"]) == ["run", "--debug", "x.py"]
    assert with_default_command(["--debug", "list"]) == ["list", "--debug"]
    assert with_default_command(["list.py"]) == ["run", "list.py"]
    assert with_default_command(["compare", "a", "b"]) == ["compare", "a", "b"]
    assert with_default_command(["--version"]) == ["--version"]


# -- running a config -----------------------------------------------------------------------------
def test_run_list_show(tmp_path: Path) -> None:
    write(tmp_path / "cfg.py", CONFIG)
    proc = cli("cfg.py", "--run-name", "first-try", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "loud · run first-try · completed · 3 rows, 1 errored" in proc.stdout
    score_line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("exact_match"))
    assert "2/3" in score_line  # scored / total: the errored row is counted, not dropped
    assert (tmp_path / ".runner" / "runner.db").exists()

    again = cli("run", "cfg.py", "--limit", "1", cwd=tmp_path)  # the explicit `run` word works too
    assert again.returncode == 0, again.stderr
    assert "· 1 rows in" in again.stdout

    listing = cli("list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["EXPERIMENT", "RUN", "STATUS", "ROWS", "ERRORS", "SCORES", "DATE"]
    first = next(ln for ln in lines if "first-try" in ln).split()
    assert first[:5] == ["loud", "first-try", "completed", "3", "1"]
    assert "exact_match=0.500" in first
    assert lines.index(next(ln for ln in lines if "first-try" in ln)) == 2  # newest first

    shown = cli("show", "first-try", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "loud · run first-try · completed · 3 rows, 1 errored" in shown.stdout
    worst = shown.stdout.split("worst 3 of 3 rows")[1]
    assert worst.index("ValueError: cannot shout boom") < worst.index("output: B") < worst.index("output: A")

    as_json = json.loads(cli("show", "first-try", "--json", cwd=tmp_path).stdout)
    assert as_json["n_total"] == 3 and as_json["n_errors"] == 1
    assert as_json["scores"]["exact_match"]["mean"] == 0.5
    assert as_json["worst_rows"][0]["status"] == "error"


def test_list_and_show_without_a_store(tmp_path: Path) -> None:
    proc = cli("list", cwd=tmp_path)
    assert proc.returncode == 0 and "no runs yet" in proc.stdout
    assert not (tmp_path / ".runner").exists()  # listing creates nothing
    missing = cli("show", "nope", cwd=tmp_path)
    assert missing.returncode == 1
    assert one_line_error(missing).startswith("error: no run called 'nope'")


def test_json_summary_on_stdout(tmp_path: Path) -> None:
    write(tmp_path / "cfg.py", CONFIG)
    proc = cli("cfg.py", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # nothing but JSON on stdout
    assert data["status"] == "completed"
    (exp,) = data["experiments"]
    assert exp["name"] == "loud" and exp["n_total"] == 3 and exp["n_errors"] == 1
    assert exp["scores"]["exact_match"]["n"] == 2
    assert "loud · run" in proc.stderr  # the human summary went to stderr


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_output_table(tmp_path: Path, suffix: str) -> None:
    import pandas as pd

    write(tmp_path / "cfg.py", TWO)
    out = tmp_path / "out" / f"rows{suffix}"
    proc = cli("cfg.py", "--output", str(out), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(out) if suffix == ".csv" else pd.read_json(out, lines=suffix == ".jsonl", orient="records")
    assert list(df["experiment"]) == ["first", "first", "second"]
    assert list(df["x"]) == [1, 2, 3] and list(df["output"]) == [1, 2, 3]
    assert set(df["status"]) == {"success"}


def test_several_experiments_only_and_run_prefix(tmp_path: Path) -> None:
    write(tmp_path / "cfg.py", TWO)
    both = cli("cfg.py", "--run-prefix", "ci-7", cwd=tmp_path)
    assert both.returncode == 0, both.stderr
    assert both.stdout.index("first · run ci-7-first") < both.stdout.index("second · run ci-7-second")
    assert "2 experiments: first completed, second completed" in both.stdout
    only = cli("cfg.py", "--only", "second", "--run-name", "just-second", cwd=tmp_path)
    assert only.returncode == 0, only.stderr
    assert "second · run just-second" in only.stdout and "first ·" not in only.stdout


def test_experiments_list_wins_over_module_level(tmp_path: Path) -> None:
    write(tmp_path / "cfg.py", TWO + "\nexperiments = [second]\n")
    proc = cli("cfg.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "second · run" in proc.stdout and "first ·" not in proc.stdout


def test_importing_the_file_runs_nothing(tmp_path: Path) -> None:
    write(tmp_path / "cfg.py", CONFIG + "\nif __name__ == '__main__':\n    raise SystemExit('ran as main')\n")
    proc = cli("cfg.py", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("loud · run") == 1  # run once, by the CLI


def test_flags_fill_only_what_the_file_leaves_unset(tmp_path: Path) -> None:
    write(
        tmp_path / "cfg.py",
        """
        from runner import Experiment
        pinned = Experiment(name="pinned", data=[{"x": 1}], func=lambda x: x, db="code.db", n_workers=2)
        free = Experiment(name="free", data=[{"x": 1}], func=lambda x: x)
        """,
    )
    proc = cli(
        "cfg.py", "--db", "flag.db", "--n-workers", "8", "--trials", "2", env={"RUNNER_DB": "env.db"}, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "note: --db ignored for 'pinned': cfg.py sets db='code.db'" in proc.stderr
    assert "note: --n-workers ignored for 'pinned'" in proc.stderr
    assert (tmp_path / "code.db").exists() and (tmp_path / "flag.db").exists()
    assert not (tmp_path / "env.db").exists()  # the flag beats the environment
    assert "free · run" in proc.stdout and "· 2 rows in" in proc.stdout.split("free · run")[1]  # --trials 2
    listed = cli("list", "--db", "flag.db", "--json", cwd=tmp_path)
    assert [e["name"] for e in json.loads(listed.stdout)] == ["free"]


def test_project_flag(tmp_path: Path) -> None:
    write(tmp_path / "cfg.py", TWO)
    assert cli("cfg.py", "--only", "first", "--project", "alpha", cwd=tmp_path).returncode == 0
    assert cli("cfg.py", "--only", "second", env={"RUNNER_PROJECT": "beta"}, cwd=tmp_path).returncode == 0
    runs = json.loads(cli("list", "--json", cwd=tmp_path).stdout)
    assert {e["name"]: e["project_name"] for e in runs} == {"first": "alpha", "second": "beta"}
    assert [e["name"] for e in json.loads(cli("list", "--project", "alpha", "--json", cwd=tmp_path).stdout)] == [
        "first"
    ]


# -- usage and config errors: one line, exit 2 -----------------------------------------------------
@pytest.mark.parametrize(
    ("files", "args", "env", "message"),
    [
        ({}, ["missing.py"], {}, "error: config file missing.py not found"),
        ({"bad.py": "x = (\n"}, ["bad.py"], {}, "error: bad.py:1: syntax error"),
        ({"boom.py": "import os\nundefined_name()\n"}, ["boom.py"], {}, "error: boom.py:2: NameError"),
        ({"none.py": "x = 1\n"}, ["none.py"], {}, "error: none.py defines no experiments"),
        ({"data.csv": "a\n1\n"}, ["data.csv"], {}, "error: data.csv is not a Python file"),
        ({"cfg.py": TWO}, ["cfg.py", "--bogus"], {}, "unrecognized arguments: --bogus"),
        ({"cfg.py": TWO}, ["cfg.py", "--limit", "0"], {}, "argument --limit: '0' must be at least 1"),
        ({"cfg.py": TWO}, ["cfg.py", "--run-name", "r1"], {}, "error: --run-name names one run, but 2 experiments"),
        ({"cfg.py": TWO}, ["cfg.py", "--only", "third"], {}, "error: --only third: cfg.py has no experiment called"),
        ({"cfg.py": TWO}, ["cfg.py", "--output", "rows.xlsx"], {}, "error: --output rows.xlsx: unknown suffix"),
        (
            {"cfg.py": TWO},
            ["cfg.py", "--only", "first", "--run-name", "no spaces"],
            {},
            "error: invalid run name 'no spaces'",
        ),
        ({"cfg.py": TWO}, ["cfg.py"], {"RUNNER_N_WORKERS": "many"}, "error: RUNNER_N_WORKERS='many' is not an integer"),
        (
            {"cfg.py": "from runner import Experiment\ne = Experiment(name='e', data=[{'y': 1}], func=lambda x: x)\n"},
            ["cfg.py"],
            {},
            "error: dataset column 'y' is not a parameter",
        ),
    ],
)
def test_usage_and_config_errors(
    tmp_path: Path, files: dict[str, str], args: list[str], env: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    proc = cli(*args, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in one_line_error(proc)
    assert proc.stdout == ""


def test_no_arguments_is_a_usage_error(tmp_path: Path) -> None:
    proc = cli(cwd=tmp_path)
    assert proc.returncode == 2
    assert "error: give a config file to run, or a command" in proc.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    write(tmp_path / "boom.py", "import os\nundefined_name()\n")
    proc = cli("--debug", "boom.py", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "undefined_name()" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("error: boom.py:2: NameError")


def test_a_second_run_name_use_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path / "cfg.py", CONFIG)
    assert cli("cfg.py", "--run-name", "dup", "--quiet", cwd=tmp_path).returncode == 0
    proc = cli("cfg.py", "--run-name", "dup", cwd=tmp_path)
    assert proc.returncode == 2
    assert "run name 'dup' is already used" in one_line_error(proc)


# -- Ctrl-C -----------------------------------------------------------------------------------------
SLOW = """
import time
from pathlib import Path
from runner import Experiment

def work(x):
    Path("started").touch()
    time.sleep({seconds})
    return x

slow = Experiment(name="slow", data=[{{"x": i}} for i in range(200)], func=work, n_workers=2)
later = Experiment(name="later", data=[{{"x": 1}}], func=work)
"""


def _start_and_wait(tmp_path: Path, seconds: float) -> subprocess.Popen[str]:
    write(tmp_path / "slow.py", SLOW.format(seconds=seconds))
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "slow.py", "--run-prefix", "stopped"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the experiment never started"
        time.sleep(0.05)
    return proc


def test_ctrl_c_lets_running_rows_finish_and_fails_the_run(tmp_path: Path) -> None:
    proc = _start_and_wait(tmp_path, 0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert "Interrupted: letting running rows finish" in err
    assert "slow · run stopped-slow · failed (interrupted)" in err
    assert "interrupted: stored the" in err and "1 more experiment(s) not started" in err
    assert "Traceback" not in err and "later ·" not in out + err
    (run,) = json.loads(cli("list", "--json", cwd=tmp_path).stdout)
    assert run["status"] == "failed" and 2 <= run["rows"] < 200


def test_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    proc = _start_and_wait(tmp_path, 30)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=20)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 1, err
    assert "failed (interrupted)" in err and "still running when stopped" in err
    (run,) = json.loads(cli("list", "--json", cwd=tmp_path).stdout)
    assert run["status"] == "failed"


# -- datasets ---------------------------------------------------------------------------------------
def test_datasets_upload_list_and_run_on_it(tmp_path: Path) -> None:
    write(tmp_path / "rows.csv", "text,target\nhi,HI\nyo,YO\n")
    up = cli("datasets", "upload", "rows.csv", "--name", "greetings", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert "uploaded 2 rows as dataset 'greetings'" in up.stdout
    listed = cli("datasets", "list", cwd=tmp_path)
    assert listed.stdout.splitlines()[0].split() == ["ID", "NAME", "ROWS", "COLUMNS", "UPDATED"]
    assert listed.stdout.splitlines()[1].split()[1:4] == ["greetings", "2", "text"]
    again = cli("datasets", "upload", "rows.csv", "--name", "greetings", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in one_line_error(again)
    write(
        tmp_path / "cfg.py",
        """
        from runner import Experiment
        from evals import exact_match
        e = Experiment(name="stored-data", data="greetings", func=lambda text: text.upper(), evals=[exact_match])
        """,
    )
    run = cli("cfg.py", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["experiments"][0]["scores"]["exact_match"]["mean"] == 1.0


def test_datasets_upload_missing_file(tmp_path: Path) -> None:
    proc = cli("datasets", "upload", "nope.csv", cwd=tmp_path)
    assert proc.returncode == 2
    assert one_line_error(proc) == "error: dataset file nope.csv not found"


def test_over_http(tmp_path: Path) -> None:
    """The same commands against a real server: --base-url, or PAREA_BASE_URL."""
    servers = pytest.importorskip("tests.servers")
    write(tmp_path / "rows.csv", "text,target\nhi,HI\nyo,no\n")
    write(tmp_path / "cfg.py", CONFIG)
    with servers.start_server(tmp_path / "server.db", api_keys=["k"]) as server:
        env = {"PAREA_API_KEY": "k"}
        up = cli("datasets", "upload", "rows.csv", "--base-url", server.base_url, env=env, cwd=tmp_path)
        assert up.returncode == 0, up.stderr
        assert server.base_url in up.stdout
        env["PAREA_BASE_URL"] = server.base_url
        listed = cli("datasets", "list", "--json", env=env, cwd=tmp_path)
        assert [d["name"] for d in json.loads(listed.stdout)] == ["rows"]
        run = cli("cfg.py", "--run-name", "remote", env=env, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert server.base_url in run.stdout
        runs = json.loads(cli("list", "--json", env=env, cwd=tmp_path).stdout)
        assert [(r["name"], r["run_name"], r["status"], r["rows"]) for r in runs] == [
            ("loud", "remote", "completed", 3)
        ]
        shown = cli("show", "remote", env=env, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert "loud · run remote · completed · 3 rows, 1 errored" in shown.stdout
        assert "ValueError: cannot shout boom" in shown.stdout
    assert not (tmp_path / ".runner").exists()  # nothing went to the embedded store


# -- serve ---------------------------------------------------------------------------------------
def test_serve_delegates_to_the_server(tmp_path: Path) -> None:
    pytest.importorskip("runner.server.__main__")
    proc = cli("serve", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m runner serve")


# -- reliability flags ------------------------------------------------------------------------------
FLAKY = """
import time
from pathlib import Path
from runner import Experiment
from evals import exact_match

attempts = {}

def flaky(x):
    attempts[x] = attempts.get(x, 0) + 1
    if x == 1 and attempts[x] == 1:
        raise ConnectionError("flaky")  # fails once, then works
    if x == 2 and Path("broken").exists():
        raise ValueError("broken")
    if x == 3:
        time.sleep(SLEEP)
    return x

flaky_exp = Experiment(name="flaky", data=[{"x": i, "target": i} for i in range(4)], func=flaky, evals=[exact_match],
                       retry_backoff=0.01)
pinned = Experiment(name="pinned", data=[{"x": 0}], func=flaky, timeout=5, retries=2)
"""


def test_timeout_and_retries_flags(tmp_path: Path) -> None:
    write(tmp_path / "cfg.py", FLAKY.replace("SLEEP", "3"))
    plain = cli("cfg.py", "--only", "flaky", "--json", "--timeout", "0.5", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    (exp,) = json.loads(plain.stdout)["experiments"]
    assert exp["n_errors"] == 2  # row 1 failed once and was not retried; row 3 timed out
    retried = cli("cfg.py", "--only", "flaky", "--json", "--timeout", "0.5", "--retries", "1", cwd=tmp_path)
    (exp,) = json.loads(retried.stdout)["experiments"]
    assert exp["n_errors"] == 1  # row 1 passed on its retry; row 3 timed out twice
    rows = json.loads(cli("show", exp["run_name"], "--json", cwd=tmp_path).stdout)["worst_rows"]
    assert "timeout after 0.5 s" in rows[0]["error"]
    pinned = cli("cfg.py", "--only", "pinned", "--timeout", "0.5", "--retries", "1", cwd=tmp_path)
    assert pinned.returncode == 0, pinned.stderr
    assert "note: --timeout ignored for 'pinned': cfg.py sets timeout=5" in pinned.stderr
    assert "note: --retries ignored for 'pinned': cfg.py sets retries=2" in pinned.stderr


def test_resume_and_keep_errors_flags(tmp_path: Path) -> None:
    write(tmp_path / "cfg.py", FLAKY.replace("SLEEP", "0"))
    (tmp_path / "broken").touch()
    first = cli("cfg.py", "--only", "flaky", "--run-name", "r1", "--json", "--retries", "1", cwd=tmp_path)
    assert json.loads(first.stdout)["experiments"][0]["n_errors"] == 1  # row 2 is broken
    kept = cli("cfg.py", "--only", "flaky", "--run-name", "r1", "--resume", "--keep-errors", "--json", cwd=tmp_path)
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["experiments"][0]["n_errors"] == 1  # the errored row was kept, not re-run
    assert "resumed: 4 row-trials were already done and kept" in kept.stderr
    (tmp_path / "broken").unlink()
    fixed = cli("cfg.py", "--only", "flaky", "--run-name", "r1", "--resume", "--json", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    (exp,) = json.loads(fixed.stdout)["experiments"]
    assert exp["n_errors"] == 0 and exp["n_total"] == 4 and exp["run_name"] == "r1"
    assert "resumed: 3 row-trials were already done and kept" in fixed.stderr
    for args, message in (
        (["--resume"], "error: --resume continues a stored run: name it with --run-name NAME"),
        (["--keep-errors"], "error: --keep-errors keeps the errored rows of a resumed run: use it with --resume"),
        (["--timeout", "0"], "argument --timeout: '0' must be a positive number"),
        (["--retries", "-1"], "argument --retries: '-1' must be 0 or more"),
    ):
        proc = cli("cfg.py", "--only", "flaky", *args, cwd=tmp_path)
        assert proc.returncode == 2 and message in one_line_error(proc), proc.stderr


# -- intervals are computed on read: show and list print what the run printed ---------------------------
def test_show_and_list_recompute_the_intervals_the_run_printed(tmp_path: Path) -> None:
    write(
        tmp_path / "cfg.py",
        """
        from runner import Experiment
        def spread(log):
            return (log.output * 7 % 10) / 10

        e = Experiment(name="e", data=[{"x": i} for i in range(30)], func=lambda x: x, evals=[spread])
        """,
    )
    ran = cli("cfg.py", "--run-name", "ci", "--trials", "2", "--n-workers", "7", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    line = next(ln for ln in ran.stdout.splitlines() if ln.strip().startswith("spread "))
    printed = line.split("spread", 1)[1].split("n=")[0].strip()
    assert printed.startswith("0.450 [") and printed.endswith("]")
    shown = cli("show", "ci", cwd=tmp_path).stdout
    assert line in shown.splitlines()
    listed = cli("list", cwd=tmp_path).stdout
    assert f"spread={printed}" in listed
    summary = json.loads(cli("list", "--json", cwd=tmp_path).stdout)[0]["score_summaries"]["spread"]
    assert summary["n"] == 60 and summary["ci_method"] == "bootstrap"  # two trials per row: the row bootstrap
