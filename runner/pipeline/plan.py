"""What a run executes: a :class:`RunPlan`, built from an :class:`runner.experiment.Experiment`
by :meth:`~runner.experiment.Experiment.plan`, so the pipeline never reads the experiment's
private fields, the environment or the CLI's flags.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.backends.target import Target
from runner.options import RunOptions

if TYPE_CHECKING:
    from runner.proxy.prompts import DeployedPrompt

__all__ = ["RunPlan"]


@dataclass(frozen=True)
class RunPlan:
    """One run, resolved: what to run on which rows, with which options, and where results go."""

    #: the experiment's name
    name: str
    #: the data as given (a list, a DataFrame, a path, an iterator, or a stored dataset's name or id)
    data: Any
    func: Callable[..., Any]
    #: per-row scorers, checked, in order
    scorers: Sequence[Callable[..., Any]]
    #: dataset-level evals, checked, in order
    dataset_evals: Sequence[Callable[..., Any]]
    project_name: str
    #: the run's metadata as stored (strings; the prompt version's metadata included)
    metadata: Mapping[str, str]
    options: RunOptions
    #: where results go (the one resolution of the door: :func:`runner.backends.target.resolve_target`)
    target: Target
    #: the stored prompt version ``completion(llm_inputs=...)`` calls in this run
    prompt: DeployedPrompt | None = None
    #: Dask worker resources each row needs (Dask executor only)
    resources: Mapping[str, float] | None = None

    @property
    def func_name(self) -> str:
        return getattr(self.func, "__name__", type(self.func).__name__)
