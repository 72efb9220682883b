"""The public surface: a sorted, complete __all__, and an import that stays cheap."""

from __future__ import annotations

import subprocess
import sys

import runner


def test_all_is_sorted_and_complete() -> None:
    assert list(runner.__all__) == sorted(runner.__all__)
    public = {
        n for n in dir(runner)
        if not n.startswith("_") and n not in ("TYPE_CHECKING", "Any") and not isinstance(getattr(runner, n), type(sys))
    }
    assert public == set(runner.__all__) - {"__version__"}
    for name in runner.__all__:  # every name, lazy ones included, resolves
        assert getattr(runner, name) is not None


def test_issue_api_names() -> None:
    from evals import exact_match, levenshtein  # noqa: F401
    from evals.dataset import accuracy, balanced_accuracy, pearson, spearman  # noqa: F401
    from runner import EvaluationResult, Experiment, Score, trace  # noqa: F401

    assert EvaluationResult is Score


def test_import_does_not_load_heavy_modules() -> None:
    heavy = ("pandas", "scipy", "numpy", "pydantic", "fastapi", "httpx", "asyncio", "sqlite3", "openai", "anthropic",
             "opentelemetry")
    code = f"import sys, runner; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
