"""Classification: a keyword-rule sentiment classifier for product reviews.

Two versions of the classifier run on the same labelled reviews (``datasets/reviews.csv``):
the baseline counts positive and negative words; the second also reads negations ("not bad",
"never had a problem"). Each row is scored with ``exact_match``; the whole run with balanced
accuracy, so the small ``neutral`` class counts as much as the others.

    python -m runner experiments/sentiment.py                 # both experiments
    python -m runner experiments/sentiment.py --only sentiment-negation --limit 10
    python experiments/sentiment.py                           # the same, as a plain script

The classifier stands in for an LLM call: swap ``classify_*`` for a prompt to a model and the
rest of the file stays the same.
"""

from __future__ import annotations

import re
from pathlib import Path

from evals import exact_match
from evals.dataset import balanced_accuracy
from runner import Experiment

DATA = Path(__file__).resolve().parent.parent / "datasets" / "reviews.csv"

POSITIVE = {
    "amazing",
    "comfortable",
    "crisp",
    "excellent",
    "fantastic",
    "gorgeous",
    "good",
    "great",
    "happy",
    "love",
    "nice",
    "perfect",
    "recommend",
    "solid",
    "worth",
}
NEGATIVE = {
    "awful",
    "bad",
    "broke",
    "broken",
    "buggy",
    "crashes",
    "dim",
    "disappointing",
    "hot",
    "loud",
    "poor",
    "problem",
    "returned",
    "slow",
    "snapped",
    "terrible",
    "useless",
    "washed",
    "worst",
}
NEGATIONS = {"not", "never", "no", "don't", "didn't", "isn't", "wasn't"}

_WORD = re.compile(r"[a-z']+")


def _polarity(word: str) -> int:
    return 1 if word in POSITIVE else -1 if word in NEGATIVE else 0


def _label(total: int) -> str:
    return "positive" if total > 0 else "negative" if total < 0 else "neutral"


def classify_keywords(text: str) -> str:
    """Baseline: the sign of (positive words - negative words)."""
    return _label(sum(_polarity(w) for w in _WORD.findall(text.lower())))


def classify_with_negation(text: str) -> str:
    """Like the baseline, but a negation flips the next sentiment word within three words.

    A negation with no sentiment word after it ("I would not buy it") counts as negative.
    """
    total = 0
    flip_left = 0
    for word in _WORD.findall(text.lower()):
        if word in NEGATIONS:
            flip_left = 3
            continue
        p = _polarity(word)
        if p and flip_left:
            total -= p
            flip_left = 0
        else:
            total += p
            flip_left = max(flip_left - 1, 0)
    return _label(total)


baseline = Experiment(
    name="sentiment-keywords",
    data=DATA,
    func=classify_keywords,
    evals=[exact_match],
    dataset_level_evals=[balanced_accuracy()],
    metadata={"classifier": "keywords", "dataset": DATA.name},
)

negation = Experiment(
    name="sentiment-negation",
    data=DATA,
    func=classify_with_negation,
    evals=[exact_match],
    dataset_level_evals=[balanced_accuracy()],
    metadata={"classifier": "keywords+negation", "dataset": DATA.name},
)

experiments = [baseline, negation]

if __name__ == "__main__":
    for exp in experiments:
        exp.run()
