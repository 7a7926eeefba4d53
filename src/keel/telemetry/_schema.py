"""The telemetry tables as SQLAlchemy Core objects (the migrations create them)."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["audit", "curation", "feedback", "metadata", "model_calls", "span_batches"]

metadata = sa.MetaData()

#: the spans of one trace that one write batch saw, as a JSON array (see migration 0002)
span_batches = sa.Table(
    "keel_span_batches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("trace_id", sa.String(32), nullable=False),
    sa.Column("start_time", sa.Float, nullable=False),
    sa.Column("end_time", sa.Float, nullable=False),
    sa.Column("span_count", sa.Integer, nullable=False),
    sa.Column("spans", sa.Text, nullable=False),
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
    #: the call's prompt template and version, "answer_sources@00b1a0717d7a" (migration 0003)
    sa.Column("prompt", sa.String(80)),
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
sa.Index("ix_keel_span_batches_trace", span_batches.c.trace_id)
sa.Index("ix_keel_span_batches_start", span_batches.c.start_time)
for _col in ("ts", "trace_id", "day", "user_id"):
    sa.Index(f"ix_keel_model_calls_{_col}", model_calls.c[_col])
sa.Index("ix_keel_feedback_trace", feedback.c.trace_id)
