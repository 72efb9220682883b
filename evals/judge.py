"""An LLM as the judge: a scorer that asks a model to grade each output against criteria.

>>> from evals import llm_judge
>>> polite = llm_judge("The answer is polite and answers the question asked.")
>>> Experiment(name="qa", data=rows, func=answer, evals=[polite])            # doctest: +SKIP

The judge sees the row's inputs, the output, the target when the row has one, and the
criteria, and must reply with one JSON object ``{"score": <0..1>, "reason": "..."}``. Its
reply is read leniently (a code fence, prose around the object, ``true``/``false``, a number in
a string, or ``score: 0.8`` / ``reason: ...`` lines are all understood), but a reply without a
score in [0, 1] raises ``ValueError`` quoting it: the runner records that as this scorer's error
on that row, and the other scorers still run.

The call goes through :func:`runner.completion` (the experiment's backend, the completion
cache: re-scoring an unchanged output costs nothing), with temperature 0. It is not part of the
row's trace, so the judge's tokens and cost do not count as the function's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from runner.errors import ConfigError
from runner.scoring import Log, Score, scorer_factory

__all__ = ["JUDGE_SYSTEM_PROMPT", "llm_judge", "parse_judgement"]

JUDGE_SYSTEM_PROMPT = (
    "You are a strict, fair evaluator. Grade the OUTPUT against the CRITERIA"
    " (and against the TARGET, the reference answer, when one is given)."
    " Reply with only a JSON object, no other text:"
    ' {"score": <a number from 0 to 1, 1 meaning the criteria are fully met>,'
    ' "reason": "<one or two sentences explaining the score>"}'
)

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_SCORE_LINE = re.compile(r"""["']?score["']?\s*[:=]\s*["']?([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?|true|false)""", re.I)
_REASON_LINE = re.compile(r"""["']?reason["']?\s*[:=]\s*["']?(.+?)["']?\s*$""", re.I | re.M)


@scorer_factory('llm_judge("The answer is correct.", model="gpt-4o-mini")')
def llm_judge(
    criteria: str,
    model: str = "gpt-4o-mini",
    provider: str | None = "openai",
    name: str = "llm_judge",
    *,
    model_params: Mapping[str, Any] | None = None,
) -> Callable[[Log], Score]:
    """A scorer grading each output against ``criteria`` with ``model``; returns the judge's
    score (0 to 1) and its reason.

    ``model_params`` are passed to the model (default ``{"temp": 0}``); ``name`` names the score.

    >>> concise = llm_judge("The answer is one short sentence.", model="gpt-4o-mini", name="concise")
    >>> concise(Log(inputs={"q": "Capital of France?"}, output="Paris."))        # doctest: +SKIP
    Score(name='concise', score=1.0, reason='A single, short sentence.')
    """
    if not isinstance(criteria, str) or not criteria.strip():
        raise ConfigError(f"llm_judge: criteria must be a non-empty string, got {criteria!r}")
    params = dict(model_params) if model_params is not None else {"temp": 0.0}

    def judge(log: Log) -> Score:
        from runner.integrations.llm import completion

        response = completion(
            [
                {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
                {"role": "user", "content": judge_prompt(criteria, log)},
            ],
            model=model,
            provider=provider,
            model_params=params,
            name=name,
        )
        score, reason = parse_judgement(response.content)
        return Score(name, score, reason)

    judge.__name__ = judge.__qualname__ = name
    judge.__doc__ = f"LLM judge ({model}): {criteria}"
    return judge


def judge_prompt(criteria: str, log: Log) -> str:
    """The user message the judge gets for ``log``."""
    parts = [f"CRITERIA:\n{criteria.strip()}"]
    if log.inputs:
        parts.append(f"INPUT:\n{_text(log.inputs)}")
    parts.append(f"OUTPUT:\n{_text(log.output) if log.output is not None else '(no output)'}")
    if log.target is not None:
        parts.append(f"TARGET:\n{_text(log.target)}")
    return "\n\n".join(parts)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def parse_judgement(reply: str) -> tuple[float, str | None]:
    """``(score, reason)`` from a judge's reply; ``ValueError`` if it holds no usable score.

    >>> parse_judgement('```json\\n{"score": 0.8, "reason": "mostly right"}\\n```')
    (0.8, 'mostly right')
    """
    text = (reply or "").strip()
    for candidate in _json_candidates(text):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict) and "score" in data:
            reason = data.get("reason")
            return _score(data["score"], reply), None if reason is None else str(reason)
    match = _SCORE_LINE.search(text)
    if match:
        reason_match = _REASON_LINE.search(text)
        return _score(match[1], reply), reason_match[1].strip() if reason_match else None
    raise ValueError(f'the judge did not reply with {{"score": 0..1, "reason": ...}}: {_clip(reply)}')


def _json_candidates(text: str) -> list[str]:
    """The reply, its fenced blocks, and its outermost ``{...}``, in that order."""
    out = [text, *(m.strip() for m in _FENCE.findall(text))]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        out.append(text[start : end + 1])
    return out


def _score(value: Any, reply: str) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return 1.0 if value.strip().lower() == "true" else 0.0
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"the judge's score {value!r} is not a number: {_clip(reply)}") from None
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"the judge's score {score:g} is outside 0..1: {_clip(reply)}")
    return score


def _clip(text: str, limit: int = 300) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
