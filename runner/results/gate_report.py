"""Which gates a run passed: :class:`GateReport`, built from :class:`runner.results.gates.Gates`.

``Experiment(..., fail_under={"exact_match": 0.8}, max_error_rate=0.02, strict=True)`` (or the
same keywords to ``run()``) checks the CLI's gates after the run; ``result.gates`` then says
which passed::

    >>> result.gates.passed                                    # doctest: +SKIP
    False
    >>> print(result.gates)                                    # doctest: +SKIP
    FAIL  exact_match >= 0.8: gate failed: exact_match mean 0.62 < 0.8
    pass  error rate <= 0.02

A failed gate does not raise: the run is stored and returned as usual; the command line exits 1
and the pytest plugin fails the test. The checks themselves are :meth:`Gates.check`'s, one gate
at a time, so what passes here passes on the command line. A gate on a score the run does not
have fails, with the message :meth:`Gates.check` gives for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING

from runner.errors import ConfigError
from runner.results.gate_outcomes import GateOutcome, GateReport

if TYPE_CHECKING:
    from runner.results.compare import Comparison
    from runner.results.gates import Gates
    from runner.results.result import Result

__all__ = ["GateOutcome", "GateReport", "check_gates", "gates_of", "result_listeners"]

#: callbacks told of every :class:`Result` a run returns in this context (the pytest plugin
#: registers one per test, to fail a test whose run missed a gate)
result_listeners: ContextVar[tuple[Callable[[Result], None], ...]] = ContextVar("runner_result_listeners",
                                                                                default=())


def gates_of(fail_under: Mapping[str, float] | None, max_error_rate: float | None, strict: bool,
             max_regression: Mapping[str, float] | None = None) -> Gates:
    """The :class:`Gates` for these arguments; :class:`ConfigError` for values that cannot work."""
    from runner.results.gates import Gates

    if fail_under is not None and not isinstance(fail_under, Mapping):
        raise ConfigError(f'fail_under must be a dict of score name -> minimum, e.g. {{"exact_match": 0.8}}, '
                          f"not {fail_under!r}")
    bars: dict[str, float] = {}
    for name, value in (fail_under or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"fail_under[{name!r}] must be a number, not {value!r}")
        bars[str(name)] = float(value)
    rate = max_error_rate
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))):
        raise ConfigError(f"max_error_rate must be a fraction between 0 and 1, not {max_error_rate!r}")
    if rate is not None and not 0 <= rate <= 1:
        raise ConfigError(f"max_error_rate must be a fraction between 0 and 1, not {rate!r}")
    if strict and not bars:
        raise ConfigError("strict=True changes how fail_under is checked: give fail_under={NAME: VALUE} too")
    return Gates(fail_under=bars, strict=bool(strict), max_regression=dict(max_regression or {}),
                 max_error_rate=None if max_error_rate is None else float(max_error_rate))


def check_gates(gates: Gates, result: Result, comparison: Comparison | None = None, *,
                known: Iterable[str] = (), skip_missing: bool = False) -> GateReport:
    """Each gate of ``gates`` checked on its own with :meth:`Gates.check` (so each has a verdict).

    ``skip_missing`` leaves out gates on scores ``result`` does not know (several experiments
    ran, and the name is another one's), as :meth:`Gates.check` does."""
    from runner.results.gates import Gates

    known = set(known)
    missing = set(gates.unknown(result, known)) if skip_missing else set()
    singles: list[tuple[str, Gates]] = []
    for name, bar in gates.fail_under.items():
        if name in missing:
            continue
        bound = "95% CI lower bound" if gates.strict else "mean"
        singles.append((f"{name} {bound} >= {bar:g}", Gates(fail_under={name: bar}, strict=gates.strict)))
    for name, delta in gates.max_regression.items():
        if name in missing:
            continue
        singles.append((f"{name} drop <= {delta:g} vs baseline",
                        Gates(max_regression={name: delta}, alpha=gates.alpha)))
    if gates.max_error_rate is not None:
        singles.append((f"error rate <= {gates.max_error_rate:g}", Gates(max_error_rate=gates.max_error_rate)))
    outcomes = []
    for label, single in singles:
        try:
            lines = single.check(result, comparison, known=known)
        except ConfigError as exc:  # a gate on an unknown score, or one needing a baseline
            lines = [f"gate failed: {exc}"]
        outcomes.append(GateOutcome(label, not lines, "; ".join(lines)))
    return GateReport(tuple(outcomes))


def notify(result: Result) -> None:
    """Tell this context's :data:`result_listeners` about ``result``."""
    for listener in result_listeners.get():
        listener(result)
