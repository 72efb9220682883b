"""Normalising what scorers return, and their failures."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from runner.errors import FunctionError
from runner.scoring import EvaluationResult, Log, Score, call_scorer, call_scorer_sync, normalise, validate_scorers


def test_normalise_every_return_type() -> None:
    assert normalise("s", 0.5) == [Score("s", 0.5)]
    assert normalise("s", True) == [Score("s", 1.0)]
    assert normalise("s", 3) == [Score("s", 3.0)]
    assert normalise("s", np.float32(0.25)) == [Score("s", 0.25)]
    assert normalise("s", Score("n", 1, "r")) == [Score("n", 1.0, "r")]
    assert normalise("s", [Score("a", 1), Score("b", 0)]) == [Score("a", 1.0), Score("b", 0.0)]
    assert normalise("s", None) == []
    assert normalise("s", {"score": 1, "reason": "x"}) == [Score("s", 1.0, "x")]
    assert EvaluationResult is Score


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "0.5", [1.0], object()])
def test_unusable_values_raise(bad: object) -> None:
    with pytest.raises(ValueError):
        normalise("s", bad)


def test_scorer_failures_are_reported_not_raised() -> None:
    def broken(log: Log) -> float:
        raise RuntimeError("nope")

    log = Log(inputs={})
    scores, failures = call_scorer_sync(broken, log)
    assert scores == [] and failures[0].name == "broken" and "RuntimeError: nope" in failures[0].error

    async def abroken(log: Log) -> float:
        raise KeyError("k")

    scores, failures = asyncio.run(call_scorer(abroken, log))
    assert failures[0].name == "abroken"


def test_validate_scorers_names_the_bad_one() -> None:
    with pytest.raises(FunctionError, match="callables"):
        validate_scorers([1], "evals")
    with pytest.raises(FunctionError, match="cannot be called with one argument"):
        validate_scorers([lambda a, b: 0], "evals")

    def two(a: object, b: object) -> float:
        return 0

    with pytest.raises(FunctionError, match=r"two\(a"):
        validate_scorers([two], "evals")


def test_log_get_score() -> None:
    log = Log(inputs={}, scores=[Score("a", 0.5)])
    assert log.get_score("a") == 0.5 and log.get_score("b") is None
