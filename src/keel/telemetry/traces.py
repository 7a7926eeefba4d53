"""The trace store: finished spans in SQL, read back as trace lists and span trees.

Spans arrive from :class:`StoreSpanProcessor` (an OpenTelemetry span
processor); the processor only queues the span, and the batch writer builds
and writes the rows off the request path: one row per trace per write batch,
holding that trace's spans as a JSON array (one insert per request instead of
one per span: see migration 0002). Readers put a trace's batches back together.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import StatusCode
from sqlalchemy.engine import Engine

from ..errors import NotFound
from . import _schema as t
from ._db import begin_write, local_write_lock
from ._json import dumps
from ._writer import BatchWriter, build_with
from .spans import capture_content, is_content

__all__ = ["SpanNode", "StoreSpanProcessor", "TraceStore", "TraceSummary"]

log = logging.getLogger("keel.telemetry")


@dataclass
class TraceSummary:
    trace_id: str
    name: str
    start_time: float
    duration_ms: float
    spans: int
    status: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SpanNode:
    span_id: str
    parent_id: str | None
    name: str
    kind: str | None
    start_time: float
    duration_ms: float
    status: str
    status_message: str | None
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    children: list[SpanNode] = field(default_factory=list)

    @property
    def tokens(self) -> tuple[int, int]:
        a = self.attributes
        return int(a.get("gen_ai.usage.input_tokens", 0)), int(a.get("gen_ai.usage.output_tokens", 0))

    @property
    def cost_usd(self) -> float:
        return float(self.attributes.get("llm.cost.total", 0.0))

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "children"}
        data["children"] = [c.to_dict() for c in self.children]
        return data


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """One span as stored inside its trace's batch row."""
    start, end = span.start_time or 0, span.end_time or span.start_time or 0
    status = span.status
    return {
        "span_id": format(span.context.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
        "name": span.name[:200],
        "kind": (span.attributes or {}).get("openinference.span.kind"),
        "start_time": start / 1e9,
        "duration_ms": (end - start) / 1e6,
        "status": status.status_code.name.lower() if status.status_code is not StatusCode.UNSET else "ok",
        "status_message": status.description,
        "attributes": _attributes(span),
        "events": [
            {"name": e.name, "time": e.timestamp / 1e9, "attributes": dict(e.attributes or {})} for e in span.events
        ],
    }


def batch_rows(spans: list[ReadableSpan]) -> list[dict[str, Any]]:
    """The rows for a batch of finished spans: one per trace (the writer's builder for the table)."""
    by_trace: dict[int, list[dict[str, Any]]] = {}
    for span in spans:
        try:
            by_trace.setdefault(span.context.trace_id, []).append(span_record(span))
        except Exception:  # one malformed span must not lose the batch
            log.exception("telemetry: dropped a span that could not be stored")
    return [
        {
            "trace_id": format(trace_id, "032x"),
            "start_time": min(r["start_time"] for r in records),
            "end_time": max(r["start_time"] + r["duration_ms"] / 1000 for r in records),
            "span_count": len(records),
            "spans": dumps(records),
        }
        for trace_id, records in by_trace.items()
    ]


build_with(t.span_batches, batch_rows)


def _attributes(span: ReadableSpan) -> Any:
    attrs = span.attributes or {}  # a finished span's attributes no longer change: no copy needed
    if not isinstance(attrs, dict):  # an SDK span's BoundedAttributes
        attrs = dict(attrs)
    return attrs if capture_content() else {k: v for k, v in attrs.items() if not is_content(k)}


class StoreSpanProcessor(SpanProcessor):
    """Queues each finished span for the trace store; the row is built off the request path.

    Takes the writer or a function returning it, so routing spans here costs nothing until
    the first span ends (the database is opened and migrated then).
    """

    #: takes keel's own recorded spans as they are (see keel.telemetry.recorder)
    reads_recorded = True

    def __init__(self, writer: BatchWriter | Callable[[], BatchWriter]) -> None:
        self._writer = writer

    @property
    def writer(self) -> BatchWriter:
        if not isinstance(self._writer, BatchWriter):
            self._writer = self._writer()
        return self._writer

    def on_end(self, span: ReadableSpan) -> None:
        self.writer.put(t.span_batches, span)

    def shutdown(self) -> None:
        if isinstance(self._writer, BatchWriter):
            self._writer.flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if isinstance(self._writer, BatchWriter):
            self._writer.flush()
        return True


class TraceStore:
    #: traces read per query while a filtered list looks for ``limit`` matches
    scan_page = 100

    def __init__(self, engine: Engine, writer: BatchWriter) -> None:
        self.engine = engine
        self.writer = writer

    def list(self, *, limit: int = 20, since: float | None = None, user: str | None = None,
             tenant: str | None = None) -> list[TraceSummary]:
        """The most recent traces, newest first, with their totals.

        ``user`` / ``tenant``: only traces whose root span names that user (``user.id``) / tenant
        (``keel.tenant_id``); still up to ``limit`` of them, however many newer traces do not match."""
        self.writer.flush()
        scoped = user is not None or tenant is not None
        page = max(limit, self.scan_page) if scoped else limit
        found: list[TraceSummary] = []
        seen: set[str] = set()
        offset = 0
        while True:
            groups = self._groups(since, page, offset)
            for g in groups:
                if g.trace_id in seen:  # a trace written between two pages shifts the next one
                    continue
                seen.add(g.trace_id)
                roots = self._roots(g.trace_id)
                if not roots or (scoped and not _owned_by(roots, user, tenant)):
                    continue
                found.append(self._summary(roots, g.trace_id, int(g.n), g.start, g.end))
                if len(found) == limit:
                    return found
            if not scoped or len(groups) < page:
                return found
            offset += page

    def _groups(self, since: float | None, limit: int, offset: int) -> list[Any]:
        """A page of traces (id, start, end, span count), newest first."""
        b = t.span_batches
        start = sa.func.min(b.c.start_time)
        q = (
            sa.select(
                b.c.trace_id,
                start.label("start"),
                sa.func.max(b.c.end_time).label("end"),
                sa.func.sum(b.c.span_count).label("n"),
            )
            .group_by(b.c.trace_id)
            .order_by(sa.desc("start"), b.c.trace_id)
            .limit(limit)
            .offset(offset)
        )
        if since is not None:  # by when the trace started, not when its last batch was written
            q = q.having(start >= since)
        with self.engine.connect() as conn:
            return list(conn.execute(q).all())

    def _summary(self, roots: list[SpanNode], trace_id: str, n: int, start: float, end: float) -> TraceSummary:
        root = roots[0]
        summary = TraceSummary(trace_id, root.name, start, (end - start) * 1000, n, root.status)
        for node in _walk(roots):
            if node.kind == "LLM":
                i, o = node.tokens
                summary.input_tokens += i
                summary.output_tokens += o
                summary.cost_usd += node.cost_usd
            if node.status == "error":
                summary.status = "error"
        return summary

    def tree(self, trace_id: str, *, user: str | None = None, tenant: str | None = None) -> list[SpanNode]:
        """The trace's spans as trees (roots first by start time). Raises NotFound if unknown.

        ``user`` / ``tenant``: a trace whose root span names another user / tenant is NotFound too,
        with the same message (the caller learns nothing about whether it exists)."""
        self.writer.flush()
        roots = self._roots(trace_id)
        if not roots or ((user is not None or tenant is not None) and not _owned_by(roots, user, tenant)):
            raise NotFound(f"no trace with id {trace_id!r}", hint="list recent traces with `keel traces list`")
        return roots

    def _roots(self, trace_id: str) -> list[SpanNode]:
        """The trace's span trees, or [] for an unknown trace (the writer already flushed)."""
        b = t.span_batches
        with self.engine.connect() as conn:
            batches = conn.execute(sa.select(b.c.spans).where(b.c.trace_id == trace_id).order_by(b.c.id)).scalars()
            records = [record for batch in batches for record in json.loads(batch)]
        records.sort(key=lambda r: r["start_time"])
        nodes = {r["span_id"]: SpanNode(**r) for r in records}
        roots = []
        for node in nodes.values():
            parent = nodes.get(node.parent_id or "")
            (parent.children if parent else roots).append(node)
        return roots

    def prune(self, older_than: float) -> int:
        """Delete the spans of every trace that started before ``older_than`` (a Unix time);
        how many spans went.

        Whole traces go, never half of one: a trace is judged by its earliest span."""
        self.writer.flush()
        b = t.span_batches
        old_traces = sa.select(b.c.trace_id).group_by(b.c.trace_id).having(sa.func.min(b.c.start_time) < older_than)
        old_batches = b.c.trace_id.in_(old_traces)
        with local_write_lock(self.engine), begin_write(self.engine) as conn:
            spans = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(b.c.span_count), 0)).where(old_batches))
            deleted = int(spans.scalar_one())
            conn.execute(b.delete().where(old_batches))
        return deleted

    def root_attributes(self, trace_id: str) -> dict[str, Any]:
        return self.tree(trace_id)[0].attributes


def _owned_by(roots: list[SpanNode], user: str | None, tenant: str | None) -> bool:
    """Whether the trace's first root span names ``user`` and ``tenant`` (each when given)."""
    attrs = roots[0].attributes
    return (user is None or attrs.get("user.id") == user) and (tenant is None or attrs.get("keel.tenant_id") == tenant)


def _walk(nodes: list[SpanNode]):  # type: ignore[no-untyped-def]
    for node in nodes:
        yield node
        yield from _walk(node.children)
