"""The wire format: pydantic models of the Parea REST API, shared by client, store and server.

Names, fields and types follow ``tests/reference/parea-openapi.yml``. Two rules on top of the
spec, both forced by the official SDK:

* requests may carry ``null`` for list and dict fields; responses never do (``[]``/``{}``);
* scores may arrive as JSON ``true`` or ``3``; they are stored as floats.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from runner._json import dumps_value

__all__ = [
    "API_PREFIX",
    "CreateExperimentRequestSchema",
    "CreateGetProjectRequestSchema",
    "CreateGetProjectResponseSchema",
    "CreateTestCaseCollectionRequestSchema",
    "CreateTestCaseCollectionResponseSchema",
    "CreateTestCasesSchema",
    "EvaluationScoreSchema",
    "ExperimentPinnedStatistic",
    "ExperimentSchema",
    "ExperimentStatsSchema",
    "ExperimentStatus",
    "ExperimentWithStatsSchema",
    "FeedbackRequestSchema",
    "FilterBaseSchema",
    "FilterOperator",
    "FinishExperimentRequestSchema",
    "GetTestCaseCollectionResponseSchema",
    "GetTestCaseResponseSchema",
    "ListExperimentsRequestSchema",
    "PaginatedResponse",
    "QueryParamsPaginationPublic",
    "StatisticOperation",
    "TestCaseSchema",
    "TimeRange",
    "TraceConfigurationSchema",
    "TraceLogSchema",
    "TraceLogTreeSchema",
    "TraceStatsSchema",
    "UpdateLogSchema",
    "UpdateTestCasePublicRequestSchema",
    "WireModel",
    "dumps_value",
]

#: Every path of the API lives under this prefix.
API_PREFIX = "/api/parea/v1"


class WireModel(BaseModel):
    """Base of every wire model: unknown fields are ignored, fields fill by name or alias."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ExperimentStatus(str, Enum):
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"


class StatisticOperation(str, Enum):
    mean = "mean"
    median = "median"
    variance = "variance"
    standard_deviation = "standard_deviation"
    min = "min"
    max = "max"
    mse = "mse"
    mae = "mae"
    correlation = "correlation"
    spearman_correlation = "spearman_correlation"
    accuracy = "accuracy"
    custom = "custom"


class FilterOperator(str, Enum):
    equals = "equals"
    not_equals = "not_equals"
    like = "like"
    greater_than_or_equal = "greater_than_or_equal"
    less_than_or_equal = "less_than_or_equal"
    greater_than = "greater_than"
    less_than = "less_than"
    is_null = "is_null"
    exists = "exists"
    in_ = "in"
    between = "between"


class TimeRange(str, Enum):
    na = "na"
    h1 = "1h"
    h3 = "3h"
    h6 = "6h"
    h24 = "24h"
    d7 = "7d"
    m1 = "1m"
    m3 = "3m"
    m6 = "6m"
    y1 = "1y"


class EvaluationScoreSchema(WireModel):
    name: str
    score: float
    evaluation_metric_id: int | None = None
    reason: str | None = None


class LoggedMessageSchema(WireModel):
    """``MessageSchema``: roles of the spec (``function`` included) and of the Python SDK
    (``example_user``, ``example_assistant``); a message without a role is the user's."""

    content: str | list[Any] | None = ""
    role: Literal["user", "assistant", "system", "function", "tool", "example_user", "example_assistant"] = "user"


class ParamsSchema(WireModel):
    """``ParamsSchema``: unbounded, as the spec gives it for logged configurations."""

    model: str | None = None
    temp: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    max_length: int | None = None
    response_format: dict[str, Any] | None = None
    safe_prompt: bool | None = None


class TraceConfigurationSchema(WireModel):
    """``configuration`` of a trace log (the spec's ``InputsSchema``, plus the SDK's ``history``).

    Every field may be ``null``, as both SDKs post them; other keys are kept as sent."""

    model: str | None = None
    provider: str | None = None
    model_params: ParamsSchema | None = None
    messages: list[LoggedMessageSchema] | None = None
    history: list[LoggedMessageSchema] | None = None
    functions: list[Any] | None = None
    function_call: str | dict[str, Any] | None = None


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none"})


