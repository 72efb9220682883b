"""Retrieval-augmented generation, async: an HR assistant that answers from the staff handbook.

``answer`` is an async pipeline with nested ``@trace`` spans, so every row's trace shows where
the time went and which step failed::

    answer                      the row's root trace
    ├── retrieve                scored per span with retrieval_hit (rolls up to the row)
    │   └── embed               the question's embedding
    └── llm.generate            the "model" call, with its tokens and cost recorded

The embedding and the model are deterministic stand-ins (bag-of-words vectors, an extractive
"generator" with a simulated latency), so the example needs no network; replace ``embed`` and
``generate`` with real calls and nothing else changes. Rows run concurrently on one event loop
(``--n-workers`` bounds how many at once).

    python -m runner experiments/handbook_rag.py
    python -m runner experiments/handbook_rag.py --n-workers 2 --trials 3
    python experiments/handbook_rag.py
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from evals import contains
from runner import Experiment, Log, current_span, trace

DATASETS = Path(__file__).resolve().parent.parent / "datasets"

with (DATASETS / "handbook.jsonl").open(encoding="utf-8") as f:
    DOCUMENTS: list[dict[str, Any]] = [json.loads(line) for line in f if line.strip()]

_WORD = re.compile(r"[a-z0-9]+")
_STOP = {"a", "an", "the", "is", "are", "do", "i", "my", "to", "of", "in", "on", "for", "can", "how", "what", "when"}
_SENTENCE = re.compile(r"(?<=\.)\s+")

#: Simulated latencies of the embedding model and the LLM, in seconds.
EMBED_LATENCY = 0.002
LLM_LATENCY = 0.01
#: Simulated price of the LLM, per 1,000 tokens.
PRICE_PER_1K_TOKENS = 0.0005


def _vector(text: str) -> Counter[str]:
    return Counter(w for w in _WORD.findall(text.lower()) if w not in _STOP)


def _cosine(a: Counter[str], b: Counter[str]) -> float:
    dot = sum(a[w] * b[w] for w in a.keys() & b.keys())
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return dot / norm if norm else 0.0


DOC_VECTORS = [_vector(d["title"] + " " + d["text"]) for d in DOCUMENTS]


@trace
async def embed(text: str) -> dict[str, int]:
    """The text's embedding (here: word counts)."""
    await asyncio.sleep(EMBED_LATENCY)
    return dict(_vector(text))


def retrieval_hit(log: Log) -> float | None:
    """1.0 if one of the retrieved passages contains the expected answer."""
    if log.target is None:
        return None
    return float(any(str(log.target).lower() in p["text"].lower() for p in log.output or []))


@trace(eval_funcs=[retrieval_hit])
async def retrieve(question: str, k: int = 2) -> list[dict[str, Any]]:
    """The ``k`` handbook sections closest to the question."""
    q = Counter(await embed(question))
    ranked = sorted(zip(DOCUMENTS, DOC_VECTORS, strict=True), key=lambda dv: _cosine(q, dv[1]), reverse=True)
    return [doc for doc, _ in ranked[:k]]


@trace(name="llm.generate")
async def generate(question: str, passages: list[dict[str, Any]]) -> str:
    """Answer from the passages (here: the sentence that shares most words with the question)."""
    await asyncio.sleep(LLM_LATENCY)
    q = _vector(question)
    sentences = [s for p in passages for s in _SENTENCE.split(p["text"])]
    best = max(sentences, key=lambda s: _cosine(q, _vector(s)))
    span = current_span()
    if span is not None:
        prompt_tokens = len(question.split()) + sum(len(p["text"].split()) for p in passages) + 40
        completion_tokens = len(best.split())
        span.record_usage(
            input_tokens=prompt_tokens,
            output_tokens=completion_tokens,
            cost=(prompt_tokens + completion_tokens) / 1000 * PRICE_PER_1K_TOKENS,
        )
    return best


async def answer(question: str) -> str:
    """Retrieve, then generate."""
    passages = await retrieve(question)
    return await generate(question, passages)


handbook = Experiment(
    name="handbook-rag",
    data=DATASETS / "handbook_questions.jsonl",
    func=answer,
    evals=[contains],
    metadata={"retriever": "bag-of-words", "k": "2"},
)

if __name__ == "__main__":
    handbook.run()
