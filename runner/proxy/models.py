"""Pydantic models of the completion endpoints' wire format (``POST /completion[/stream]``).

Names, fields, defaults and bounds follow ``CompletionsSchema``, ``LLMInputsSchema``,
``ModelParamsSchema``, ``MessageSchema``, ``FunctionSchema``, ``CompletionsResponseSchema``,
``ProviderName`` and ``Role`` in ``shared/reference/parea-openapi.yml``. On top of the spec:

* every nullable field accepts ``null`` (the official SDK posts it), and so does
  ``llm_configuration`` itself (read as ``{}``);
* ``ModelParamsSchema`` keeps unknown keys (``seed``, ``stop``, ``reasoning_effort`` ...): they are
  forwarded to the provider as given and are part of the cache key;
* unknown top-level fields are ignored, as in :mod:`runner.schema`.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from runner.schema import WireModel

__all__ = [
    "CompletionsResponseSchema",
    "CompletionsSchema",
    "FunctionSchema",
    "LLMInputsSchema",
    "MessageSchema",
    "ModelParamsSchema",
    "ProviderName",
    "Role",
]


class ProviderName(str, Enum):
    """Every provider the Parea API names; :mod:`runner.proxy.providers` says which are served."""

    openai = "openai"
    azure = "azure"
    anthropic = "anthropic"
    anyscale = "anyscale"
    vertexai = "vertexai"
    aws_bedrock = "aws_bedrock"
    openrouter = "openrouter"
    mistral = "mistral"
    litellm = "litellm"
    groq = "groq"
    fireworks = "fireworks"
    cohere = "cohere"


class Role(str, Enum):
    user = "user"
    assistant = "assistant"
    system = "system"
    function = "function"
    tool = "tool"


class MessageSchema(WireModel):
    """One chat message; ``content`` is a string or a list of content parts (passed through)."""

    content: str | list[Any] | None = ""
    role: Role = Role.user


class ModelParamsSchema(WireModel):
    """Sampling parameters, in Parea's names (``temp``, ``max_length``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: str | None = ""
    temp: float | None = Field(default=1.0, ge=0.0, le=1.0)
    top_p: float | None = Field(default=1.0, ge=0.0, le=1.0)
    frequency_penalty: float | None = Field(default=0.0, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=0.0, ge=-2.0, le=2.0)
    #: Maximum number of output tokens (``max_tokens`` / ``max_completion_tokens`` upstream).
    max_length: int | None = None
    #: OpenAI-style ``response_format``, e.g. ``{"type": "json_object"}``.
    response_format: dict[str, Any] | None = None
    #: Only used for Mistral.
    safe_prompt: bool | None = None


class LLMInputsSchema(WireModel):
    """What to call: provider, model, parameters, messages and functions."""

    model: str | None = None
    provider: ProviderName | None = None
    model_params: ModelParamsSchema | None = None
    messages: list[MessageSchema] | None = None
    #: Prepended to ``messages``.
    history: list[MessageSchema] | None = None
    #: Function schemas in the OpenAI format (``name``, ``description``, ``parameters``).
    functions: list[Any] | None = None
    #: ``"auto"``, ``"none"`` or ``{"name": "my_function"}``, as in the OpenAI API.
    function_call: str | dict[str, str] | None = None


class CompletionsSchema(WireModel):
    """A completion request. Only ``llm_configuration`` matters to the provider call; the rest
    names the trace it is logged as."""

    #: Values for ``{{name}}`` placeholders in the messages.
    llm_inputs: dict[str, Any] | None = None
    llm_configuration: LLMInputsSchema = Field(default_factory=LLMInputsSchema)
    project_name: str | None = "default"
    project_uuid: str | None = None
    experiment_uuid: str | None = None
    parent_trace_id: str | None = None
    root_trace_id: str | None = None
    end_user_identifier: str | None = None
    #: Deployed prompts are not supported by this server (see :class:`ProxyConfigError`).
    deployment_id: str | None = None
    eval_metric_ids: list[int] | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    target: str | None = None
    trace_id: str | None = None
    trace_name: str | None = None
    #: Per-request key; overrides the configured one.
    provider_api_key: str | None = None
    cache: bool = True
    log_omit_inputs: bool = False
    log_omit_outputs: bool = False
    log_omit: bool = False
    log_sample_rate: float | None = Field(default=1.0, ge=0.0, le=1.0)
    #: Deprecated: same as ``trace_id``.
    inference_id: str | None = None
    #: Deprecated: used as the trace name when ``trace_name`` is not given.
    name: str | None = None
    retry: bool = False
    fallback_strategy: list[str] | None = None
    stream: bool = False

    @field_validator("llm_configuration", mode="before")
    @classmethod
    def _null_configuration(cls, v: Any) -> Any:
        return {} if v is None else v


class FunctionSchema(WireModel):
    name: str
    description: str | None = None
    signature: str | None = None
    content: str
    tokens: int | None = None


class CompletionsResponseSchema(WireModel):
    """The answer to a completion request; ``status`` is ``"success"`` or ``"error"``."""

    content: str
    #: Seconds from receiving the request to having the answer.
    latency: float
    input_tokens: int
    output_tokens: int
    total_tokens: int
    #: USD; 0 on a cache hit and for a model without a known price.
    cost: float
    model: str
    provider: str
    cache_hit: bool
    status: str
    error: str | None = None
    trace_id: str | None = None
    #: ISO 8601, UTC.
    start_timestamp: str
    end_timestamp: str
    #: Same as ``trace_id``.
    inference_id: str
