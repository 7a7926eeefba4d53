"""Anthropic's Messages API, with prompt caching on the stable prefix.

The stable prefix (system prompt, tools, few-shot examples: every message up to
the last one marked ``cache_breakpoint``) gets a ``cache_control`` breakpoint
when it is longer than the model's minimum cacheable length; below that
Anthropic ignores the marker, so we do not send it. Structured output is a
forced tool call whose input schema is the requested JSON Schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..errors import BadModelResponse, ModelError, ModelRefused, ModelTimeout, ModelUnavailable, RateLimited
from .base import ChatRequest, ChatResponse, StreamChunk, ToolCall, Usage, estimate_tokens

__all__ = ["AnthropicProvider", "min_cacheable_tokens"]

_OUTPUT_TOOL = "emit_output"


def min_cacheable_tokens(model: str) -> int:
    """Anthropic's documented minimum prompt length for a cache breakpoint."""
    return 2048 if "haiku" in model else 1024


def translate_anthropic_error(exc: Exception, model: str) -> ModelError:
    import anthropic

    if isinstance(exc, anthropic.APITimeoutError):
        return ModelTimeout(f"{model} did not answer in time", model=model)
    if isinstance(exc, anthropic.APIConnectionError):
        return ModelUnavailable(f"cannot reach {model}: {exc.__cause__ or exc}", model=model)
    if isinstance(exc, anthropic.RateLimitError):
        value = exc.response.headers.get("retry-after")
        try:
            retry_after = float(value) if value is not None else None
        except ValueError:
            retry_after = None
        return RateLimited(f"{model} is rate limited (429)", model=model, retry_after=retry_after)
    if isinstance(exc, anthropic.APIStatusError):
        if exc.status_code >= 500 or exc.status_code == 529:
            return ModelUnavailable(f"{model} answered {exc.status_code}", model=model)
        return ModelRefused(f"{model} refused the request ({exc.status_code}): {exc.message}", model=model)
    if isinstance(exc, (anthropic.APIResponseValidationError, ValueError, KeyError)):
        return BadModelResponse(f"{model} sent a body keel could not read: {exc}", model=model)
    raise exc  # a programming error, not the model's: let it surface


class AnthropicProvider:
    def __init__(self, *, name: str, model: str, api_key: str | None, base_url: str | None = None,
                 context_window: int | None = None, max_output_tokens: int = 1024) -> None:
        import anthropic

        self.name = name
        self.model = model
        self.context_window = context_window or 200_000
        self.max_output_tokens = max_output_tokens
        self._client = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=0)

    def build_params(self, request: ChatRequest) -> dict[str, Any]:
        system_parts = [m for m in request.messages if m.role == "system"]
        turns = [m for m in request.messages if m.role != "system"]
        prefix_end = max((i for i, m in enumerate(request.messages) if m.cache_breakpoint), default=-1)
        prefix_tokens = sum(estimate_tokens(m.content) for m in request.messages[: prefix_end + 1])
        cache = prefix_end >= 0 and prefix_tokens >= min_cacheable_tokens(self.model)

        system = [{"type": "text", "text": m.content} for m in system_parts]
        messages: list[dict[str, Any]] = []
        for m in turns:
            if m.role == "tool":
                block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
                messages.append({"role": "user", "content": [block]})
                continue
            content: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls]
            messages.append({"role": m.role, "content": content})
        if cache:
            last_prefix = request.messages[prefix_end]
            target = system[-1] if last_prefix.role == "system" and system else None
            if target is None:
                index = turns.index(last_prefix)
                target = messages[index]["content"][-1]
            target["cache_control"] = {"type": "ephemeral"}

        params: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            # this SDK release and current Claude models take no temperature: sampling is the model's
            "max_tokens": request.max_tokens or self.max_output_tokens,
        }
        if system:
            params["system"] = system
        tools = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in request.tools]
        if request.json_schema is not None:
            tools.append({"name": _OUTPUT_TOOL, "description": "Return the answer in this structure.",
                          "input_schema": request.json_schema})
            params["tool_choice"] = {"type": "tool", "name": _OUTPUT_TOOL}
        if tools:
            params["tools"] = tools
        if request.stop:
            params["stop_sequences"] = request.stop
        return params

    def chat(self, request: ChatRequest, *, timeout: float) -> ChatResponse:
        try:
            raw = self._client.messages.create(**self.build_params(request), timeout=timeout)
        except ModelError:
            raise
        except Exception as exc:  # translated at the boundary
            import anthropic

            if not isinstance(exc, (anthropic.APIError, ValueError, KeyError)):
                raise
            raise translate_anthropic_error(exc, self.name) from None
        return self._parse(raw)

    def _parse(self, raw: Any) -> ChatResponse:
        if not hasattr(raw, "content"):
            raise BadModelResponse(f"{self.name} sent no content", model=self.name)
        text_parts: list[str] = []
        calls: list[ToolCall] = []
        for block in raw.content:
            if block.type == "text":
                text_parts.append(block.text)
            elif block.type == "tool_use" and block.name == _OUTPUT_TOOL:
                text_parts.append(json.dumps(block.input))
            elif block.type == "tool_use":
                calls.append(ToolCall(id=block.id, name=block.name, arguments=dict(block.input)))
        u = raw.usage
        cached = getattr(u, "cache_read_input_tokens", 0) or 0
        written = getattr(u, "cache_creation_input_tokens", 0) or 0
        usage = Usage(input_tokens=u.input_tokens + cached + written, output_tokens=u.output_tokens,
                      cached_tokens=cached, cache_write_tokens=written)
        return ChatResponse(text="".join(text_parts), model=self.name, usage=usage, tool_calls=calls,
                            finish_reason="tool_calls" if calls else (raw.stop_reason or "stop"))

    def stream(self, request: ChatRequest, *, timeout: float) -> Iterator[StreamChunk]:
        # One complete call, replayed as a single chunk: keeps fallback simple and exact.
        response = self.chat(request, timeout=timeout)
        yield StreamChunk(text=response.text)
        yield StreamChunk(usage=response.usage, finish_reason=response.finish_reason)

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def available(self) -> tuple[bool, str]:
        return True, "Anthropic API (not probed)"
