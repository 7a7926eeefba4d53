"""``Job``: one background job as callers see it (CLI ``--json``, ``GET /v1/jobs/{id}``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["STATUSES", "Job", "JobStatus"]

JobStatus = Literal["queued", "running", "succeeded", "failed"]
STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed")


class Job(BaseModel):
    """A job's record. ``result`` is set once it succeeded; ``error`` when it failed (or, while
    ``queued`` again, the error of the attempt that will be retried)."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: str
    status: JobStatus
    #: the kind's arguments, as validated at submit time
    payload: dict[str, Any]
    user: str | None = None
    #: ask: the Answer JSON; ingest: the IngestReport; extract: the ExtractResult
    result: dict[str, Any] | None = None
    #: {error, message, hint}, as KeelError.to_dict()
    error: dict[str, Any] | None = None
    attempts: int = 0
    max_attempts: int = 1
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed")

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON: id, kind, status, result, error, attempts and UTC ISO 8601 times."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


def _iso(when: dt.datetime | None) -> str | None:
    return when.isoformat(timespec="milliseconds") if when else None


def from_timestamp(ts: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ts, dt.UTC) if ts is not None else None