def _check_configuration(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """``config`` as sent, once valid as :class:`TraceConfigurationSchema`, with the spec's default
    role (``user``) given to messages without one (the SDK's readers need a role)."""
    if config is None:
        return None
    try:
        TraceConfigurationSchema.model_validate(config)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        # the path of fields, without the union members pydantic names ("str", "dict[str,any]")
        path = [p for p in err["loc"] if isinstance(p, int) or (p not in _TYPE_TAGS and "[" not in p)]
        where = ".".join(str(part) for part in ("configuration", *path))
        raise ValueError(f"{where}: {err['msg']} (see InputsSchema in the Parea API)") from None
    for key in ("messages", "history"):
        messages = config.get(key)
        if messages and any(m.get("role") is None for m in messages):
            config = {**config, key: [m if m.get("role") is not None else {**m, "role": "user"} for m in messages]}
    return config


class TraceLogSchema(WireModel):
    """One span as posted by a client (``POST /trace_log``)."""

    trace_id: str = Field(min_length=1, max_length=200)
    start_timestamp: str
    configuration: Annotated[dict[str, Any] | None, AfterValidator(_check_configuration)] = None
    inputs: dict[str, Any] | None = None
    output: str | None = None
    target: str | None = None
    latency: float | None = 0.0
    time_to_first_token: float | None = None
    input_tokens: int | None = 0
    output_tokens: int | None = 0
    total_tokens: int | None = 0
    cost: float | None = 0.0
    parent_trace_id: str | None = None
    root_trace_id: str | None = None
    project_name: str | None = None
    status: str | None = None
    error: str | None = None
    output_for_eval_metrics: str | None = None
    evaluation_metric_names: list[str] | None = None
    scores: list[EvaluationScoreSchema] | None = None
    feedback_score: float | None = None
    apply_eval_frac: float | None = 1.0
    log_sample_rate: float | None = Field(default=1.0, ge=0.0, le=1.0)
    deployment_id: str | None = None
    cache_hit: bool = False
    trace_name: str | None = None
    children: list[str] | None = None
    children_ids: list[int] | None = None
    end_timestamp: str | None = None
    end_user_identifier: str | None = None
    session_id: str | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    experiment_uuid: str | None = None
    images: list[dict[str, Any]] | None = None
    comments: list[dict[str, Any]] | None = None
    annotations: dict[str, Any] | None = None
    depth: int = 0
    execution_order: int = 0
    evaluation_metric_ids: list[int] | None = None
    fill_children: bool = False
    project_uuid: str | None = None
    organization_id: str | None = None

    @field_validator("output", "target", "output_for_eval_metrics", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        return dumps_value(v)


class TraceLogTreeSchema(TraceLogSchema):
    """A span as read back: lists and dicts are never ``null``; children are nested."""

    configuration: dict[str, Any] = Field(default_factory=dict)  # type: ignore[assignment]
    inputs: dict[str, Any] = Field(default_factory=dict)  # type: ignore[assignment]
    scores: list[EvaluationScoreSchema] = Field(default_factory=list)  # type: ignore[assignment]
    children: list[str] = Field(default_factory=list)  # type: ignore[assignment]
    metadata: dict[str, Any] = Field(default_factory=dict)  # type: ignore[assignment]
    tags: list[str] = Field(default_factory=list)  # type: ignore[assignment]
    images: list[dict[str, Any]] = Field(default_factory=list)  # type: ignore[assignment]
    comments: list[dict[str, Any]] = Field(default_factory=list)  # type: ignore[assignment]
    annotations: dict[str, Any] = Field(default_factory=dict)  # type: ignore[assignment]
    children_logs: list[TraceLogTreeSchema] = Field(default_factory=list)


class UpdateLogSchema(WireModel):
    trace_id: str
    field_name_to_value_map: dict[str, Any]
    root_trace_id: str | None = None


class CreateGetProjectRequestSchema(WireModel):
    name: str = Field(min_length=1, max_length=200)


class CreateGetProjectResponseSchema(WireModel):
    name: str
    uuid: str
    created_at: str
    was_created: bool


class CreateExperimentRequestSchema(WireModel):
    name: str = Field(min_length=1, max_length=500)
    run_name: str | None = None
    project_uuid: str
    is_public: bool = False
    metadata: dict[str, Any] | None = None


class ExperimentSchema(WireModel):
    name: str
    run_name: str | None = None
    project_uuid: str
    is_public: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    uuid: str
    created_at: str


class ExperimentPinnedStatistic(WireModel):
    var1: str
    var2: str | None = None
    operation: StatisticOperation
    value: float


class ExperimentWithStatsSchema(ExperimentSchema):
    status: ExperimentStatus
    pinned_stats: list[ExperimentPinnedStatistic] = Field(default_factory=list)
    num_samples: int | None = None


class TraceStatsSchema(WireModel):
    trace_id: str
    latency: float | None = 0.0
    input_tokens: int | None = 0
    output_tokens: int | None = 0
    total_tokens: int | None = 0
    cost: float | None = None
    scores: list[EvaluationScoreSchema] = Field(default_factory=list)


class ExperimentStatsSchema(WireModel):
    parent_trace_stats: list[TraceStatsSchema] = Field(default_factory=list)


class FinishExperimentRequestSchema(WireModel):
    status: ExperimentStatus = ExperimentStatus.completed
    dataset_level_stats: list[EvaluationScoreSchema] | None = None


class ListExperimentsRequestSchema(WireModel):
    project_name: str | None = None
    metadata_filter: dict[str, Any] | None = None
    experiment_name_filter: str | None = None
    run_name_filter: str | None = None
    experiment_uuids: list[str] | None = None


class FilterBaseSchema(WireModel):
    filter_field: str | None = None
    filter_key: str | None = None
    filter_operator: FilterOperator | None = None
    filter_value: str | None = None


class QueryParamsPaginationPublic(FilterBaseSchema):
    page: int = Field(default=1, gt=0)
    page_size: int = Field(default=20, gt=0, le=100000)
    project_name: str
    time_range: TimeRange = TimeRange.na
    status: str | None = None


T = TypeVar("T")


class PaginatedResponse(WireModel, Generic[T]):
    total: int
    page: int
    total_pages: int
    page_size: int
    results: list[T]


class FeedbackRequestSchema(WireModel):
    trace_id: str | None = None
    inference_id: str | None = None
    score: float = Field(ge=0.0, le=1.0)
    comment: str | None = None
    target: str | None = None
    organization_id: str | None = None
    name: str | None = None


class TestCaseSchema(WireModel):
    __test__ = False  # not a pytest test class

    inputs: dict[str, Any]
    target: str | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("target", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        return dumps_value(v)

    @field_validator("tags", mode="before")
    @classmethod
    def _none_tags(cls, v: Any) -> Any:
        return [] if v is None else v


class CreateTestCaseCollectionRequestSchema(WireModel):
    name: str = Field(min_length=1, max_length=500)
    column_names: list[str]
    test_cases: list[TestCaseSchema] | None = None


class CreateTestCaseCollectionResponseSchema(WireModel):
    id: int
    last_updated_at: str
    test_case_ids: list[int]


class CreateTestCasesSchema(WireModel):
    id: int | None = None
    name: str | None = None
    test_cases: list[TestCaseSchema]


class GetTestCaseResponseSchema(TestCaseSchema):
    id: int
    test_case_collection_id: int


class GetTestCaseCollectionResponseSchema(WireModel):
    id: int
    name: str
    column_names: list[str]
    created_at: str
    last_updated_at: str
    test_cases: dict[str, GetTestCaseResponseSchema]


class UpdateTestCasePublicRequestSchema(WireModel):
    inputs: dict[str, Any] | None = None
    target: str | None = None
    tags: list[str] | None = None

    @field_validator("target", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        return dumps_value(v)
