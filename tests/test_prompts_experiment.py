"""Stored prompts inside experiments, through both doors (embedded, and HTTP to a real ``serve``),
with fake providers upstream: ``completion(deployment_id=..., llm_inputs=...)`` in a row, and
``Experiment(prompt=...)`` running two versions as two runs that record which version they used."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import runner.integrations.llm
from runner import ConfigError, Experiment, completion
from tests.doors import Door
from tests.proxy_fakes import FakeProvider

V1 = {"model": "gpt-4o-mini", "provider": "openai", "model_params": {"temp": 0.1},
      "messages": [{"role": "user", "content": "Capital of {{country}}?"}]}
V2 = {"model": "gpt-4o", "provider": "openai", "model_params": {"temp": 0.6, "max_length": 30},
      "messages": [{"role": "system", "content": "One word."}, {"role": "user", "content": "{{country}}'s capital?"}]}
DATA = [{"country": "France", "target": "echo: Capital of France?"},
        {"country": "Peru", "target": "echo: Capital of Peru?"}]


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeProvider]:
    with FakeProvider.running("openai") as fake:
        yield fake


@pytest.fixture
def fake(openai_server: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    openai_server.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    yield openai_server
    runner.integrations.llm.close()


@pytest.fixture
def prompts(door: Door) -> str:
    """``greeter`` v1 and v2 in the door's store; its deployment serves v1. Returns its id."""
    door.store.save_prompt_version("capitals", V1, message="first", author="ada")
    door.store.save_prompt_version("capitals", V2, message="terse", author="bob")
    return str(door.store.deploy_prompt("capitals", 1)["deployment_id"])


def exact(log: Any) -> float:
    return float(log.output == log.target)


def ask(country: str) -> str:
    return completion(llm_inputs={"country": country}).content


def test_two_prompt_versions_as_two_runs_recorded_and_compared(door: Door, prompts: str, fake: FakeProvider) -> None:
    one = Experiment(name="capitals", data=DATA, func=ask, evals=[exact], prompt="capitals@1", **door.kwargs())
    two = Experiment(name="capitals", data=DATA, func=ask, evals=[exact], prompt="capitals@2", **door.kwargs())
    r1, r2 = one.run(run_name="v1", quiet=True), two.run(run_name="v2", quiet=True)
    assert (r1.n_errors, r2.n_errors) == (0, 0)
    assert sorted(r["output"] for r in r1.rows()) == ["echo: Capital of France?", "echo: Capital of Peru?"]
    assert sorted(r["output"] for r in r2.rows()) == ["echo: France's capital?", "echo: Peru's capital?"]
    by_model = {req["model"]: req for req in fake.requests}
    assert by_model["gpt-4o-mini"]["temperature"] == 0.1
    assert by_model["gpt-4o"]["temperature"] == 0.6 and by_model["gpt-4o"]["max_completion_tokens"] == 30
    assert by_model["gpt-4o"]["messages"][0] == {"role": "system", "content": "One word."}
    # each run's metadata says which version it used; each call's trace says so too
    meta1 = door.store.get_experiment(r1.experiment_uuid)["metadata"]
    meta2 = door.store.get_experiment(r2.experiment_uuid)["metadata"]
    assert (meta1["prompt"], meta1["prompt_version"], meta2["prompt"]) == ("capitals@1", "1", "capitals@2")
    assert "deployment_id" not in meta1
    france = next(r for r in r2.rows() if r["inputs"] == {"country": "France"})
    (call,) = door.store.get_trace_tree(france["trace_id"])["children_logs"]
    assert call["metadata"]["prompt"] == "capitals@2" and call["inputs"] == {"country": "France"}
    # and the two runs compare like any two runs
    comparison = r2.compare(r1)
    (score,) = comparison.scores
    assert (score.name, score.mean_a, score.mean_b) == ("exact", 1.0, 0.0)


def test_the_deployed_version_is_resolved_once_per_run(door: Door, prompts: str, fake: FakeProvider) -> None:
    result = Experiment(name="capitals", data=DATA[:1], func=ask, prompt="capitals", **door.kwargs()).run(quiet=True)
    meta = door.store.get_experiment(result.experiment_uuid)["metadata"]
    assert (meta["prompt"], meta["deployment_id"]) == ("capitals@1", prompts)
    assert fake.requests[0]["model"] == "gpt-4o-mini"


def test_completion_with_a_deployment_id_in_a_row(door: Door, prompts: str, fake: FakeProvider) -> None:
    def row(country: str) -> str:
        return completion(deployment_id=prompts, llm_inputs={"country": country}, model_params={"temp": 0.9}).content

    result = Experiment(name="deployed", data=DATA, func=row, evals=[exact], **door.kwargs()).run(quiet=True)
    assert result.n_errors == 0 and result.scores["exact"].mean == 1.0
    assert {r["model"] for r in fake.requests} == {"gpt-4o-mini"}  # the deployed model, not a default
    assert {r["temperature"] for r in fake.requests} == {0.9}  # overridden by the call
    assert sorted(r["messages"][0]["content"] for r in fake.requests) == ["Capital of France?", "Capital of Peru?"]
    for stats in door.store.experiment_stats(result.experiment_uuid):
        (call,) = door.store.get_trace_tree(stats["trace_id"])["children_logs"]
        assert call["deployment_id"] == prompts and call["metadata"]["prompt_version"] == 1
        assert stats["input_tokens"] == 3  # the call's tokens add up to its row

    # moved to v2: the next run calls v2 through the same deployment id
    door.store.deploy_prompt("capitals", 2)
    fake.reset()
    again = Experiment(name="deployed", data=DATA[:1], func=row, **door.kwargs()).run(quiet=True)
    assert again.n_errors == 0 and fake.requests[0]["model"] == "gpt-4o"


def test_a_missing_variable_is_that_rows_error(door: Door, prompts: str, fake: FakeProvider) -> None:
    def row(country: str) -> str:
        inputs = {"country": country} if country != "Peru" else {"place": country}
        return completion(llm_inputs=inputs).content

    result = Experiment(name="strict", data=DATA, func=row, prompt="capitals@1", **door.kwargs()).run(quiet=True)
    assert (result.n_errors, fake.calls) == (1, 1)
    errored = next(r for r in result.rows() if r["status"] == "error")
    assert "prompt capitals@1 needs llm_inputs for 'country'" in errored["error"]


def test_bad_prompt_references_are_clear(door: Door, prompts: str, fake: FakeProvider) -> None:
    with pytest.raises(ConfigError, match="invalid prompt version"):
        Experiment(name="x", data=DATA, func=ask, prompt="capitals@latest")
    with pytest.raises(Exception, match="has no version 9"):
        Experiment(name="x", data=DATA, func=ask, prompt="capitals@9", **door.kwargs()).run(quiet=True)
    door.store.save_prompt_version("undeployed", V1)
    with pytest.raises(ConfigError, match="prompt 'undeployed' is not deployed"):
        Experiment(name="x", data=DATA, func=ask, prompt="undeployed", **door.kwargs()).run(quiet=True)
    # no model, no deployment, no Experiment(prompt=...): a clear error, not a provider call
    with pytest.raises(ConfigError, match="completion\\(\\) needs model="):
        completion(llm_inputs={"country": "x"})
    assert fake.calls == 0
