"""One model call from a node: cancellation and limits first, then the gateway, a span, the accounting."""

from __future__ import annotations

from typing import Any

from openinference.semconv.trace import SpanAttributes as SA

from .._cancel import check_cancelled
from ..models.base import ChatRequest, ChatResponse, Message
from ..prompts import Rendered
from .deps import GraphDeps
from .limits import check_call
from .state import add_usage
from .tracing import KIND, set_attrs, span

__all__ = ["call_model"]


def call_model(
    deps: GraphDeps,
    state: dict[str, Any],
    *,
    role: str,
    purpose: str,
    prompt: Rendered,
    messages: list[Message],
    json_schema: dict[str, Any] | None = None,
    max_tokens: int = 256,
    attributes: dict[str, Any] | None = None,
) -> tuple[ChatResponse, dict[str, Any]]:
    """Call the role's model chain; return the response and the state update for usage, models, prompts."""
    metadata = {
        "request_id": state.get("request_id", ""),
        "session_id": state.get("session_id", ""),
        "user_id": state.get("user_id", ""),
        "tenant_id": state.get("tenant_id", ""),
        "purpose": purpose,
        "route": state.get("route", ""),
        "prompt": prompt.name,
        "prompt_version": prompt.version,
    }
    request = ChatRequest(
        messages=messages,
        temperature=0.0,
        max_tokens=max_tokens,
        json_schema=json_schema,
        schema_name=purpose,
        metadata=metadata,
    )
    check_cancelled()  # before the budget reservation: a call never made holds none
    check_call(state, deps.settings.limits, deps.gateway, request, role)
    with span(
        deps.tracer,
        f"keel.llm.{purpose}",
        KIND.LLM,
        **{
            SA.LLM_PROMPT_TEMPLATE: prompt.name,
            SA.LLM_PROMPT_TEMPLATE_VERSION: prompt.version,
            SA.INPUT_VALUE: messages[-1].content[:2000],
            "keel.role": role,
            "keel.purpose": purpose,
            **(attributes or {}),
        },
    ) as current:
        response = deps.gateway.chat(request, role=role)
        set_attrs(
            current,
            **{
                SA.LLM_MODEL_NAME: response.model,
                SA.OUTPUT_VALUE: response.text[:2000],
                SA.LLM_TOKEN_COUNT_PROMPT: response.usage.input_tokens,
                SA.LLM_TOKEN_COUNT_COMPLETION: response.usage.output_tokens,
                "keel.cost_usd": response.cost_usd,
                "keel.cached": response.cached,
            },
        )
    usage = add_usage(
        state["usage"],
        input_tokens=response.usage.input_tokens,
        output_tokens=response.usage.output_tokens,
        cost_usd=response.cost_usd,
        calls=0 if response.cached else 1,
    )
    models = list(state.get("models") or [])
    if response.model not in models:
        models.append(response.model)
    prompts = {**(state.get("prompts") or {}), prompt.name: prompt.version}
    state["usage"], state["models"], state["prompts"] = usage, models, prompts
    return response, {"usage": usage, "models": models, "prompts": prompts}
