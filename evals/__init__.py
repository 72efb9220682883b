"""Ready-made evals.

Row-level scorers (this package) take one log and return a score::

    from evals import exact_match, levenshtein, regex_match
    Experiment(..., scores=[exact_match, levenshtein, regex_match(r"\\d+", name="has_number")])

Dataset-level evals (:mod:`evals.dataset`: ``pearson``, ``spearman``, ``accuracy``,
``balanced_accuracy``) take every root log of an experiment and return one score;
:mod:`evals.reducers` (``reduce_trials(score, "pass@2" | "majority" | "max" | "min")``) reduces
each row's trials of a score to one value and reports their mean the same way.

``llm_judge(criteria, model=...)`` (:mod:`evals.judge`) builds a scorer that asks an LLM to
grade each output against the criteria, and returns its score with the judge's reason.
"""

from evals.judge import llm_judge
from evals.row import contains, exact_match, json_valid, levenshtein, regex_match

__all__ = ["contains", "exact_match", "json_valid", "levenshtein", "llm_judge", "regex_match"]
