"""The answer object of DESIGN.md §4: what ``keel ask --json``, ``/v1/ask`` and jobs return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import KeelError

__all__ = ["Answer"]

Status = Literal["answered", "pending_approval", "stopped"]


@dataclass
class Answer:
    status: Status
    answer: str
    route: str
    route_reason: str
    sources: list[dict[str, Any]]
    guardrail: dict[str, Any]
    usage: dict[str, Any]
    models: list[str]
    trace_id: str
    latency_ms: float
    #: set when status is pending_approval: {"id", "tool", "args", "expires_at"}
    approval: dict[str, Any] | None = None
    #: set when a limit stopped the run, or an approval could not be used
    error: dict[str, Any] | None = None
    #: the run's checkpoint thread (the session id, else the request id); not part of the JSON
    run_id: str = field(default="", repr=False)
    exception: KeelError | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "answer": self.answer,
            "route": self.route,
            "route_reason": self.route_reason,
            "sources": self.sources,
            "guardrail": self.guardrail,
            "usage": {**self.usage, "cost_usd": round(float(self.usage.get("cost_usd", 0.0)), 8)},
            "models": self.models,
            "trace_id": self.trace_id,
            "latency_ms": round(self.latency_ms, 2),
        }
        if self.approval is not None:
            out["approval"] = self.approval
        if self.error is not None:
            out["error"] = self.error
        return out

    def raise_for_status(self) -> Answer:
        """Raise the error that stopped or paused the run; return self when it answered cleanly."""
        if self.exception is not None:
            raise self.exception
        return self
