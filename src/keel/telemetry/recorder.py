"""A lean implementation of the OpenTelemetry tracing API, for keel's own spans.

Why not the SDK's: the SDK span guards every attribute with a lock and
re-validates it, which is most of what a span costs. keel's spans are made by
keel's code with plain values, on the request path of every question, so keel
records them with the API's semantics (ids, parent-based sampling, context,
status, exception events) but stores attributes in a plain dict. Finished spans
go to keel's processors as they are; any SDK processor (the OTLP exporter, one
a user adds) receives a real SDK ``ReadableSpan`` converted at the end.

Code that makes spans still only uses ``opentelemetry.trace``; nothing here is
imported outside :mod:`keel.telemetry.tracing`.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

__all__ = ["KeelTracerProvider", "RecordedSpan"]

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)
_TRACE_ID_LIMIT = (1 << 64) - 1
_random = random.Random()  # its own generator: a user's random.seed() must not repeat trace ids


class RecordedSpan(trace.Span):
    """A recording span. Its fields have the names of the SDK's ``ReadableSpan`` so that
    keel's processors read either; :meth:`readable` gives a real one for SDK processors."""

    __slots__ = ("_provider", "attributes", "context", "end_time", "events", "instrumentation_scope", "kind",
                 "links", "name", "parent", "start_time", "status")

    def __init__(self, provider: KeelTracerProvider, name: str, context: SpanContext, parent: SpanContext | None,
                 kind: SpanKind, attributes: dict[str, Any], links: Sequence[Link], start_time: int,
                 scope: InstrumentationScope) -> None:
        self._provider = provider
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.attributes = attributes
        self.links = tuple(links)
        self.events: list[Event] = []
        self.status = _UNSET
        self.start_time = start_time
        self.end_time: int | None = None
        self.instrumentation_scope = scope

    # -- the API ---------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self.end_time is None:
            self.attributes[key] = value

    def set_attributes(self, attributes: Any) -> None:
        if self.end_time is None:
            self.attributes.update(attributes)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self.end_time is None:
            self.events.append(Event(name, dict(attributes or {}), timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        if self.end_time is None and context.is_valid:
            self.links += (Link(context, attributes),)

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # as the SDK: OK is final, UNSET is ignored
        if self.end_time is not None or self.status.status_code is StatusCode.OK:
            return
        new = status if isinstance(status, Status) else Status(status, description)
        if new.status_code is not StatusCode.UNSET:
            self.status = new

    def record_exception(self, exception: BaseException, attributes: Any = None, timestamp: int | None = None,
                         escaped: bool = False) -> None:
        cls = type(exception)
        qualified = cls.__qualname__ if cls.__module__ in (None, "builtins") else f"{cls.__module__}.{cls.__qualname__}"
        event = {
            "exception.type": qualified,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
            **dict(attributes or {}),
        }
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = end_time or time.time_ns()
        self._provider.processor.on_end(self)  # type: ignore[arg-type]

    # -- for SDK processors ------------------------------------------------------------

    def readable(self) -> ReadableSpan:
        return ReadableSpan(
            name=self.name, context=self.context, parent=self.parent, resource=self._provider.resource,
            attributes=dict(self.attributes), events=tuple(self.events), links=self.links, kind=self.kind,
            status=self.status, start_time=self.start_time, end_time=self.end_time,
            instrumentation_scope=self.instrumentation_scope,
        )


class _Tracer(trace.Tracer):
    def __init__(self, provider: KeelTracerProvider, scope: InstrumentationScope) -> None:
        self._provider = provider
        self._scope = scope

    def start_span(self, name: str, context: Context | None = None, kind: SpanKind = SpanKind.INTERNAL,
                   attributes: Any = None, links: Sequence[Link] | None = None, start_time: int | None = None,
                   record_exception: bool = True, set_status_on_exception: bool = True) -> trace.Span:
        provider = self._provider
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:  # children follow their root's decision, as ParentBased does
            trace_id, sampled, trace_state = parent.trace_id, parent.trace_flags.sampled, parent.trace_state
        else:
            trace_id, trace_state = _random.getrandbits(128) or 1, None
            sampled = provider.samples(trace_id)
            parent = None
        span_id = _random.getrandbits(64) or 1
        if not (provider.on and sampled):
            return NonRecordingSpan(SpanContext(trace_id, span_id, False, _NOT_SAMPLED, trace_state))
        span = RecordedSpan(provider, name, SpanContext(trace_id, span_id, False, _SAMPLED, trace_state), parent,
                            kind, dict(attributes) if attributes else {}, links or (),
                            start_time or time.time_ns(), self._scope)
        provider.processor.on_start(span, context)  # type: ignore[arg-type]
        return span

    def start_as_current_span(self, name: str, context: Context | None = None,  # type: ignore[override]
                              kind: SpanKind = SpanKind.INTERNAL, attributes: Any = None,
                              links: Sequence[Link] | None = None, start_time: int | None = None,
                              record_exception: bool = True, set_status_on_exception: bool = True,
                              end_on_exit: bool = True) -> _Current:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        return _Current(span, end_on_exit, record_exception, set_status_on_exception)


class _Current:
    """``with tracer.start_as_current_span(...)``: the span is the current one inside the block;
    an exception leaving the block is recorded on it and marks it as an error (as the API's
    ``use_span`` does), then the span ends. A class, not a generator: it runs on every span."""

    __slots__ = ("end_on_exit", "record_exception", "set_status_on_exception", "span", "token")

    def __init__(self, span: trace.Span, end_on_exit: bool, record_exception: bool,
                 set_status_on_exception: bool) -> None:
        self.span = span
        self.end_on_exit = end_on_exit
        self.record_exception = record_exception
        self.set_status_on_exception = set_status_on_exception

    def __enter__(self) -> trace.Span:
        self.token = context_api.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        context_api.detach(self.token)
        span = self.span
        # like use_span: only Exceptions are errors (GeneratorExit, KeyboardInterrupt are not)
        if isinstance(exc, Exception) and span.is_recording():
            if self.record_exception:
                span.record_exception(exc)
            if self.set_status_on_exception:
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        if self.end_on_exit:
            span.end()


class KeelTracerProvider(trace.TracerProvider):
    """keel's tracer provider: ``on`` and ``ratio`` decide what is recorded (by trace id, children
    follow their root), and finished spans go to ``processor`` (keel's fan-out)."""

    def __init__(self, processor: SpanProcessor, resource: Resource) -> None:
        self.processor = processor
        self.resource = resource
        self.on = True
        self._bound = 1 << 64  # sample when the trace id's low 64 bits are below it
        self._tracers: dict[tuple[str, str | None, str | None], _Tracer] = {}
        self._lock = threading.Lock()

    def set_ratio(self, ratio: float) -> None:
        self._bound = round(max(0.0, min(ratio, 1.0)) * (1 << 64))

    def samples(self, trace_id: int) -> bool:
        return (trace_id & _TRACE_ID_LIMIT) < self._bound

    def get_tracer(self, instrumenting_module_name: str, instrumenting_library_version: str | None = None,
                   schema_url: str | None = None, attributes: Any = None) -> trace.Tracer:
        key = (instrumenting_module_name, instrumenting_library_version, schema_url)
        with self._lock:
            if key not in self._tracers:
                self._tracers[key] = _Tracer(self, InstrumentationScope(*key))
            return self._tracers[key]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.processor.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.processor.shutdown()

