"""The stored run a new run is compared with: ``run --baseline RUN``, and the pytest plugin's
``--runner-baseline``. Its rows are compared with :func:`runner.results.compare.compare_rows`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.backends.readers import Source, find_run, open_reader
from runner.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from runner.backends.target import Target
    from runner.results.compare import Comparison
    from runner.results.result import Result

__all__ = ["Baseline", "label"]


def label(exp: dict[str, Any], other: dict[str, Any]) -> str:
    """How a run is named in a comparison: its run name, with its experiment's name when the
    other run is of another experiment and the run name does not say it already."""
    name = str(exp.get("run_name") or exp["uuid"])
    if exp.get("name") != other.get("name") and str(exp.get("name")) not in name:
        name += f" ({exp.get('name')})"
    return name


@dataclass
class Baseline:
    """The stored run a new run is compared with; its rows are read once, when first needed.

    The store (or server) is opened to find the run, closed while the experiments run, and
    opened again to read the rows.
    """

    ref: str
    experiment: dict[str, Any]
    location: str
    _open: Callable[[], Source]
    _rows: list[dict[str, Any]] | None = None

    @classmethod
    def find(cls, ref: str, target: Target, project_name: str) -> Baseline:
        """The run ``ref`` (run name or uuid) in ``target``, where the new run writes; ``ConfigError`` if absent.

        A run of that name in the experiment's project is preferred; otherwise the newest of
        that name in any project.
        """
        first = open_reader(target)
        if first is None:
            raise ConfigError(f"--baseline {ref}: there is no store at {target.db} yet, so no run to compare with")

        def open_source() -> Source:
            source = open_reader(target)
            assert source is not None  # it existed a moment ago
            return source

        source = first
        try:
            try:
                found = find_run(source, ref, project_name)
            except NotFoundError:
                found = find_run(source, ref, None)
        except NotFoundError:
            raise ConfigError(
                f"--baseline {ref}: no run or experiment called {ref!r} in {source.location}; "
                "`python -m runner list` shows them"
            ) from None
        finally:
            source.close()
        return cls(ref, found, source.location, open_source)

    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            source = self._open()
            try:
                self._rows = source.rows(self.experiment["uuid"])
            finally:
                source.close()
        return self._rows

    def compare(self, result: Result, top: int = 5) -> Comparison:
        """``result`` (B) against this baseline (A)."""
        from runner.results.compare import compare_rows

        new = {"uuid": result.experiment_uuid, "run_name": result.run_name, "name": result.name}
        return compare_rows(
            self.rows(),
            result.rows(),
            label_a=label(self.experiment, new),
            label_b=label(new, self.experiment),
            top=top,
        )
