"""``evals.llm_judge``: an OpenAI-compatible server on loopback answers with canned judgements."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import runner.integrations.llm
from evals import exact_match, llm_judge
from evals.judge import parse_judgement
from runner import ConfigError, Experiment, Log
from tests.doors import Door
from tests.proxy_fakes import serve


@dataclass
class CannedJudge:
    """Answers every chat completion with ``reply``; keeps the requests."""

    reply: str = '{"score": 1, "reason": "fine"}'
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        self.requests.append(body)
        return JSONResponse({
            "id": "chatcmpl-judge", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.reply},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
        })


@pytest.fixture(scope="module")
def judge_server() -> Iterator[tuple[CannedJudge, str]]:
    canned = CannedJudge()
    with serve(Starlette(routes=[Route("/v1/chat/completions", canned.handle, methods=["POST"])])) as url:
        yield canned, url


@pytest.fixture
def canned(judge_server: tuple[CannedJudge, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[CannedJudge]:
    judge, url = judge_server
    judge.requests.clear()
    judge.reply = '{"score": 1, "reason": "fine"}'
    monkeypatch.setenv("OPENAI_BASE_URL", url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-judge")
    yield judge
    runner.integrations.llm.close()


def test_the_judge_scores_with_a_reason_and_sees_what_it_grades(canned: CannedJudge) -> None:
    canned.reply = '{"score": 0.75, "reason": "correct but terse"}'
    judge = llm_judge("The answer is correct and polite.", model="gpt-4o-mini", name="polite")
    score = judge(Log(inputs={"question": "2+2?"}, output="4", target="4"))
    assert (score.name, score.score, score.reason) == ("polite", 0.75, "correct but terse")
    (sent,) = canned.requests
    assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0.0
    system, user = sent["messages"]
    assert system["role"] == "system" and '"score"' in system["content"]
    assert "The answer is correct and polite." in user["content"]
    assert '{"question": "2+2?"}' in user["content"] and "OUTPUT:\n4" in user["content"]
    assert "TARGET:\n4" in user["content"]
    judge(Log(inputs={"question": "2+2?"}, output="4", target="4"))
    assert len(canned.requests) == 1  # the same judgement again comes from the cache
    judge(Log(inputs={"question": "2+2?"}, output="five"))
    assert "TARGET" not in canned.requests[-1]["messages"][1]["content"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"score": 1, "reason": "ok"}', (1.0, "ok")),
        ('```json\n{"score": 0.2, "reason": "weak"}\n```', (0.2, "weak")),
        ('Here is my verdict: {"score": "0.5", "reason": "half"} Hope this helps.', (0.5, "half")),
        ('{"score": true}', (1.0, None)),
        ('{"score": false, "reason": "no"}', (0.0, "no")),
        ("Score: 0.9\nReason: nearly perfect", (0.9, "nearly perfect")),
    ],
)
def test_replies_are_read_leniently(reply: str, expected: tuple[float, str | None]) -> None:
    assert parse_judgement(reply) == expected


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("I cannot grade this.", "did not reply"),
        ('{"score": 8, "reason": "good"}', "outside 0..1"),
        ('{"score": "high", "reason": "good"}', "not a number"),
        ("", "did not reply"),
    ],
)
def test_unusable_replies_raise(reply: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_judgement(reply)


def test_bad_criteria_are_refused_up_front() -> None:
    with pytest.raises(ConfigError, match="criteria"):
        llm_judge("  ")


def test_in_an_experiment_an_unparseable_judgement_is_that_scorers_error(door: Door, canned: CannedJudge) -> None:
    canned.reply = '{"score": 0.5, "reason": "meh"}'
    data = [{"question": "q1", "target": "Q1"}, {"question": "q2", "target": "Q2"}]
    judge = llm_judge("Upper case.", name="judge")
    result = Experiment(name="judged", data=data, func=lambda question: question.upper(),
                        evals=[judge, exact_match], **door.kwargs()).run(quiet=True)
    assert result.scores["judge"].mean == 0.5 and result.scores["exact_match"].mean == 1.0
    rows = door.store.experiment_rows(result.experiment_uuid)
    assert {"name": "judge", "score": 0.5, "reason": "meh"} in rows[0]["scores"]

    canned.reply = "no idea"  # for new outputs: the judgements above are cached
    data = [{"question": "q3", "target": "Q3"}, {"question": "q4", "target": "Q4"}]
    result = Experiment(name="judged", data=data, func=lambda question: question.upper(),
                        evals=[judge, exact_match], **door.kwargs()).run(quiet=True)
    assert result.n_errors == 0 and result.scores["exact_match"].mean == 1.0  # the other scorer still ran
    assert "did not reply" in result.scorer_errors["judge"]
    rows = door.store.experiment_rows(result.experiment_uuid)
    assert "did not reply" in rows[0]["metadata"]["scorer_errors"]["judge"]
