"""Cost accounting: one row per model attempt, summed by any dimension.

The gateway prices each call; this module records the :class:`CallRecord`
it emits (with the trace and span it happened in) and answers "what did we
spend, by call, request, session, user, tenant, model or day".
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.trace import SpanContext
from sqlalchemy.engine import Engine

from ..errors import InputError
from ..models.gateway import CallRecord
from . import _schema as t
from ._json import dumps
from ._writer import BatchWriter

__all__ = ["GROUPINGS", "CostStore", "parse_since"]

Grouping = Literal["call", "request", "session", "user", "tenant", "model", "day", "route", "prompt"]
GROUPINGS: dict[str, str] = {
    "call": "id",
    "request": "request_id",
    "session": "session_id",
    "user": "user_id",
    "tenant": "tenant_id",
    "model": "model",
    "day": "day",
    "route": "route",
    "prompt": "prompt",
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str | None, now: float | None = None, *, option: str = "--since") -> float | None:
    """``"24h"``, ``"7d"``, ``"30m"`` or an ISO date/time -> a Unix timestamp."""
    if not value:
        return None
    now = time.time() if now is None else now
    unit = value[-1:].lower()
    if unit in _UNITS and value[:-1].replace(".", "", 1).isdigit():
        return now - float(value[:-1]) * _UNITS[unit]
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{option} {value!r} is neither a duration nor a date", hint="use e.g. 24h, 7d, 30m or 2026-11-01"
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _utc_day(ts: float) -> str:
    tm = time.gmtime(ts)
    return f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}"


def call_row(record: CallRecord, ctx: SpanContext, ts: float) -> dict[str, Any]:
    md = record.metadata
    return {
        "ts": ts,
        "day": _utc_day(ts),
        "trace_id": format(ctx.trace_id, "032x") if ctx.is_valid else None,
        "span_id": format(ctx.span_id, "016x") if ctx.is_valid else None,
        "model": record.model,
        "ok": record.ok,
        "cached": record.cached,
        "attempt": record.attempt,
        "latency_ms": record.latency_ms,
        "input_tokens": record.usage.input_tokens,
        "output_tokens": record.usage.output_tokens,
        "cached_tokens": record.usage.cached_tokens,
        "cost_usd": record.cost_usd,
        "error": record.error,
        "request_id": md.get("request_id"),
        "session_id": md.get("session_id"),
        "user_id": md.get("user_id"),
        "tenant_id": md.get("tenant_id"),
        "route": md.get("route"),
        "prompt": _prompt_of(md),
        "meta": dumps(md),
    }


def _prompt_of(md: dict[str, Any]) -> str | None:
    """``name@version`` of the call's prompt template (the column holds 80 characters)."""
    if md.get("prompt") and md.get("prompt_version"):
        return f"{md['prompt']}@{md['prompt_version']}"[:80]
    return None


class CostStore:
    def __init__(self, engine: Engine, writer: BatchWriter) -> None:
        self.engine = engine
        self.writer = writer

    def record(self, record: CallRecord) -> None:
        """Gateway observer: queue the attempt, tagged with the current trace and span."""
        ctx = trace.get_current_span().get_span_context()
        ts = time.time()
        self.writer.put(t.model_calls, lambda: call_row(record, ctx, ts))

    def summary(self, by: str = "model", *, since: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Spend grouped by ``by``: calls, errors, cache hits, tokens and USD, biggest first."""
        if by not in GROUPINGS:
            raise InputError(f"cannot group costs by {by!r}", hint=f"use one of: {', '.join(GROUPINGS)}")
        self.writer.flush()
        c = t.model_calls
        key = c.c[GROUPINGS[by]]
        q = (
            sa.select(
                key.label("key"),
                sa.func.count().label("calls"),
                sa.func.sum(sa.case((c.c.ok, 0), else_=1)).label("errors"),
                sa.func.sum(sa.case((c.c.cached, 1), else_=0)).label("cache_hits"),
                sa.func.sum(c.c.input_tokens).label("input_tokens"),
                sa.func.sum(c.c.output_tokens).label("output_tokens"),
                sa.func.sum(c.c.cost_usd).label("cost_usd"),
            )
            .group_by(key)
            .order_by(sa.desc("cost_usd"), key)
            .limit(limit)
        )
        if since is not None:
            q = q.where(c.c.ts >= since)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [
            {
                "key": r.key,
                "calls": r.calls,
                "errors": int(r.errors or 0),
                "cache_hits": int(r.cache_hits or 0),
                "input_tokens": int(r.input_tokens or 0),
                "output_tokens": int(r.output_tokens or 0),
                "cost_usd": round(float(r.cost_usd or 0.0), 9),
            }
            for r in rows
        ]

    def total(self, *, since: float | None = None, **where: str) -> float:
        """Total USD, optionally for one request/session/user/tenant/model/trace."""
        self.writer.flush()
        c = t.model_calls
        q = sa.select(sa.func.coalesce(sa.func.sum(c.c.cost_usd), 0.0))
        for col, value in where.items():
            q = q.where(c.c[col] == value)
        if since is not None:
            q = q.where(c.c.ts >= since)
        with self.engine.connect() as conn:
            return float(conn.execute(q).scalar_one())
