"""Span helpers that speak both trace vocabularies.

Collectors disagree on names: OpenTelemetry's GenAI conventions (``gen_ai.*``)
are what Langfuse, Datadog and the OTel ecosystem read; OpenInference
(``openinference.span.kind``, ``llm.*``, ``retrieval.documents.*``) is what
Phoenix and Arize read. keel writes both, so a trace looks right in either.

Spans are made with the plain OpenTelemetry API; these helpers only set
attributes. Message text is written only while content capture is on
(``telemetry.capture_content``); tokens, costs and sizes always are.
Every helper is a no-op on a span that is not recording, so with telemetry
off they cost one method call.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from openinference.semconv.trace import (
    DocumentAttributes,
    MessageAttributes,
    OpenInferenceSpanKindValues,
    SpanAttributes,
)
from opentelemetry import trace
from opentelemetry.trace import Span

from ._json import dumps

if TYPE_CHECKING:
    from ..models.base import ChatRequest, ChatResponse
    from ..models.pricing import Pricer

__all__ = [
    "CONTENT_KEYS",
    "capture_content",
    "is_content",
    "mark_error",
    "model_span",
    "set_content_capture",
    "set_guardrail",
    "set_kind",
    "set_model_response",
    "set_prompt",
    "set_request_context",
    "set_retrieval_documents",
    "set_tool_call",
]

SA = SpanAttributes
_state = {"capture": True}
_tracer_of: list[tuple[trace.TracerProvider, trace.Tracer]] = []


def _tracer() -> trace.Tracer:
    """The current provider's tracer for model calls. Not one taken at import: that would be a
    ProxyTracer (keel installs its provider later), which wraps every span in a generator."""
    provider = trace.get_tracer_provider()
    if not _tracer_of or _tracer_of[0][0] is not provider:
        _tracer_of[:] = [(provider, provider.get_tracer("keel.models"))]
    return _tracer_of[0][1]

#: request metadata keys -> span attributes (OpenInference names where one exists)
_CONTEXT_KEYS = {
    "session_id": SA.SESSION_ID,
    "user_id": SA.USER_ID,
    "request_id": "keel.request_id",
    "tenant_id": "keel.tenant_id",
    "route": "keel.route",
    "prompt_version": SA.LLM_PROMPT_TEMPLATE_VERSION,
    "prompt_id": SA.PROMPT_ID,
}


#: attributes that carry message text; dropped at export while content capture is off,
#: whoever made the span (keel's helpers, the graph, a user's own code)
CONTENT_KEYS = frozenset(
    {
        SA.INPUT_VALUE,
        SA.OUTPUT_VALUE,
        SA.LLM_PROMPT_TEMPLATE_VARIABLES,
        SA.TOOL_PARAMETERS,
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        # the quality guard's findings quote the draft answer's sentences
        "keel.problems",
        "keel.guardrail.checks",
    }
)
_CONTENT_PREFIXES = (f"{SA.LLM_INPUT_MESSAGES}.", f"{SA.LLM_OUTPUT_MESSAGES}.")
_CONTENT_SUFFIXES = (f".{DocumentAttributes.DOCUMENT_CONTENT}",)


@functools.lru_cache(maxsize=8192)  # attribute names repeat: one check per distinct name
def is_content(key: str) -> bool:
    """Whether an attribute holds message text (prompt, answer, document, tool arguments)."""
    return key in CONTENT_KEYS or key.startswith(_CONTENT_PREFIXES) or key.endswith(_CONTENT_SUFFIXES)


def set_content_capture(on: bool) -> None:
    """Switch message text on spans on or off, process-wide (setup_tracing calls this)."""
    _state["capture"] = on


def capture_content() -> bool:
    return _state["capture"]


def set_kind(span: Span, kind: str) -> None:
    """OpenInference span kind: CHAIN, LLM, RETRIEVER, TOOL, GUARDRAIL, AGENT, EMBEDDING, ..."""
    if span.is_recording():
        span.set_attribute(SA.OPENINFERENCE_SPAN_KIND, OpenInferenceSpanKindValues(kind.upper()).value)


def set_request_context(span: Span, metadata: Mapping[str, str]) -> None:
    """session.id, user.id, request/tenant ids, route and prompt version from request metadata."""
    if not span.is_recording():
        return
    for key, attr in _CONTEXT_KEYS.items():
        value = metadata.get(key)
        if value:
            span.set_attribute(attr, str(value))


@contextmanager
def model_span(
    model: str,
    provider_name: str,
    request: ChatRequest,
    attempt: int,
    operation: str = "chat",
    *,
    current: bool = True,
) -> Iterator[Span]:
    """The span around one attempt at one model (the gateway opens it).

    ``current=False`` for streams: a generator must not leave its span as the
    caller's current context between chunks.
    """
    if current:
        with _tracer().start_as_current_span(f"{operation} {model}", kind=trace.SpanKind.CLIENT) as span:
            if span.is_recording():
                _set_request(span, model, provider_name, request, attempt, operation)
            yield span
        return
    span = _tracer().start_span(f"{operation} {model}", kind=trace.SpanKind.CLIENT)
    if span.is_recording():
        _set_request(span, model, provider_name, request, attempt, operation)
    try:
        yield span
    except Exception as exc:
        mark_error(span, exc)
        raise
    finally:
        span.end()


def mark_error(span: Span, exc: BaseException) -> None:
    """Record a failed attempt on its span (``error.type`` + the exception event)."""
    if span.is_recording():
        span.record_exception(exc)
        span.set_attribute("error.type", getattr(exc, "code", type(exc).__name__))
        span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)[:500]))


def _set_request(
    span: Span, model: str, provider_name: str, request: ChatRequest, attempt: int, operation: str
) -> None:
    provider, _, remote_model = provider_name.partition(":")
    params = {"temperature": request.temperature, "max_tokens": request.max_tokens}
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": remote_model or model,
        "gen_ai.request.temperature": request.temperature,
        SA.OPENINFERENCE_SPAN_KIND: OpenInferenceSpanKindValues.LLM.value,
        SA.LLM_MODEL_NAME: remote_model or model,
        SA.LLM_PROVIDER: provider,
        SA.LLM_INVOCATION_PARAMETERS: dumps({k: v for k, v in params.items() if v is not None}),
        "keel.model": model,
        "keel.attempt": attempt,
    }
    if request.max_tokens:
        attrs["gen_ai.request.max_tokens"] = request.max_tokens
    for key, attr in _CONTEXT_KEYS.items():
        if request.metadata.get(key):
            attrs[attr] = str(request.metadata[key])
    if _state["capture"]:
        _messages(attrs, [(m.role, m.content) for m in request.messages], SA.LLM_INPUT_MESSAGES)
        attrs["gen_ai.input.messages"] = dumps(
            [{"role": m.role, "parts": [{"type": "text", "content": m.content}]} for m in request.messages]
        )
    span.set_attributes(attrs)  # one call: the SDK takes its lock and checks limits once


def _messages(attrs: dict[str, Any], messages: list[tuple[str, str]], prefix: str) -> None:
    for i, (role, content) in enumerate(messages):
        attrs[f"{prefix}.{i}.{MessageAttributes.MESSAGE_ROLE}"] = role
        attrs[f"{prefix}.{i}.{MessageAttributes.MESSAGE_CONTENT}"] = content


def set_model_response(span: Span, response: ChatResponse, pricer: Pricer | None = None) -> None:
    """Tokens, cost (prompt/completion/total), finish reason and, if captured, the answer."""
    if not span.is_recording():
        return
    u = response.usage
    prompt_cost = pricer.cost(type(u)(input_tokens=u.input_tokens, cached_tokens=u.cached_tokens)) if pricer else 0.0
    attrs: dict[str, Any] = {
        "gen_ai.response.model": response.model,
        "gen_ai.response.finish_reasons": [response.finish_reason],
        "gen_ai.usage.input_tokens": u.input_tokens,
        "gen_ai.usage.output_tokens": u.output_tokens,
        SA.LLM_TOKEN_COUNT_PROMPT: u.input_tokens,
        SA.LLM_TOKEN_COUNT_COMPLETION: u.output_tokens,
        SA.LLM_TOKEN_COUNT_TOTAL: u.input_tokens + u.output_tokens,
        SA.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ: u.cached_tokens,
        SA.LLM_COST_PROMPT: min(prompt_cost, response.cost_usd),
        SA.LLM_COST_COMPLETION: max(response.cost_usd - prompt_cost, 0.0),
        SA.LLM_COST_TOTAL: response.cost_usd,
        SA.LLM_FINISH_REASON: response.finish_reason,
        "keel.cached": response.cached,
    }
    if _state["capture"]:
        _messages(attrs, [("assistant", response.text)], SA.LLM_OUTPUT_MESSAGES)
        attrs["gen_ai.output.messages"] = dumps(
            [
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": response.text}],
                    "finish_reason": response.finish_reason,
                }
            ]
        )
    span.set_attributes(attrs)


def set_retrieval_documents(span: Span, hits: Iterable[Any], query: str | None = None) -> None:
    """``retrieval.documents.N.document.{id,score,content,metadata}`` from SearchHit-like objects
    (attributes ``id``, ``score``, ``text``, optional ``title``/``uri``/``page``) or dicts."""
    if not span.is_recording():
        return
    span.set_attribute(SA.OPENINFERENCE_SPAN_KIND, OpenInferenceSpanKindValues.RETRIEVER.value)
    if query is not None and _state["capture"]:
        span.set_attribute(SA.INPUT_VALUE, query)
    prefix = SA.RETRIEVAL_DOCUMENTS
    for i, hit in enumerate(hits):
        get = hit.get if isinstance(hit, Mapping) else lambda k, h=hit: getattr(h, k, None)
        span.set_attribute(f"{prefix}.{i}.{DocumentAttributes.DOCUMENT_ID}", str(get("id")))
        span.set_attribute(f"{prefix}.{i}.{DocumentAttributes.DOCUMENT_SCORE}", float(get("score") or 0.0))
        meta = {k: get(k) for k in ("title", "uri", "page") if get(k) is not None}
        if meta:
            span.set_attribute(f"{prefix}.{i}.{DocumentAttributes.DOCUMENT_METADATA}", dumps(meta))
        if _state["capture"] and get("text") is not None:
            span.set_attribute(f"{prefix}.{i}.{DocumentAttributes.DOCUMENT_CONTENT}", str(get("text")))


def set_prompt(
    span: Span, *, version: str, template: str | None = None, variables: Mapping[str, Any] | None = None
) -> None:
    """``llm.prompt_template.*``: which prompt version produced this call."""
    if not span.is_recording():
        return
    span.set_attribute(SA.LLM_PROMPT_TEMPLATE_VERSION, version)
    if template is not None and _state["capture"]:
        span.set_attribute(SA.LLM_PROMPT_TEMPLATE, template)
    if variables is not None and _state["capture"]:
        span.set_attribute(SA.LLM_PROMPT_TEMPLATE_VARIABLES, dumps(dict(variables)))


def set_tool_call(span: Span, name: str, arguments: Mapping[str, Any], result: Any = None) -> None:
    """A tool span: OpenInference ``tool.*`` and GenAI ``gen_ai.tool.*``."""
    if not span.is_recording():
        return
    span.set_attributes(
        {
            SA.OPENINFERENCE_SPAN_KIND: OpenInferenceSpanKindValues.TOOL.value,
            SA.TOOL_NAME: name,
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
        }
    )
    if _state["capture"]:
        span.set_attribute(SA.TOOL_PARAMETERS, dumps(dict(arguments)))
        if result is not None:
            span.set_attribute(SA.OUTPUT_VALUE, result if isinstance(result, str) else dumps(result))


def set_guardrail(span: Span, verdict: str, checks: Iterable[Mapping[str, Any]] = ()) -> None:
    """A guardrail span: its verdict and each check's name and result."""
    if not span.is_recording():
        return
    span.set_attribute(SA.OPENINFERENCE_SPAN_KIND, OpenInferenceSpanKindValues.GUARDRAIL.value)
    span.set_attribute("keel.guardrail.verdict", verdict)
    span.set_attribute("keel.guardrail.checks", dumps(list(map(dict, checks))))
