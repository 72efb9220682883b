"""Row-level evals (evals/row.py)."""

from __future__ import annotations

import doctest
import random
import re

import pytest

import evals
import evals.row
from evals import contains, exact_match, json_valid, levenshtein, regex_match
from evals.row import edit_distance
from runner.errors import FunctionError
from runner.scoring import Log, call_scorer_sync, scorer_name, validate_scorers


def log(output: object = None, target: object = None, **kw: object) -> Log:
    return Log(inputs={}, output=output, target=target, **kw)  # type: ignore[arg-type]


def reference_distance(a: str, b: str) -> int:
    """The textbook full-table Levenshtein DP, as an independent reference."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        table[i][0] = i
    for j in range(len(b) + 1):
        table[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = min(
                table[i - 1][j] + 1,
                table[i][j - 1] + 1,
                table[i - 1][j - 1] + (a[i - 1] != b[j - 1]),
            )
    return table[len(a)][len(b)]


def test_all_is_sorted_and_complete() -> None:
    assert evals.__all__ == sorted(evals.__all__)
    public = {n for n in dir(evals) if not n.startswith("_") and callable(getattr(evals, n))}
    assert public == set(evals.__all__)
    assert evals.row.__all__ == sorted(evals.row.__all__)


def test_docstring_examples() -> None:
    result = doctest.testmod(evals.row, extraglobs={"Log": Log})
    assert result.attempted >= 6
    assert result.failed == 0


def test_every_eval_has_a_docstring_with_an_example() -> None:
    for name in evals.__all__:
        doc = getattr(evals, name).__doc__
        assert doc and ">>>" in doc, name


# exact_match


@pytest.mark.parametrize(
    ("output", "target", "expected"),
    [
        ("Paris", "Paris", 1.0),
        ("  Paris\n", "Paris ", 1.0),
        ("paris", "Paris", 0.0),
        (42, "42", 1.0),
        (42, 42, 1.0),
        (None, "Paris", 0.0),
        ("Paris", None, None),
        ("", "", 1.0),
    ],
)
def test_exact_match(output: object, target: object, expected: float | None) -> None:
    assert exact_match(log(output, target)) == expected


# levenshtein


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("", "", 0),
        ("", "abc", 3),
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("intention", "execution", 5),
        ("abc", "abc", 0),
        ("héllo wörld", "hello world", 2),
        ("a" * 70 + "b", "a" * 70 + "c", 1),  # longer than one 64-bit word
    ],
)
def test_edit_distance_known_values(a: str, b: str, distance: int) -> None:
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def test_edit_distance_matches_reference_dp_on_random_strings() -> None:
    rnd = random.Random(1234)
    for _ in range(2000):
        alphabet = rnd.choice(["ab", "abc", "abcdé ", "xyz123"])
        a = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 20)))
        b = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 90)))
        assert edit_distance(a, b) == reference_distance(a, b), (a, b)


def test_edit_distance_handles_long_texts() -> None:
    rnd = random.Random(7)
    a = "".join(rnd.choice("abcdefgh ") for _ in range(5000))
    b = a[:1000] + "XYZ" + a[1003:1500] + a[1550:]  # 3 substitutions, 50 deletions
    # Outside the edited window the texts agree, so the window's distance is the whole distance.
    assert edit_distance(a, b) == reference_distance(a[900:1600], b[900:1550]) <= 53


def test_levenshtein_similarity() -> None:
    assert levenshtein(log("kitten", "sitting")) == pytest.approx(1 - 3 / 7)
    assert levenshtein(log("", "")) == 1.0
    assert levenshtein(log("abc", "abc")) == 1.0
    assert levenshtein(log("abc", "xyz")) == 0.0
    assert levenshtein(log(None, "abc")) == 0.0
    assert levenshtein(log(123, "124")) == pytest.approx(2 / 3)
    assert levenshtein(log("abc", None)) is None


# contains


def test_contains() -> None:
    assert contains(log("The capital is PARIS.", "paris")) == 1.0
    assert contains(log("The capital is Lyon.", "paris")) == 0.0
    assert contains(log("answer: 42", 42)) == 1.0
    assert contains(log(None, "x")) == 0.0
    assert contains(log("anything", "")) == 1.0
    assert contains(log("anything", None)) is None
    assert contains(log("STRASSE", "straße")) == 1.0  # casefold, not just lower


# regex_match


def test_regex_match_scores_and_names() -> None:
    has_year = regex_match(r"\b\d{4}\b", name="has_year")
    assert has_year.__name__ == "has_year"
    assert scorer_name(has_year) == "has_year"
    assert has_year(log("Founded in 1998.")) == 1.0
    assert has_year(log("Founded long ago.")) == 0.0
    assert has_year(log(None)) == 0.0
    assert has_year(log(19981)) == 0.0
    assert regex_match("yes").__name__ == "regex_match"
    assert "has_year" in repr(has_year)


def test_regex_match_flags_and_compiled_patterns() -> None:
    assert regex_match("^yes$", flags=re.IGNORECASE | re.MULTILINE)(log("maybe\nYES\n")) == 1.0
    assert regex_match("^yes$")(log("maybe\nYES\n")) == 0.0
    assert regex_match(re.compile("y.s"))(log("yes")) == 1.0


def test_regex_match_works_as_a_runner_scorer() -> None:
    scorer = regex_match("ok", name="is_ok")
    assert validate_scorers([scorer], "scores") == [scorer]
    scores, failures = call_scorer_sync(scorer, log("ok!"))
    assert failures == []
    assert [(s.name, s.score) for s in scores] == [("is_ok", 1.0)]


@pytest.mark.parametrize("pattern", ["(unclosed", "[a-", "*oops"])
def test_regex_match_bad_pattern_raises_naming_it(pattern: str) -> None:
    with pytest.raises(FunctionError, match=re.escape(repr(pattern))):
        regex_match(pattern, name="mine")


def test_regex_match_rejects_flags_with_a_compiled_pattern_and_bad_names() -> None:
    with pytest.raises(FunctionError):
        regex_match(re.compile("a"), flags=re.I)
    with pytest.raises(FunctionError, match="name"):
        regex_match("a", name="")


# json_valid


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ({"a": 1}, 1.0),
        ([1, 2], 1.0),
        ({}, 1.0),
        ('{"answer": 42}', 1.0),
        ("  [1, 2, 3]\n", 1.0),
        ("42", 1.0),
        ('"a string"', 1.0),
        ("null", 1.0),
        (b'{"a": 1}', 1.0),
        ("{'a': 1}", 0.0),
        ('{"a": 1', 0.0),
        ("", 0.0),
        ("NaN", 0.0),
        ('{"x": Infinity}', 0.0),
        (b"\xff\xfe{", 0.0),
        (None, 0.0),
        (42, 0.0),
        (("a",), 0.0),
    ],
)
def test_json_valid(output: object, expected: float) -> None:
    assert json_valid(log(output)) == expected


def test_target_free_evals_score_errored_rows_like_any_output() -> None:
    errored = log(None, "x", status="error", error="Traceback ...")
    assert json_valid(errored) == 0.0
    assert exact_match(errored) == 0.0
