"""The telemetry tables as SQLAlchemy Core objects (the migrations create them)."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["audit", "curation", "feedback", "metadata", "model_calls", "spans"]

metadata = sa.MetaData()

spans = sa.Table(
    "keel_spans",
    metadata,
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

model_calls = sa.Table(
    "keel_model_calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("day", sa.String(10), nullable=False),
    sa.Column("trace_id", sa.String(32)),
    sa.Column("span_id", sa.String(16)),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("cached", sa.Boolean, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("input_tokens", sa.Integer, nullable=False),
    sa.Column("output_tokens", sa.Integer, nullable=False),
    sa.Column("cached_tokens", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    sa.Column("error", sa.String(64)),
    sa.Column("request_id", sa.String(128)),
    sa.Column("session_id", sa.String(128)),
    sa.Column("user_id", sa.String(128)),
    sa.Column("tenant_id", sa.String(128)),
    sa.Column("route", sa.String(32)),
    sa.Column("meta", sa.Text, nullable=False),
)

feedback = sa.Table(
    "keel_feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("trace_id", sa.String(32), nullable=False),
    sa.Column("rating", sa.Integer, nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("prompt_version", sa.String(64)),
    sa.Column("route", sa.String(32)),
    sa.Column("question", sa.Text),
    sa.Column("answer", sa.Text),
    sa.Column("user_id", sa.String(128)),
)

curation = sa.Table(
    "keel_curation",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("feedback_id", sa.Integer, sa.ForeignKey("keel_feedback.id"), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("question", sa.Text),
    sa.Column("answer", sa.Text),
    sa.Column("prompt_version", sa.String(64)),
)

audit = sa.Table(
    "keel_audit",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("ts", sa.String(40), nullable=False),
    sa.Column("event", sa.String(100), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

# the indexes the migrations create, declared here too so the two can be compared
sa.Index("ix_keel_spans_trace", spans.c.trace_id)
sa.Index("ix_keel_spans_start", spans.c.start_time)
for _col in ("ts", "trace_id", "day", "user_id"):
    sa.Index(f"ix_keel_model_calls_{_col}", model_calls.c[_col])
sa.Index("ix_keel_feedback_trace", feedback.c.trace_id)
