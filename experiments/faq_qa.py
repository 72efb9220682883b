"""Question answering: a support bot that answers from a small knowledge base.

The bot (``answer``) finds the knowledge-base entry whose keywords best match the question and
replies with its most relevant sentence. Each answer is scored against a reference answer with

- ``levenshtein``: how close the wording is (0..1), and
- ``key_facts``, a custom scorer: the share of the reference's facts (numbers, names) that the
  answer states, with the missing ones in the reason.

Support staff rated each answer from 1 to 5 (``datasets/faq_ratings.csv``, by question id);
the dataset-level ``pearson`` evals say how well each automatic score tracks those ratings,
which is how you decide which score to trust when the ratings run out.

    python -m runner experiments/faq_qa.py
    python experiments/faq_qa.py
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from evals import levenshtein
from evals.dataset import pearson
from runner import Experiment, Log, Score

DATASETS = Path(__file__).resolve().parent.parent / "datasets"

with (DATASETS / "faq_kb.jsonl").open(encoding="utf-8") as f:
    KNOWLEDGE_BASE = [json.loads(line) for line in f if line.strip()]

with (DATASETS / "faq_ratings.csv").open(encoding="utf-8", newline="") as f:
    HUMAN_RATINGS = {r["id"]: float(r["human_rating"]) for r in csv.DictReader(f)}

_WORD = re.compile(r"[a-z0-9$]+")
_SENTENCE = re.compile(r"(?<=[.;])\s+")
_FACT = re.compile(r"\$\d+|\d+(?:-day| TB| hours)?|AES-256|\b(?:iOS|macOS)\b|\b[A-Z][a-z]+\b")
_NOT_FACTS = {"Yes", "No", "The", "There", "You", "Deleted", "Files", "Every", "Uploads", "Support"}


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _overlap(question: set[str], keywords: list[str]) -> int:
    """How many keywords the question mentions (a keyword matches words that start with it)."""
    return sum(1 for k in keywords if any(w.startswith(k) for w in question))


def answer(question: str) -> str:
    """Answer a customer's question from the knowledge base, or say that we do not know."""
    q = _words(question)
    best = max(KNOWLEDGE_BASE, key=lambda entry: _overlap(q, entry["keywords"]))
    if _overlap(q, best["keywords"]) == 0:
        return "Sorry, I don't know. A human agent will get back to you."
    sentences = _SENTENCE.split(best["answer"])
    reply: str = max(sentences, key=lambda s: len(q & _words(s)))
    return reply.removesuffix(";") + ("" if reply.endswith(".") else ".")


def key_facts(log: Log) -> Score | None:
    """The share of the reference answer's facts that the answer states.

    Facts are the reference's numbers and names; a reference without any has its long words
    (seven letters or more) checked instead."""
    if log.target is None:
        return None
    target = str(log.target)
    facts = [f for f in dict.fromkeys(_FACT.findall(target)) if f not in _NOT_FACTS]
    if not facts:
        facts = list(dict.fromkeys(re.findall(r"[a-z]{7,}", target.lower())))
    output = str(log.output or "")
    missing = [f for f in facts if f not in output]
    reason = f"missing: {', '.join(missing)}" if missing else "all facts stated"
    return Score("key_facts", 1 - len(missing) / len(facts), reason)


def human_rating(log: Log) -> float | None:
    """The support staff's 1-5 rating of this answer (rows are matched by their id)."""
    return HUMAN_RATINGS.get(str(log.metadata.get("row_id")))


faq = Experiment(
    name="faq-qa",
    data=DATASETS / "faq_questions.csv",
    func=answer,
    evals=[levenshtein, key_facts],
    dataset_level_evals=[
        pearson("levenshtein", human_rating, name="levenshtein_vs_human"),
        pearson("key_facts", human_rating, name="key_facts_vs_human"),
    ],
    metadata={"bot": "keyword-retrieval", "knowledge_base": "faq_kb.jsonl"},
)

if __name__ == "__main__":
    faq.run()
