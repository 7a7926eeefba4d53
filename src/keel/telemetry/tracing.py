"""OpenTelemetry setup: one TracerProvider per process, reconfigurable, idempotent.

OpenTelemetry allows the global provider to be set once per process, but an
``App`` (and every test) may bring its own settings. So keel installs one
provider (keel's lean implementation of the API, :mod:`.recorder`) whose span
processor and sampling are switches: ``setup_tracing`` with the same settings is
a no-op, with new settings it swaps where spans go (the trace store, an
OTLP/HTTP collector) and whether they are recorded at all. The switches are
per process: the App that set tracing up last decides for every App in it.
If the application already installed an SDK provider, keel adds its processor
to that one instead, and that provider's sampler decides.
Code that makes spans only ever uses ``opentelemetry.trace.get_tracer("keel")``.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span

from ..config import TelemetrySettings
from .recorder import KeelTracerProvider, RecordedSpan
from .spans import is_content, set_content_capture

__all__ = ["setup_tracing", "shutdown_tracing"]

log = logging.getLogger("keel.telemetry")
_lock = threading.Lock()
_state: dict[str, Any] = {"provider": None, "key": None}
#: how long the exit hook waits for spans still queued for an OTLP collector
EXIT_FLUSH_MS = 5000


class _Fanout(SpanProcessor):
    """Forwards to the current processors; setup_tracing swaps the list.

    keel's own processors (``reads_recorded = True``) take keel's spans as they are; SDK
    processors get a ``ReadableSpan``, made once per span and only if one of them is there.
    Who needs what is worked out when the list is set, not on every span."""

    def __init__(self) -> None:
        self.targets = ()

    @property
    def targets(self) -> tuple[SpanProcessor, ...]:
        return self._targets

    @targets.setter
    def targets(self, targets: tuple[SpanProcessor, ...]) -> None:
        self._targets = targets
        # a processor that keeps SpanProcessor's on_start has nothing to do when a span starts
        self._starters = tuple(p for p in targets if type(p).on_start is not SpanProcessor.on_start)
        self._keel_enders = tuple(p for p in targets if getattr(p, "reads_recorded", False))
        self._sdk_enders = tuple(p for p in targets if not getattr(p, "reads_recorded", False))

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for p in self._starters:
            p.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for p in self._keel_enders:
            p.on_end(span)
        if self._sdk_enders:
            readable = span.readable() if isinstance(span, RecordedSpan) else span
            for p in self._sdk_enders:
                p.on_end(readable)

    def shutdown(self) -> None:
        for p in self._targets:
            p.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in self._targets)


def _install(service_name: str) -> tuple[Any, KeelTracerProvider, _Fanout]:
    if _state["provider"] is None:
        fanout = _Fanout()
        switch = KeelTracerProvider(fanout, Resource.create({"service.name": service_name}))
        provider: Any = switch
        trace.set_tracer_provider(switch)
        if trace.get_tracer_provider() is not switch:  # someone else set one first: join it
            existing = trace.get_tracer_provider()
            if isinstance(existing, TracerProvider):
                existing.add_span_processor(fanout)
                provider = existing
        _state.update(provider=provider, switch=switch, fanout=fanout)
        atexit.register(_flush_at_exit)
    return _state["provider"], _state["switch"], _state["fanout"]


def _flush_at_exit() -> None:
    """Export what is still queued before the process ends: a CLI command (``keel ask``) ends right
    after its spans do, well inside the OTLP processor's batching delay."""
    fanout: _Fanout | None = _state.get("fanout")
    if fanout is None:
        return
    try:
        fanout.force_flush(EXIT_FLUSH_MS)
        for p in fanout.targets:
            if isinstance(p, BatchSpanProcessor):
                p.shutdown()
    except Exception:  # a collector that is down must not turn a clean exit into a traceback
        log.exception("telemetry: could not export the last spans at exit")


def setup_tracing(
    settings: TelemetrySettings, store_processor: SpanProcessor | None = None, *, key: Any = None
) -> Any:
    """Route keel's spans by ``settings`` (idempotent for the same settings and store).

    ``store_processor`` writes spans to the trace store (see ``Telemetry``); OTLP/HTTP export
    is added when ``settings.otlp_endpoint`` is set; ``settings.capture_content`` switches
    message text on spans; ``settings.enabled=False`` stops recording spans altogether.
    """
    config_key = (settings.model_dump_json(), key if key is not None else id(store_processor))
    with _lock:
        provider, switch, fanout = _install(settings.service_name)
        if _state["key"] == config_key:
            return provider
        old = fanout.targets
        targets: list[SpanProcessor] = [store_processor] if store_processor is not None else []
        if settings.otlp_endpoint:
            targets.append(BatchSpanProcessor(_otlp_exporter(settings), schedule_delay_millis=500))
        fanout.targets = tuple(targets) if settings.enabled else ()
        switch.on = settings.enabled
        switch.set_ratio(settings.sample_ratio)
        set_content_capture(settings.capture_content)
        _state["key"] = config_key
    for p in old:
        if p not in targets:
            p.force_flush()
            if isinstance(p, BatchSpanProcessor):
                p.shutdown()
    return provider


def _otlp_exporter(settings: TelemetrySettings) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, headers=dict(settings.otlp_headers), timeout=10)
    return exporter if settings.capture_content else _WithoutContent(exporter)


class _WithoutContent(SpanExporter):
    """Drops message text from spans before they leave the process (capture_content: false)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([_strip(s) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _strip(span: ReadableSpan) -> ReadableSpan:
    attrs = {k: v for k, v in (span.attributes or {}).items() if not is_content(k)}
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attrs,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def shutdown_tracing() -> None:
    """Flush and detach every target (spans stop being recorded until the next setup)."""
    with _lock:
        if _state["provider"] is None:
            return
        fanout: _Fanout = _state["fanout"]
        fanout.force_flush()
        for p in fanout.targets:
            if isinstance(p, BatchSpanProcessor):
                p.shutdown()
        fanout.targets = ()
        _state["switch"].on = False
        _state["key"] = None
