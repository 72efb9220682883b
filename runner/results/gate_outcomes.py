"""What the gates of one run said: :class:`GateReport` (``result.gates``), one
:class:`GateOutcome` per gate. Built by :func:`runner.results.gate_report.check_gates`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["GateOutcome", "GateReport"]


@dataclass(frozen=True)
class GateOutcome:
    """One gate: what it asks (``"exact_match >= 0.8"``), whether it passed, and why not."""

    gate: str
    passed: bool
    #: the failure line (``gate failed: ...``); empty when passed
    detail: str = ""


@dataclass(frozen=True)
class GateReport:
    """Every gate of one run, in order: fail_under (per score), max_regression, max_error_rate."""

    outcomes: tuple[GateOutcome, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    @property
    def failed(self) -> list[GateOutcome]:
        return [o for o in self.outcomes if not o.passed]

    def __bool__(self) -> bool:
        """True when every gate passed (no gates: True)."""
        return self.passed

    def __iter__(self) -> Any:
        return iter(self.outcomes)

    def __len__(self) -> int:
        return len(self.outcomes)

    def __str__(self) -> str:
        return "\n".join(
            f"pass  {o.gate}" if o.passed else f"FAIL  {o.gate}: {o.detail}" for o in self.outcomes
        ) or "(no gates)"
