"""Fake providers for deterministic tests (shipped, so users test their apps too).

``FakeProvider`` plays a script: each call takes the next item, which is a
reply text, a :class:`ToolCall` list, an exception to raise, or a callable
``(request) -> str | list[ToolCall]``. ``FunctionProvider`` answers every call
with one function. Both count tokens the way the estimate does and cost
nothing unless prices are configured.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .base import (
    ChatRequest,
    ChatResponse,
    StreamChunk,
    ToolCall,
    Usage,
    estimate_request_tokens,
    estimate_tokens,
)

__all__ = ["FakeProvider", "FunctionProvider"]

Reply = str | list[ToolCall] | BaseException | Callable[[ChatRequest], Any]


class FunctionProvider:
    """Answers every request with ``fn(request)``: a str or a list of ToolCall."""

    context_window = 8192

    def __init__(self, fn: Callable[[ChatRequest], Any], *, name: str = "fake:function") -> None:
        self.fn = fn
        self.name = name
        self.requests: list[ChatRequest] = []
        self._lock = threading.Lock()

    def _answer(self, request: ChatRequest) -> ChatResponse:
        with self._lock:
            self.requests.append(request)
        result = self.fn(request)
        if isinstance(result, BaseException):
            raise result
        usage = Usage(input_tokens=estimate_request_tokens(request))
        if isinstance(result, list):
            usage.output_tokens = sum(estimate_tokens(str(c.arguments)) for c in result)
            return ChatResponse(text="", model=self.name, usage=usage, tool_calls=result, finish_reason="tool_calls")
        text = str(result)
        usage.output_tokens = estimate_tokens(text) if text else 0
        return ChatResponse(text=text, model=self.name, usage=usage)

    def chat(self, request: ChatRequest, *, timeout: float) -> ChatResponse:
        return self._answer(request)

    def stream(self, request: ChatRequest, *, timeout: float) -> Iterator[StreamChunk]:
        response = self._answer(request)
        words = response.text.split(" ")
        for i, word in enumerate(words):
            yield StreamChunk(text=word if i == 0 else " " + word)
        yield StreamChunk(usage=response.usage, finish_reason=response.finish_reason)

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def available(self) -> tuple[bool, str]:
        return True, ""


class FakeProvider(FunctionProvider):
    """Plays ``replies`` in order; raises an error once the script runs out."""

    def __init__(self, replies: Iterable[Reply] = (), *, name: str = "fake:scripted", repeat_last: bool = False):
        self.script: list[Reply] = list(replies)
        self.repeat_last = repeat_last
        self._position = 0
        super().__init__(self._next, name=name)

    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self.script.extend(replies)

    def _next(self, request: ChatRequest) -> Any:
        with self._lock:
            if self._position >= len(self.script):
                if self.repeat_last and self.script:
                    item = self.script[-1]
                else:
                    raise AssertionError(f"FakeProvider {self.name!r} has no scripted reply left")
            else:
                item = self.script[self._position]
                self._position += 1
        if callable(item) and not isinstance(item, BaseException):
            return item(request)
        return item
