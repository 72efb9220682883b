"""runner: a fast, honest experiment runner for LLM applications that speaks the Parea API.

>>> from runner import Experiment, Score, trace
>>> from evals import exact_match
>>> exp = Experiment(name="qa", data="datasets/qa.csv", func=my_answer, evals=[exact_match])  # doctest: +SKIP
>>> result = exp.run()                                                                       # doctest: +SKIP

Importing this package is cheap: pandas, scipy, pydantic and the server load only when used.
"""

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
from runner.llm import acompletion, completion
from runner.result import Result
from runner.scoring import EvaluationResult, Log, Score
from runner.tracing import Span, current_span, span, trace

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
]
