"""Spans for the graph, through the plain OpenTelemetry API.

keel never configures a tracer provider here: the telemetry subsystem (or the
user) does. With none configured the spans cost almost nothing and the
answer's trace id is a random one, so it still names the request.
"""

from __future__ import annotations

import secrets
from contextlib import AbstractContextManager
from typing import Any

from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from ..telemetry._json import dumps

__all__ = ["KIND", "span", "trace_id_of"]

KIND = OpenInferenceSpanKindValues
_KIND_ATTR = SpanAttributes.OPENINFERENCE_SPAN_KIND


def _value(v: Any) -> Any:
    if isinstance(v, str | bool | int | float):
        return v
    if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
        return list(v)
    return dumps(v)[:4000]


def span(tracer: Tracer, name: str, kind: OpenInferenceSpanKindValues,
         **attributes: Any) -> AbstractContextManager[Span]:
    """``with span(...) as current``: a span with an OpenInference kind; errors are recorded on it
    and re-raised. The tracer's own context manager is returned as is: no extra layer per span."""
    attrs = {_KIND_ATTR: kind.value, **{k: _value(v) for k, v in attributes.items() if v is not None}}
    return tracer.start_as_current_span(  # type: ignore[return-value]
        name, attributes=attrs, record_exception=True, set_status_on_exception=True)


def set_attrs(current: Span, **attributes: Any) -> None:
    for k, v in attributes.items():
        if v is not None:
            current.set_attribute(k, _value(v))


def mark_error(current: Span, message: str) -> None:
    current.set_status(Status(StatusCode.ERROR, message))


def trace_id_of(current: Span) -> str:
    ctx = current.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else secrets.token_hex(16)


def default_tracer() -> Tracer:
    return trace.get_tracer("keel")
