"""Versioned prompts: the file format, strict templating, and serving a deployed version.

A prompt version is the fields of the spec's ``LLMInputsSchema`` that describe a call —
``model``, ``provider``, ``model_params``, ``messages`` and optional ``functions`` /
``function_call`` — and nothing else, written as YAML or JSON::

    model: gpt-4o-mini
    provider: openai
    model_params: {temp: 0.2, max_length: 200}
    messages:
      - {role: system, content: You answer in {{language}}.}
      - {role: user, content: "{{question}}"}

**Templating is strict** where a stored prompt is used: every ``{{name}}`` in its messages needs a
value in ``llm_inputs`` (:class:`MissingInputsError` names the missing ones); inputs the prompt
does not use are fine; ``\\{{`` is a literal ``{{``. Values are inserted as text (strings as
they are, lists and dicts as JSON). Plain completions keep the proxy's lenient rule (an unknown
name stays as written), so requests that worked before still do.

**Serving a deployment** (:func:`apply_deployment`): the deployed version fills
``llm_configuration``; a field the request sets itself wins, as the Parea spec says. In
``model_params`` a key overrides only with a value other than its default: the official SDK
always sends ``temp: 1.0, top_p: 1.0, ...`` (its defaults), which must not undo a deployed
``temp: 0.2``. The request's ``metadata`` gains ``prompt`` (``NAME@VERSION``),
``prompt_version`` and ``deployment_id``, so the trace log says which version answered.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from runner.errors import ConfigError
from runner.proxy.models import CompletionsSchema, LLMInputsSchema
from runner.proxy.providers import PARAM_DEFAULTS
from runner.store.prompts import PROMPT_NAME_RE, SPEC_KEYS, parse_ref

__all__ = [
    "PROMPT_NAME_RE",
    "SPEC_KEYS",
    "DeployedPrompt",
    "MissingInputsError",
    "apply_deployment",
    "deployed_prompt_response",
    "diff_specs",
    "fill",
    "load_spec_file",
    "missing_inputs",
    "parse_ref",
    "render_messages",
    "spec_text",
    "validate_spec",
]

#: the keys a prompt file may have, in the order they are written back
_PLACEHOLDER = re.compile(r"(\\?)\{\{\s*([^{}\s]+)\s*\}\}")


class MissingInputsError(ConfigError):
    """A stored prompt's template names variables that ``llm_inputs`` does not give."""

    def __init__(self, names: list[str], what: str = "the prompt") -> None:
        self.names = names
        super().__init__(
            f"{what} needs llm_inputs for {', '.join(repr(n) for n in names)}: add "
            f"{'them' if len(names) > 1 else 'it'} to llm_inputs (write \\{{{{ for a literal {{{{)"
        )


# -- templating -----------------------------------------------------------------------------------
def _text(value: Any) -> str:
    return json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)


def fill(text: str, inputs: Mapping[str, Any] | None, *, strict: bool = False) -> str:
    """``text`` with ``{{name}}`` replaced from ``inputs`` and ``\\{{`` turned into ``{{``.

    ``strict``: a name without a value raises :class:`MissingInputsError`; otherwise it is kept
    as written (the proxy's rule for plain completions)."""
    if "{{" not in text:
        return text
    values = inputs or {}
    missing: list[str] = []

    def one(m: re.Match[str]) -> str:
        if m[1]:
            return m[0][1:]  # escaped: the placeholder as written, without the backslash
        if m[2] in values:
            return _text(values[m[2]])
        missing.append(m[2])
        return m[0]

    out = _PLACEHOLDER.sub(one, text)
    if strict and missing:
        raise MissingInputsError(sorted(set(missing)))
    return out


def _texts(message: Mapping[str, Any]) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def missing_inputs(messages: list[dict[str, Any]], inputs: Mapping[str, Any] | None) -> list[str]:
    """The template variables of ``messages`` that ``inputs`` has no value for, sorted."""
    values = inputs or {}
    return sorted({m[2] for msg in messages for t in _texts(msg) for m in _PLACEHOLDER.finditer(t)
                   if not m[1] and m[2] not in values})


def render_messages(messages: list[dict[str, Any]], inputs: Mapping[str, Any] | None,
                    *, what: str = "the prompt") -> list[dict[str, Any]]:
    """``messages`` filled strictly from ``inputs`` (:class:`MissingInputsError` names what is missing)."""
    missing = missing_inputs(messages, inputs)
    if missing:
        raise MissingInputsError(missing, what)
    out = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, str):
            content = fill(content, inputs)
        elif isinstance(content, list):
            content = [{**p, "text": fill(p["text"], inputs)}
                       if isinstance(p, dict) and isinstance(p.get("text"), str) else p for p in content]
        out.append({**msg, "content": content})
    return out


