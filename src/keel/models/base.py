"""The provider interface and the wire-neutral types every model call uses.

A provider turns a :class:`ChatRequest` into a :class:`ChatResponse` (or a
stream of :class:`StreamChunk`). It translates its vendor's errors into
``keel.errors.ModelError`` subclasses and reports usage in :class:`Usage`.
Retries, fallback, caching, budgets and cost are the gateway's job, not the
provider's: SDK-level retries are switched off.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "Message",
    "Provider",
    "StreamChunk",
    "ToolCall",
    "ToolSpec",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Message(BaseModel):
    role: Role
    content: str = ""
    #: assistant messages: the tools it asked for
    tool_calls: list[ToolCall] = Field(default_factory=list)
    #: tool messages: which call this answers
    tool_call_id: str | None = None
    #: marks the end of a stable prefix (system prompt, tools, few-shot examples)
    #: that providers with prompt caching may cache
    cache_breakpoint: bool = False


class ToolSpec(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]


class ChatRequest(BaseModel):
    messages: list[Message]
    temperature: float = 0.0
    max_tokens: int | None = None
    #: a JSON Schema the answer must satisfy (constrained decoding where possible)
    json_schema: dict[str, Any] | None = None
    schema_name: str = "output"
    tools: list[ToolSpec] = Field(default_factory=list)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    #: free-form labels carried into traces (not sent to the model)
    metadata: dict[str, str] = Field(default_factory=dict, exclude=True)

    def cache_key(self, model: str) -> str:
        """Exact-match key: model + messages + every parameter that changes the output."""
        body = self.model_dump(mode="json", exclude={"metadata"})
        blob = json.dumps({"model": model, **body}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    #: input tokens served from a provider's prompt cache (a subset of input_tokens)
    cached_tokens: int = 0
    #: tokens written to a provider's prompt cache (Anthropic)
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )


@dataclass
class ChatResponse:
    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    #: filled by the gateway
    cost_usd: float = 0.0
    cached: bool = False
    latency_ms: float = 0.0
    attempts: int = 1


@dataclass
class StreamChunk:
    text: str = ""
    #: set on the last chunk
    usage: Usage | None = None
    finish_reason: str | None = None


@runtime_checkable
class Provider(Protocol):
    """What every model provider implements."""

    #: "provider:model", the name used in traces, prices and breakers
    name: str
    context_window: int

    def chat(self, request: ChatRequest, *, timeout: float) -> ChatResponse: ...

    def stream(self, request: ChatRequest, *, timeout: float) -> Iterator[StreamChunk]: ...

    def count_tokens(self, text: str) -> int: ...

    def available(self) -> tuple[bool, str]:
        """(usable now, why not) without spending tokens."""
        ...


def estimate_tokens(text: str) -> int:
    """A documented estimate for remote models whose tokenizer we do not ship:
    about four characters per token for English (OpenAI's published rule of thumb)."""
    return max(1, (len(text) + 3) // 4)


def estimate_request_tokens(request: ChatRequest, count: Any = estimate_tokens) -> int:
    total = 0
    for m in request.messages:
        total += 4 + count(m.content)
        for call in m.tool_calls:
            total += count(json.dumps(call.arguments)) + 4
    for tool in request.tools:
        total += count(json.dumps(tool.model_dump()))
    if request.json_schema:
        total += count(json.dumps(request.json_schema))
    return total
