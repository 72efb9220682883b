"""The pieces of deployed prompts without a server: strict templating, the file format, how a
deployment fills a request, and the store's versions and deployments (a real SQLite file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import ConfigError, NotFoundError
from runner.proxy import CompletionsSchema, resolve_call
from runner.proxy.prompts import (
    DeployedPrompt,
    MissingInputsError,
    apply_deployment,
    fill,
    load_spec_file,
    parse_ref,
    render_messages,
    validate_spec,
)
from runner.store import Store

SPEC = {"model": "gpt-4o-mini", "provider": "openai", "model_params": {"temp": 0.2, "max_length": 9},
        "messages": [{"role": "user", "content": "Hi {{ name }} from {{place}}"}]}


def test_strict_templating_names_what_is_missing_and_allows_escapes() -> None:
    assert fill("Hi {{name}}, {{ n }} {{d}}", {"name": "Ada", "n": 3, "d": {"a": 1}}) == 'Hi Ada, 3 {"a": 1}'
    assert fill("keep \\{{name}} and {{name}}", {"name": "x"}) == "keep {{name}} and x"
    assert fill("lenient {{gone}}", {}) == "lenient {{gone}}"
    with pytest.raises(MissingInputsError, match="needs llm_inputs for 'gone'") as info:
        fill("strict {{gone}}", {"unused": 1}, strict=True)
    assert info.value.names == ["gone"]
    messages = [{"role": "user", "content": [{"type": "text", "text": "{{a}} {{b}}"}, {"type": "image"}]}]
    with pytest.raises(MissingInputsError, match="'a', 'b'"):
        render_messages(messages, None)
    assert render_messages(messages, {"a": 1, "b": 2, "c": 3})[0]["content"][0]["text"] == "1 2"


def test_the_file_format_has_exactly_the_spec_keys(tmp_path: Path) -> None:
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text("model: gpt-4o-mini\nmodel_params: {temp: 0.3}\nmessages:\n  - {role: system, "
                         "content: x}\n", encoding="utf-8")
    assert load_spec_file(yaml_file) == {"model": "gpt-4o-mini", "model_params": {"temp": 0.3},
                                         "messages": [{"role": "system", "content": "x"}]}
    json_file = tmp_path / "p.json"
    json_file.write_text('{"model": "m", "provider": "anthropic", "messages": [{"content": "hi"}],'
                         ' "functions": [{"name": "f"}], "function_call": {"name": "f"}}', encoding="utf-8")
    spec = load_spec_file(json_file)
    assert spec["messages"] == [{"role": "user", "content": "hi"}] and spec["function_call"] == {"name": "f"}
    for bad, message in (({"model": "m", "messages": [{"content": "x"}], "history": []}, "unknown key"),
                         ({"messages": [{"content": "x"}]}, "needs a model"),
                         ({"model": "m", "messages": [{"content": "x"}], "model_params": {"temp": 3}}, "temp"),
                         ({"model": "m", "provider": "nobody", "messages": [{"content": "x"}]}, "provider"),
                         ([1, 2], "must be a mapping")):
        with pytest.raises(ConfigError, match=message):
            validate_spec(bad)
    (tmp_path / "p.txt").write_text("model: m", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"must end in \.yaml, \.yml or \.json"):
        load_spec_file(tmp_path / "p.txt")
    (tmp_path / "broken.yaml").write_text("model: [", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_spec_file(tmp_path / "broken.yaml")
    assert parse_ref("greeter@12") == ("greeter", 12) and parse_ref("a.b-c") == ("a.b-c", None)
    for ref in ("greeter@0", "greeter@x", "@1", "bad name"):
        with pytest.raises(ConfigError):
            parse_ref(ref)


def test_a_deployment_fills_what_the_request_leaves_unset() -> None:
    deployed = DeployedPrompt("p-1", "greeter", 3, SPEC)
    # what the official SDK sends: its default model_params, no model, no messages
    sdk = CompletionsSchema.model_validate({
        "deployment_id": "p-1", "llm_inputs": {"name": "Ada", "place": "Oslo"},
        "llm_configuration": {"model": None, "model_params": {"temp": 1.0, "top_p": 1.0, "frequency_penalty": 0.0,
                                                              "presence_penalty": 0.0, "max_length": None}},
        "metadata": {"mine": 1},
    })
    req = apply_deployment(sdk, deployed)
    call = resolve_call(req)
    assert (call.model, call.provider, call.params) == ("gpt-4o-mini", "openai", {"temp": 0.2, "max_length": 9})
    assert call.messages == [{"role": "user", "content": "Hi Ada from Oslo"}]
    assert req.metadata == {"mine": 1, "deployment_id": "p-1", "prompt": "greeter@3", "prompt_version": 3}
    override = CompletionsSchema.model_validate({
        "deployment_id": "p-1", "llm_inputs": {"who": "Bo"},
        "llm_configuration": {"model": "claude-3-5-haiku-latest", "provider": "anthropic",
                              "model_params": {"temp": 0.5}, "messages": [{"content": "Yo {{who}}"}]},
    })
    call = resolve_call(apply_deployment(override, deployed))
    assert (call.model, call.provider, call.params) == ("claude-3-5-haiku-latest", "anthropic",
                                                        {"temp": 0.5, "max_length": 9})
    assert call.messages == [{"role": "user", "content": "Yo Bo"}]  # its own messages: checked on their own
    with pytest.raises(MissingInputsError, match="deployed prompt p-1 \\(greeter@3\\) needs llm_inputs for 'place'"):
        apply_deployment(CompletionsSchema.model_validate({"deployment_id": "p-1", "llm_inputs": {"name": "x"}}),
                         deployed)


def test_store_versions_deployments_history_and_owners(db: str | Path) -> None:
    store = Store(db)
    try:
        first = store.save_prompt_version("greeter", SPEC, message="first", author="ada")
        assert store.save_prompt_version("greeter", dict(reversed(list(SPEC.items()))))["created"] is False
        second = store.save_prompt_version("greeter", {**SPEC, "model": "gpt-4o"}, message="bigger")
        assert (first["version"], second["version"]) == (1, 2)
        with pytest.raises(ConfigError, match="cannot contain '@'"):
            store.save_prompt_version("a@1", SPEC)
        with pytest.raises(ConfigError, match="invalid prompt name"):
            store.save_prompt_version("a b", SPEC)
        d = store.deploy_prompt("greeter", 1, author="ada")
        assert store.deploy_prompt("greeter", 1)["history"] == d["history"]  # the same version: no event
        moved = store.deploy_prompt("greeter", 2, author="bob")
        back = store.rollback_deployment(d["deployment_id"])
        again = store.rollback_deployment(d["deployment_id"])  # undoes the rollback
        assert (moved["version"], back["version"], again["version"]) == (2, 1, 2)
        assert [h["action"] for h in again["history"]] == ["rollback", "rollback", "move", "deploy"]
        assert store.list_prompts("someone-else") == []
        with pytest.raises(NotFoundError):
            store.get_deployment(d["deployment_id"], "someone-else")
    finally:
        store.close()
    reopened = Store(db)  # versions are kept in the store
    try:
        assert [v["message"] for v in reopened.list_prompt_versions("greeter")] == ["first", "bigger"]
    finally:
        reopened.close()
