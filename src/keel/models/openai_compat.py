"""Any OpenAI-compatible chat endpoint: OpenAI, vLLM, Ollama, llama.cpp server.

The SDK's own retries are off (the gateway retries); its exceptions are
translated here into keel's ModelError family, and nothing from ``openai``
leaves this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..errors import BadModelResponse, ModelError, ModelRefused, ModelTimeout, ModelUnavailable, RateLimited
from .base import ChatRequest, ChatResponse, Message, StreamChunk, ToolCall, Usage, estimate_tokens

__all__ = ["OpenAIProvider", "translate_openai_error"]


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    for key in ("retry-after-ms", "retry-after"):
        value = headers.get(key)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            return None
        return seconds / 1000.0 if key.endswith("ms") else seconds
    return None


def translate_openai_error(exc: Exception, model: str) -> ModelError:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return ModelTimeout(f"{model} did not answer in time", model=model)
    if isinstance(exc, openai.APIConnectionError):
        return ModelUnavailable(
            f"cannot reach {model}: {exc.__cause__ or exc}", model=model,
            hint="check base_url in keel.yaml and that the server is running",
        )
    if isinstance(exc, openai.RateLimitError):
        retry_after = _retry_after(exc.response.headers)
        return RateLimited(f"{model} is rate limited (429)", model=model, retry_after=retry_after)
    if isinstance(exc, openai.AuthenticationError):
        return ModelRefused(f"{model} rejected the API key (401)", model=model,
                            hint="check the key named by api_key_env")
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500 or exc.status_code in (408, 409):
            return ModelUnavailable(f"{model} answered {exc.status_code}", model=model)
        return ModelRefused(f"{model} refused the request ({exc.status_code}): {exc.message}", model=model)
    if isinstance(exc, (openai.APIResponseValidationError, json.JSONDecodeError, ValueError, KeyError)):
        return BadModelResponse(f"{model} sent a body keel could not read: {exc}", model=model)
    if isinstance(exc, openai.OpenAIError):
        return ModelUnavailable(f"{model} failed: {exc}", model=model)
    raise exc  # a programming error, not the model's: let it surface


def _wire_message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in m.tool_calls
        ]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


class OpenAIProvider:
    def __init__(self, *, name: str, model: str, base_url: str | None, api_key: str | None,
                 context_window: int | None = None) -> None:
        import openai

        self.name = name
        self.model = model
        self.base_url = base_url
        self.context_window = context_window or 128_000
        # servers such as vLLM or llama.cpp need no key, but the SDK insists on one
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=0)

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [_wire_message(m) for m in request.messages],
            "temperature": request.temperature,
        }
        if request.max_tokens:
            params["max_tokens"] = request.max_tokens
        if request.stop:
            params["stop"] = request.stop
        if request.seed is not None:
            params["seed"] = request.seed
        if request.json_schema is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.json_schema},
            }
        if request.tools:
            params["tools"] = [
                {"type": "function", "function": {"name": t.name, "description": t.description,
                                                  "parameters": t.parameters}}
                for t in request.tools
            ]
        return params

    def chat(self, request: ChatRequest, *, timeout: float) -> ChatResponse:
        try:
            raw = self._client.chat.completions.create(**self._params(request), timeout=timeout)
            return self._parse(raw)
        except ModelError:
            raise
        except Exception as exc:  # translated at the boundary
            raise translate_openai_error(exc, self.name) from None

    def _parse(self, raw: Any) -> ChatResponse:
        if isinstance(raw, str) or not getattr(raw, "choices", None):
            raise BadModelResponse(f"{self.name} sent no choices", model=self.name)
        choice = raw.choices[0]
        message = choice.message
        calls = [
            ToolCall(id=c.id, name=c.function.name, arguments=json.loads(c.function.arguments or "{}"))
            for c in (message.tool_calls or [])
        ]
        usage = Usage()
        if raw.usage is not None:
            details = getattr(raw.usage, "prompt_tokens_details", None)
            usage = Usage(
                input_tokens=raw.usage.prompt_tokens or 0,
                output_tokens=raw.usage.completion_tokens or 0,
                cached_tokens=(getattr(details, "cached_tokens", 0) or 0) if details else 0,
            )
        return ChatResponse(text=message.content or "", model=self.name, usage=usage, tool_calls=calls,
                            finish_reason=choice.finish_reason or "stop")

    def stream(self, request: ChatRequest, *, timeout: float) -> Iterator[StreamChunk]:
        params = self._params(request)
        try:
            events = self._client.chat.completions.create(
                **params, stream=True, stream_options={"include_usage": True}, timeout=timeout
            )
            usage = Usage()
            finish = "stop"
            for event in events:
                if event.usage is not None:
                    usage = Usage(input_tokens=event.usage.prompt_tokens or 0,
                                  output_tokens=event.usage.completion_tokens or 0)
                if event.choices:
                    delta = event.choices[0].delta
                    finish = event.choices[0].finish_reason or finish
                    if delta and delta.content:
                        yield StreamChunk(text=delta.content)
            yield StreamChunk(usage=usage, finish_reason=finish)
        except ModelError:
            raise
        except Exception as exc:
            raise translate_openai_error(exc, self.name) from None

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def available(self) -> tuple[bool, str]:
        return True, f"endpoint {self.base_url or 'https://api.openai.com/v1'} (not probed)"
