"""Model providers and the gateway every call goes through."""

from .base import ChatRequest, ChatResponse, Message, Provider, StreamChunk, ToolCall, ToolSpec, Usage
from .fake import FakeProvider, FunctionProvider
from .gateway import BudgetHook, CallRecord, Gateway

__all__ = [
    "BudgetHook",
    "CallRecord",
    "ChatRequest",
    "ChatResponse",
    "FakeProvider",
    "FunctionProvider",
    "Gateway",
    "Message",
    "Provider",
    "StreamChunk",
    "ToolCall",
    "ToolSpec",
    "Usage",
]
