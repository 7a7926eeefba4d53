"""The HTTP bodies, as pydantic models: they validate requests and document responses in OpenAPI.

Responses are built from keel's own ``to_dict()`` objects (the same JSON as the
CLI's ``--json``); the response models here only describe them for the
OpenAPI document, so they allow extra keys.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AnswerOut",
    "ApprovalOut",
    "AskRequest",
    "ChatCompletionRequest",
    "ErrorOut",
    "FeedbackOut",
    "FeedbackRequest",
    "JobOut",
    "JobRequest",
    "OpenAIErrorOut",
    "RejectRequest",
    "TraceSummaryOut",
    "TraceTreeOut",
]

_Id = Field(min_length=1, max_length=200)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- requests --------------------------------------------------------------------------


class AskRequest(_Body):
    """``POST /v1/ask``, and the payload of an ``ask`` job."""

    question: str = Field(min_length=1, description="the question (the input guard limits its length)")
    kb: str | None = Field(None, min_length=1, max_length=64, description="knowledge base (default: 'default')")
    session: str | None = Field(None, min_length=1, max_length=200, description="continue a conversation")
    user: str | None = Field(
        None, min_length=1, max_length=200, description="who is asking (budgets, audit); default: the API key's name"
    )
    tenant: str | None = Field(
        None, min_length=1, max_length=128,
        description="the customer asking (budgets, costs, audit); default: the API key's tenant",
    )


class RejectRequest(_Body):
    reason: str | None = Field(None, max_length=2000, description="why the tool call was rejected")


class FeedbackRequest(_Body):
    trace_id: str = Field(min_length=1, max_length=64, description="the answer's trace_id")
    rating: Literal["up", "down"]
    comment: str | None = Field(None, max_length=4000)


class JobRequest(_Body):
    kind: Literal["ask", "ingest", "extract"]
    payload: dict[str, Any] = Field(
        description="ask: the /v1/ask body; ingest: {paths (inside the workspace folder), kb?}; "
        "extract: {text, schema, role?}"
    )


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request; fields keel does not use are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200, description="any name; keel's router picks the model")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2, description="accepted; keel.yaml's model settings apply")
    max_tokens: int | None = Field(None, ge=1, description="accepted; keel.yaml's model and limit settings apply")
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=1, description="keel returns one choice")
    user: str | None = Field(None, min_length=1, max_length=200, description="who is asking (budgets, audit)")
    metadata: dict[str, str] | None = Field(None, description="session, kb and tenant are read from here")


# -- responses (documentation) ---------------------------------------------------------------


class ErrorOut(_Out):
    error: str = Field(description="machine-readable code, e.g. not_found, budget_exceeded")
    message: str
    hint: str | None = None


class OpenAIErrorDetail(_Out):
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    hint: str | None = None


class OpenAIErrorOut(_Out):
    """The OpenAI-compatible routes' errors, in OpenAI's shape."""

    error: OpenAIErrorDetail


class SourceOut(_Out):
    id: str
    title: str | None = None
    uri: str | None = None
    page: int | None = None
    score: float | None = None
    text: str | None = None


class AnswerOut(_Out):
    status: Literal["answered", "pending_approval", "stopped"]
    answer: str
    route: str
    route_reason: str
    sources: list[SourceOut]
    guardrail: dict[str, Any]
    usage: dict[str, Any]
    models: list[str]
    trace_id: str
    latency_ms: float
    approval: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class ApprovalOut(_Out):
    id: str
    run_id: str
    tool: str
    args: dict[str, Any]
    requester: str
    created_at: str
    expires_at: str
    status: Literal["pending", "approved", "rejected", "expired", "used"]
    decided_by: str | None = None
    decided_at: str | None = None
    reason: str | None = None


class FeedbackOut(_Out):
    id: int
    trace_id: str
    rating: Literal["up", "down"]
    comment: str | None = None
    curation_id: int | None = None


class CurationOut(_Out):
    id: int
    feedback_id: int
    ts: float
    status: Literal["pending", "accepted", "rejected"]
    question: str | None = None
    answer: str | None = None
    prompt_version: str | None = None


class TraceSummaryOut(_Out):
    trace_id: str
    name: str
    start_time: float
    duration_ms: float
    spans: int
    status: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


class SpanOut(_Out):
    span_id: str
    parent_id: str | None
    name: str
    kind: str | None
    start_time: float
    duration_ms: float
    status: str
    status_message: str | None
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    children: list[SpanOut]


class TraceTreeOut(_Out):
    trace_id: str
    spans: list[SpanOut]


class JobCancelOut(_Out):
    requested_at: str
    by: str | None = None


class JobOut(_Out):
    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    result: Any = None
    error: Any = None
    attempts: int
    created_at: Any = None
    started_at: Any = None
    finished_at: Any = None
    cancel: JobCancelOut | None = Field(None, description="set once someone cancelled the job: when, and who")
