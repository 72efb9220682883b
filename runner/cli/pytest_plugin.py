"""The pytest plugin: evaluations run as tests (registered through ``pytest11``: installing the
package is enough).

* **An Experiment in a test module is a test.** Every module-level :class:`~runner.Experiment`
  of a collected test module becomes one test item named after its variable (``pytest -k``
  matches that name and the experiment's ``name``). The item runs the experiment, stores the
  results like any run, and fails when the run did not complete or one of its gates
  (``fail_under``, ``max_error_rate``, ``strict``) is not met, with a readable report: which
  gate failed, each score with its 95 % interval, and the worst rows.
* **A test that calls** ``run()`` fails the same way when a run it made misses a gate, after
  the test function itself passed (mark it ``@pytest.mark.runner_ignore_gates`` when it checks
  ``result.gates`` itself).
* ``--runner-baseline RUN`` compares every experiment run by the tests with the stored run
  ``RUN`` (its name or uuid, in the store the experiment writes to); the comparison is part of
  the report and of the summary.
* The terminal summary ends with one line per run (of Experiment items, and of test functions'
  runs that have gates): experiment, run name, rows, errors, scores with intervals, gates.

Turn collection of Experiment objects off with ``runner_experiments = false`` in the ini file.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from runner.experiment import Experiment
    from runner.results.compare import Comparison
    from runner.results.result import Result

__all__ = ["ExperimentItem"]

_RUNS: pytest.StashKey[list[tuple[str, Result, Comparison | None]]] = pytest.StashKey()
_MADE: pytest.StashKey[list[Result]] = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("runner", "runner experiments")
    group.addoption("--runner-baseline", metavar="RUN", default=None,
                    help="compare every experiment run by the tests with the stored run RUN (name or uuid)")
    parser.addini("runner_experiments", type="bool", default=True,
                  help="collect module-level runner Experiment objects of test modules as tests")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RUNS] = []
    config.addinivalue_line(
        "markers", "runner_ignore_gates: a test whose runs may miss their gates (it checks result.gates itself)")


def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> pytest.Item | None:
    from runner.experiment import Experiment

    if (isinstance(obj, Experiment) and isinstance(collector, pytest.Module) and not name.startswith("_")
            and collector.config.getini("runner_experiments")):
        return ExperimentItem.from_parent(collector, name=name, experiment=obj)
    return None


class GateFailure(Exception):
    """A run that did not complete or missed a gate; its report is the test's failure text."""

    def __init__(self, report: str) -> None:
        super().__init__(report)
        self.report = report


class ExperimentItem(pytest.Item):
    """One module-level Experiment, run as a test."""

    def __init__(self, *, experiment: Experiment, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.experiment = experiment
        self.extra_keyword_matches.add(experiment.name)

    def runtest(self) -> None:
        result = self.experiment.run(quiet=True)
        problem = _record(self.config, self.name, self.experiment, result)
        if problem is not None:
            raise GateFailure(problem)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, GateFailure):
            return excinfo.value.report
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"experiment {self.experiment.name!r}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """Around a test function: collect the results of the runs it makes."""
    if isinstance(item, ExperimentItem):
        return (yield)
    from runner.results.gate_report import result_listeners

    made: list[Result] = []
    item.stash[_MADE] = made
    token = result_listeners.set((*result_listeners.get(), made.append))
    try:
        return (yield)
    finally:
        result_listeners.reset(token)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A passing test function whose run missed a gate fails, with the run's report."""
    report = yield
    made = item.stash.get(_MADE, None)
    if call.when == "call" and made:
        baseline = bool(item.config.getoption("runner_baseline"))
        problems = []
        from runner.errors import RunnerError

        for result in made:
            if len(result.gates) or baseline:  # runs without gates stay out of the summary
                try:
                    _record(item.config, item.name, None, result)
                except RunnerError as exc:  # e.g. no such baseline run: this test's failure, not pytest's
                    problems.append(f"experiment {result.name!r}: {exc}")
                    continue
                if result.gates.failed:
                    problems.append(_report(result, None))
        if problems and report.passed and item.get_closest_marker("runner_ignore_gates") is None:
            report.outcome = "failed"
            report.longrepr = "\n\n".join(problems)
    return report