# -- the file format --------------------------------------------------------------------------------
def validate_spec(raw: Any, where: str = "the prompt") -> dict[str, Any]:
    """The canonical form of a prompt version: only :data:`SPEC_KEYS`, nulls dropped, messages as
    ``{"role", "content"}``. Raises :class:`ConfigError` naming the problem."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping with the keys {', '.join(SPEC_KEYS)}; got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in SPEC_KEYS)
    if unknown:
        raise ConfigError(
            f"{where} has unknown key(s) {', '.join(unknown)}; a prompt has only {', '.join(SPEC_KEYS)}"
        )
    try:
        parsed = LLMInputsSchema.model_validate(dict(raw))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"{where}: {loc}: {err['msg']}") from None
    if not parsed.model:
        raise ConfigError(f"{where} needs a model, e.g. model: gpt-4o-mini")
    if not parsed.messages:
        raise ConfigError(f"{where} needs messages: a list of {{role, content}}")
    spec: dict[str, Any] = {"model": parsed.model}
    if parsed.provider is not None:
        spec["provider"] = parsed.provider.value
    if parsed.model_params is not None:
        params = {k: v for k, v in parsed.model_params.model_dump(exclude_none=True).items() if k != "model"}
        explicit = raw.get("model_params") or {}
        # only what the file says: pydantic's defaults (temp 1.0 ...) are not part of the prompt
        spec["model_params"] = {k: v for k, v in params.items() if k in explicit}
    spec["messages"] = [{"role": m.role.value, "content": m.content} for m in parsed.messages]
    if parsed.functions is not None:
        spec["functions"] = parsed.functions
    if parsed.function_call is not None:
        spec["function_call"] = parsed.function_call
    return spec


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """A prompt version from a ``.yaml``/``.yml`` or ``.json`` file (see :func:`validate_spec`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read prompt file {p}: {exc.strerror}") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p} is not valid YAML: {' '.join(str(exc).split())}") from None
    elif p.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p} is not valid JSON: {exc}") from None
    else:
        raise ConfigError(f"prompt file {p} must end in .yaml, .yml or .json")
    return validate_spec(raw, str(p))


def spec_text(spec: Mapping[str, Any]) -> str:
    """A version as YAML, keys in :data:`SPEC_KEYS` order (what ``show`` prints and ``diff`` compares)."""
    import yaml

    ordered = {k: spec[k] for k in SPEC_KEYS if k in spec}
    return str(yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100))


def diff_specs(a: Mapping[str, Any], b: Mapping[str, Any], label_a: str, label_b: str) -> str:
    """A unified diff of two versions' YAML; ``""`` when they are the same."""
    lines = difflib.unified_diff(spec_text(a).splitlines(keepends=True), spec_text(b).splitlines(keepends=True),
                                 fromfile=label_a, tofile=label_b)
    return "".join(lines)


# -- serving a deployment -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DeployedPrompt:
    """A stored version as a completion uses it: which version of which prompt, its spec, and
    the deployment it was reached through (``None``: named by version, e.g. ``greeter@2``)."""

    deployment_id: str | None
    name: str
    version: int
    spec: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def what(self) -> str:
        """How error messages name it."""
        return f"deployed prompt {self.deployment_id} ({self.ref})" if self.deployment_id else f"prompt {self.ref}"

    @property
    def metadata(self) -> dict[str, Any]:
        """What a completion with it records in its trace's metadata."""
        meta: dict[str, Any] = {"prompt": self.ref, "prompt_version": self.version}
        if self.deployment_id:
            meta["deployment_id"] = self.deployment_id
        return meta


def _overridden_params(deployed: Mapping[str, Any], sent: Mapping[str, Any] | None) -> dict[str, Any]:
    params = dict(deployed)
    for key, value in (sent or {}).items():
        if key == "model" or value is None or PARAM_DEFAULTS.get(key, object()) == value:
            continue
        params[key] = value
    return params


def apply_deployment(req: CompletionsSchema, deployed: DeployedPrompt) -> CompletionsSchema:
    """``req`` with the deployed version filling what its ``llm_configuration`` leaves unset.

    The messages in effect (the request's own, if it sends some, else the deployed ones) are
    checked strictly against ``llm_inputs``: :class:`MissingInputsError` names what is missing.
    The proxy then fills them, once."""
    cfg = req.llm_configuration
    spec = deployed.spec
    sent = cfg.model_dump(exclude_none=True)
    merged: dict[str, Any] = {k: v for k, v in spec.items() if k != "model_params"}
    for key in ("model", "provider", "messages", "history", "functions", "function_call"):
        if sent.get(key) not in (None, [], ""):
            merged[key] = sent[key]
    params = _overridden_params(spec.get("model_params") or {}, sent.get("model_params"))
    if params:
        merged["model_params"] = params
    messages = [*(merged.get("history") or []), *(merged.get("messages") or [])]
    missing = missing_inputs([m if isinstance(m, dict) else dict(m) for m in messages], req.llm_inputs)
    if missing:
        raise MissingInputsError(missing, deployed.what)
    metadata = {**(req.metadata or {}), **deployed.metadata}
    return req.model_copy(update={"llm_configuration": LLMInputsSchema.model_validate(merged),
                                  "metadata": metadata})


def deployed_prompt_response(deployed: DeployedPrompt, llm_inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``GetDeployedPromptResponseSchema``: the deployed version, its messages filled (strictly)
    from ``llm_inputs`` when given, else as written. Functions are JSON strings, as the spec says."""
    spec = deployed.spec
    raw = [dict(m) for m in spec["messages"]]
    filled = render_messages(raw, llm_inputs, what=deployed.what) if llm_inputs is not None else raw
    call = spec.get("function_call")
    return {
        "deployment_id": deployed.deployment_id or "",
        "version_number": float(deployed.version),
        "name": deployed.name,
        "functions": [f if isinstance(f, str) else orjson.dumps(f).decode() for f in spec.get("functions") or []],
        "function_call": call if call is None or isinstance(call, str) else orjson.dumps(call).decode(),
        "prompt": {"raw_messages": raw, "messages": filled, "inputs": llm_inputs},
        "model": spec.get("model"),
        "provider": spec.get("provider"),
        "model_params": spec.get("model_params") or {},
    }
