"""The remote providers' wire formats, through the real SDKs over httpx.MockTransport."""

from __future__ import annotations

import json

import httpx
import pytest

from keel.errors import BadModelResponse, ModelRefused, ModelUnavailable, RateLimited
from keel.models import ChatRequest, Message, ToolSpec
from keel.models.anthropic_provider import AnthropicProvider, min_cacheable_tokens
from keel.models.openai_compat import OpenAIProvider

LONG = "stable instructions " * 700  # ~3,500 tokens: above every model's cache minimum


def _anthropic(handler) -> AnthropicProvider:
    import anthropic
    import httpx2  # this anthropic release is built on httpx2, which mirrors httpx's API

    def bridge(req: httpx2.Request) -> httpx2.Response:
        plain = handler(httpx.Request(req.method, str(req.url), headers=dict(req.headers), content=req.read()))
        return httpx2.Response(plain.status_code, headers=dict(plain.headers), content=plain.content)

    p = AnthropicProvider(name="claude", model="claude-sonnet-4-5", api_key="test-key")
    p._client = anthropic.Anthropic(api_key="test-key", max_retries=0,
                                    http_client=httpx2.Client(transport=httpx2.MockTransport(bridge)))
    return p


def _openai(handler) -> OpenAIProvider:
    import openai

    p = OpenAIProvider(name="gpt", model="gpt-4o-mini", base_url="http://test/v1", api_key="k")
    p._client = openai.OpenAI(base_url="http://test/v1", api_key="k", max_retries=0,
                              http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    return p


def test_anthropic_puts_a_cache_breakpoint_on_a_long_stable_prefix():
    p = AnthropicProvider(name="c", model="claude-sonnet-4-5", api_key="k")
    request = ChatRequest(messages=[
        Message(role="system", content=LONG, cache_breakpoint=True),
        Message(role="user", content="question"),
    ])
    params = p.build_params(request)
    assert params["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in json.dumps(params["messages"])


def test_anthropic_breakpoint_on_few_shot_examples_after_the_system_prompt():
    p = AnthropicProvider(name="c", model="claude-sonnet-4-5", api_key="k")
    request = ChatRequest(messages=[
        Message(role="system", content=LONG),
        Message(role="user", content="example question"),
        Message(role="assistant", content="example answer", cache_breakpoint=True),
        Message(role="user", content="real question"),
    ])
    params = p.build_params(request)
    assert params["messages"][1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in json.dumps(params["system"])


def test_anthropic_skips_the_breakpoint_below_the_minimum():
    p = AnthropicProvider(name="c", model="claude-haiku-4-5", api_key="k")
    assert min_cacheable_tokens("claude-haiku-4-5") == 2048
    request = ChatRequest(messages=[Message(role="system", content="short", cache_breakpoint=True),
                                    Message(role="user", content="q")])
    assert "cache_control" not in json.dumps(p.build_params(request))


def test_anthropic_usage_counts_cached_tokens_and_structured_output_is_a_forced_tool():
    seen = {}

    def handler(req: httpx.Request) -> httpx.Response:
        seen["body"] = json.loads(req.content)
        return httpx.Response(200, json={
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "stop_reason": "tool_use", "stop_sequence": None,
            "content": [{"type": "tool_use", "id": "t1", "name": "emit_output", "input": {"total": 5}}],
            "usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 1500,
                      "cache_creation_input_tokens": 0},
        })

    request = ChatRequest(messages=[Message(role="user", content="q")],
                          json_schema={"type": "object", "properties": {"total": {"type": "number"}}})
    r = _anthropic(handler).chat(request, timeout=5)
    assert json.loads(r.text) == {"total": 5}
    assert (r.usage.input_tokens, r.usage.cached_tokens, r.usage.output_tokens) == (1510, 1500, 4)
    assert seen["body"]["tool_choice"] == {"type": "tool", "name": "emit_output"}


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [(429, {"retry-after": "7"}, RateLimited), (529, {}, ModelUnavailable), (500, {}, ModelUnavailable),
     (400, {}, ModelRefused), (401, {}, ModelRefused)],
)
def test_anthropic_errors_are_translated(status, headers, error):
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, json={"type": "error",
                                                             "error": {"type": "x", "message": "m"}})

    with pytest.raises(error) as info:
        _anthropic(handler).chat(ChatRequest(messages=[Message(role="user", content="q")]), timeout=5)
    if status == 429:
        assert info.value.retry_after == 7.0


def test_openai_tools_and_structured_output_on_the_wire():
    seen = {}

    def handler(req: httpx.Request) -> httpx.Response:
        seen["body"] = json.loads(req.content)
        return httpx.Response(200, json={
            "id": "c", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None,
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "calculator", "arguments": "{\"expression\": \"2+2\"}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25,
                      "prompt_tokens_details": {"cached_tokens": 8}},
        })

    tool = ToolSpec(name="calculator", description="arithmetic", parameters={"type": "object"})
    request = ChatRequest(messages=[Message(role="user", content="2+2?")], tools=[tool],
                          json_schema={"type": "object"}, schema_name="answer")
    r = _openai(handler).chat(request, timeout=5)
    assert r.tool_calls[0].name == "calculator" and r.tool_calls[0].arguments == {"expression": "2+2"}
    assert (r.usage.input_tokens, r.usage.cached_tokens, r.usage.output_tokens) == (20, 8, 5)
    assert seen["body"]["response_format"]["json_schema"]["name"] == "answer"
    assert seen["body"]["tools"][0]["function"]["name"] == "calculator"


def test_openai_retry_after_ms_header_is_read():
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"retry-after-ms": "1500"}, json={"error": {"message": "slow"}})

    with pytest.raises(RateLimited) as info:
        _openai(handler).chat(ChatRequest(messages=[Message(role="user", content="q")]), timeout=5)
    assert info.value.retry_after == 1.5


def test_openai_stream_yields_text_then_usage():
    events = [
        {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
         "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        for word in ("Hello", " world")
    ] + [{"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [],
          "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())

    chunks = list(_openai(handler).stream(ChatRequest(messages=[Message(role="user", content="q")]), timeout=5))
    assert "".join(c.text for c in chunks) == "Hello world"
    assert chunks[-1].usage.output_tokens == 2


def test_openai_empty_choices_is_a_bad_response():
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                         "choices": []})

    with pytest.raises(BadModelResponse):
        _openai(handler).chat(ChatRequest(messages=[Message(role="user", content="q")]), timeout=5)
