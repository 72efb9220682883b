"""runner: a fast, honest experiment runner for LLM applications that speaks the Parea API.

>>> from runner import Experiment, Score, trace
>>> from evals import exact_match
>>> exp = Experiment(name="qa", data="datasets/qa.csv", func=my_answer, evals=[exact_match])  # doctest: +SKIP
>>> result = exp.run()                                                                       # doctest: +SKIP

Importing this package is cheap: asyncio, the engine, the store, pandas, scipy, pydantic and the
server load only when used. ``Result``, ``completion``, ``acompletion``, ``wrap_openai`` and
``wrap_anthropic`` are loaded on first access (they pull in the statistics, the event loop
machinery, or an LLM SDK).
"""

from typing import TYPE_CHECKING, Any

from runner.errors import (
    BackendError,
    CompletionError,
    ConfigError,
    DatasetError,
    FunctionError,
    NotFoundError,
    RateLimitError,
    RunNameError,
    RunnerError,
)
from runner.experiment import Experiment
from runner.pipeline.tracing import Span, current_span, span, trace
from runner.scoring import EvaluationResult, Log, Score

if TYPE_CHECKING:
    from runner.integrations.anthropic import wrap_anthropic
    from runner.integrations.llm import acompletion, completion
    from runner.integrations.openai import wrap_openai
    from runner.results.result import Result

_LAZY = {
    "Result": "runner.results.result",
    "acompletion": "runner.integrations.llm",
    "completion": "runner.integrations.llm",
    "wrap_anthropic": "runner.integrations.anthropic",
    "wrap_openai": "runner.integrations.openai",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "CompletionError",
    "ConfigError",
    "DatasetError",
    "EvaluationResult",
    "Experiment",
    "FunctionError",
    "Log",
    "NotFoundError",
    "RateLimitError",
    "Result",
    "RunNameError",
    "RunnerError",
    "Score",
    "Span",
    "__version__",
    "acompletion",
    "completion",
    "current_span",
    "span",
    "trace",
    "wrap_anthropic",
    "wrap_openai",
]
