"""Spans stored a trace at a time: one row per trace per write batch, not one per span.

A request makes about ten spans, and each span row cost four B-tree inserts
(the table, its primary key, the trace and start-time indexes): the largest
share of telemetry's write time. A batch row holds the spans of one trace that
one write batch saw, as a JSON array, with the trace id, the time range and the
span count in columns for listing and pruning. Existing spans are moved over,
one batch per trace.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SPAN_FIELDS = ("span_id", "parent_id", "name", "kind", "start_time", "duration_ms", "status", "status_message")
_CHUNK = 5000


def upgrade() -> None:
    batches = op.create_table(
        "keel_span_batches",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("start_time", sa.Float, nullable=False),
        sa.Column("end_time", sa.Float, nullable=False),
        sa.Column("span_count", sa.Integer, nullable=False),
        sa.Column("spans", sa.Text, nullable=False),
    )
    op.create_index("ix_keel_span_batches_trace", "keel_span_batches", ["trace_id"])
    op.create_index("ix_keel_span_batches_start", "keel_span_batches", ["start_time"])
    _move_spans_into(batches)
    op.drop_table("keel_spans")


def _move_spans_into(batches: sa.Table) -> None:
    conn = op.get_bind()
    old = sa.table("keel_spans", *(sa.column(c) for c in ("trace_id", *_SPAN_FIELDS, "attributes", "events")))
    by_trace: dict[str, list[dict[str, object]]] = {}
    for row in conn.execute(sa.select(old).order_by(old.c.trace_id, old.c.start_time)).mappings():
        span = {k: row[k] for k in _SPAN_FIELDS}
        span["attributes"] = json.loads(row["attributes"])
        span["events"] = json.loads(row["events"])
        by_trace.setdefault(row["trace_id"], []).append(span)
    rows = [
        {
            "trace_id": trace_id,
            "start_time": min(s["start_time"] for s in spans),  # type: ignore[type-var]
            "end_time": max(s["start_time"] + s["duration_ms"] / 1000 for s in spans),  # type: ignore[operator]
            "span_count": len(spans),
            "spans": json.dumps(spans, separators=(",", ":"), ensure_ascii=False),
        }
        for trace_id, spans in by_trace.items()
    ]
    for i in range(0, len(rows), _CHUNK):
        op.bulk_insert(batches, rows[i : i + _CHUNK])


def downgrade() -> None:
    spans = op.create_table(
        "keel_spans",
        sa.Column("span_id", sa.String(16), primary_key=True),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("parent_id", sa.String(16)),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32)),
        sa.Column("start_time", sa.Float, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("status_message", sa.Text),
        sa.Column("attributes", sa.Text, nullable=False),
        sa.Column("events", sa.Text, nullable=False),
    )
    op.create_index("ix_keel_spans_trace", "keel_spans", ["trace_id"])
    op.create_index("ix_keel_spans_start", "keel_spans", ["start_time"])
    conn = op.get_bind()
    old = sa.table("keel_span_batches", sa.column("trace_id"), sa.column("spans"))
    rows = [
        {
            "trace_id": batch.trace_id,
            **{k: span.get(k) for k in _SPAN_FIELDS},
            "attributes": json.dumps(span.get("attributes", {}), separators=(",", ":"), ensure_ascii=False),
            "events": json.dumps(span.get("events", []), separators=(",", ":"), ensure_ascii=False),
        }
        for batch in conn.execute(sa.select(old))
        for span in json.loads(batch.spans)
    ]
    for i in range(0, len(rows), _CHUNK):
        op.bulk_insert(spans, rows[i : i + _CHUNK])
    op.drop_table("keel_span_batches")
