"""``run --junit-xml FILE``: each experiment and each of its gates as a JUnit test case.

Any CI system that reads JUnit XML (GitHub Actions reporters, GitLab, Jenkins, Buildkite ...)
then lists, per experiment, one ``run`` case (failed when the run did not complete, with its
error count) and one case per gate (failed with the gate's ``gate failed: ...`` line)::

    <testsuites>
      <testsuite name="faq" tests="3" failures="1" time="4.2">
        <properties><property name="experiment_uuid" value="..."/> ...</properties>
        <testcase classname="faq" name="run" time="4.2"/>
        <testcase classname="faq" name="exact_match mean &gt;= 0.8">
          <failure message="gate failed: exact_match mean 0.62 &lt; 0.8"/>
        </testcase>
      </testsuite>
    </testsuites>
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

if TYPE_CHECKING:
    from runner.results.compare import Comparison
    from runner.results.gate_outcomes import GateReport
    from runner.results.gates import Gates
    from runner.results.result import Result

__all__ = ["junit_xml", "reports_for", "write_junit"]


def reports_for(gates: Gates, runs: Sequence[tuple[Result, Comparison | None, set[str]]]) -> list[GateReport]:
    """Per run: its experiment's own gates, then the command line's ``gates`` (``runs`` holds
    each result, its comparison with the baseline, and its scorers' names)."""
    from runner.results.gate_report import GateReport, check_gates

    several = len(runs) > 1
    out = []
    for result, comparison, known in runs:
        flags = check_gates(gates, result, comparison, known=known, skip_missing=several) if gates else GateReport()
        out.append(GateReport((*result.gates.outcomes, *flags.outcomes)))
    return out


def junit_xml(runs: Sequence[tuple[Result, GateReport]]) -> bytes:
    """The JUnit XML document of ``runs`` (each a result and its gates)."""
    suites = ET.Element("testsuites")
    total = failures = 0
    for result, report in runs:
        cases: list[tuple[str, str | None]] = []
        ok = result.status == "completed"
        run_failure = None if ok else (
            f"run {result.status}: {result.n_errors} of {result.n_total} row-trials errored"
            + (" (interrupted)" if result.interrupted else ""))
        cases.append(("run", run_failure))
        cases.extend((o.gate, None if o.passed else o.detail) for o in report)
        n_failed = sum(1 for _, f in cases if f is not None)
        total += len(cases)
        failures += n_failed
        suite = ET.SubElement(suites, "testsuite", name=result.name, tests=str(len(cases)),
                              failures=str(n_failed), errors="0", time=f"{result.duration:.3f}")
        props = ET.SubElement(suite, "properties")
        for key, value in (("experiment_uuid", result.experiment_uuid), ("run_name", result.run_name),
                           ("project_name", result.project_name), ("location", result.location),
                           ("n_total", str(result.n_total)), ("n_errors", str(result.n_errors))):
            ET.SubElement(props, "property", name=key, value=value)
        for name, failure in cases:
            case = ET.SubElement(suite, "testcase", classname=result.name, name=name,
                                 time=f"{result.duration:.3f}" if name == "run" else "0")
            if failure is not None:
                ET.SubElement(case, "failure", message=failure, type="gate" if name != "run" else "run").text = failure
        out = ET.SubElement(suite, "system-out")
        out.text = result.summary_text()
    suites.set("tests", str(total))
    suites.set("failures", str(failures))
    return bytes(ET.tostring(suites, encoding="utf-8", xml_declaration=True))


def write_junit(path: str | Path, runs: Sequence[tuple[Result, GateReport]]) -> None:
    """Write :func:`junit_xml` of ``runs`` to ``path`` (its folder is created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(junit_xml(runs))
    tmp.replace(target)