def _record(config: pytest.Config, test: str, exp: Experiment | None, result: Result) -> str | None:
    """Keep ``result`` for the summary (with its baseline comparison); its failure report when
    it did not complete or missed a gate."""
    comparison = _compare(config, exp, result)
    config.stash[_RUNS].append((test, result, comparison))
    if result.status == "completed" and result.gates.passed:
        return None
    return _report(result, comparison)


def _compare(config: pytest.Config, exp: Experiment | None, result: Result) -> Comparison | None:
    ref = config.getoption("runner_baseline")
    if not ref:
        return None
    from runner.backends.baseline import Baseline
    from runner.experiment import Experiment
    from runner.settings import Settings

    if exp is None:  # a run made by a test function: its store is where its rows are
        location = result.location
        http = location.startswith(("http://", "https://"))
        exp = Experiment(name=result.name, data=[], func=lambda: None, project_name=result.project_name,
                         base_url=location if http else None, db=None if http else location)
    settings = Settings.from_env()
    return Baseline.find(ref, exp.target(settings), exp.project_name or settings.project_name).compare(result, top=3)


def _report(result: Result, comparison: Comparison | None) -> str:
    lines = [f"experiment {result.name!r} (run {result.run_name}): {result.status}, "
             f"{result.n_total} row-trials, {result.n_errors} errored"]
    if result.gates.failed:
        lines.append("gates:")
        lines.extend(f"  {line}" for line in str(result.gates).splitlines())
    if result.scores:
        lines.append("scores:")
        lines.extend(f"  {name}: {s.format()}" for name, s in result.scores.items())
    lines.extend(_worst_rows(result))
    if comparison is not None:
        lines.append(f"against the baseline {comparison.label_a}:")
        lines.extend(f"  {line}" for line in comparison.to_text().splitlines())
    lines.append(f"stored in {result.location} (experiment {result.experiment_uuid})")
    return "\n".join(lines)


def _worst_rows(result: Result, n: int = 3) -> list[str]:
    """The errored rows, then those with the lowest score of the first failed gate."""
    failed = [o.gate.split(" ", 1)[0] for o in result.gates.failed]
    score = next((name for name in failed if name in result.scores), next(iter(result.scores), None))

    def value(row: dict[str, Any]) -> float:
        for s in row.get("scores") or []:
            if s.get("name") == score:
                return float(s["score"])
        return float("inf")

    rows = result.rows()
    worst = sorted(rows, key=lambda r: (r.get("status") == "success", value(r)))[:n]
    if not worst:
        return []
    out = ["worst rows:"]
    for r in worst:
        meta = r.get("metadata") or {}
        where = f"row {meta.get('row_index', '?')}"
        if r.get("status") != "success":
            error = str(r.get("error") or "").strip().splitlines()
            out.append(f"  {where}: error {error[-1] if error else ''} inputs={_short(r.get('inputs'))}")
        else:
            out.append(f"  {where}: {score}={value(r):g} inputs={_short(r.get('inputs'))} "
                       f"output={_short(r.get('output'))} target={_short(r.get('target'))}")
    return out


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    runs = config.stash.get(_RUNS, [])
    if not runs:
        return
    terminalreporter.section("runner experiments")
    for test, result, comparison in runs:
        scores = ", ".join(f"{name} {s.format()}" for name, s in result.scores.items()) or "no scores"
        gates = "no gates" if not len(result.gates) else (
            f"gates passed ({len(result.gates)})" if result.gates.passed
            else f"{len(result.gates.failed)} of {len(result.gates)} gates failed")
        terminalreporter.write_line(
            f"{test}: {result.name} run {result.run_name}: {result.n_total} rows, {result.n_errors} errored; "
            f"{scores}; {gates}")
        if comparison is not None:
            for line in comparison.to_text().splitlines():
                terminalreporter.write_line(f"    {line}")
