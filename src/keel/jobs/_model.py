"""``Job``: one background job as callers see it (CLI ``--json``, ``GET /v1/jobs/{id}``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["FINISHED", "STATUSES", "Job", "JobStatus"]

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
#: the statuses a job never leaves
FINISHED: tuple[str, ...] = ("succeeded", "failed", "cancelled")


class Job(BaseModel):
    """A job's record. ``result`` is set once it succeeded; ``error`` when it failed or was
    cancelled (or, while ``queued`` again, the error of the attempt that will be retried).

    ``cancel_requested_at`` and ``cancel_requested_by`` say that someone cancelled it: a queued
    job is ``cancelled`` at once; a running one stays ``running`` until its worker stops the run,
    then is ``cancelled`` (or keeps the outcome it reached first, when the run ended before its
    worker noticed)."""

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
    cancel_requested_at: dt.datetime | None = None
    #: who cancelled it: the API key's name, the CLI's --by (default: the login name), or None
    cancel_requested_by: str | None = None

    @property
    def done(self) -> bool:
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON: id, kind, status, result, error, attempts, UTC ISO 8601 times, and
        ``cancel`` (null, or ``{requested_at, by}`` once someone cancelled it)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "cancel": None if self.cancel_requested_at is None else {
                "requested_at": iso(self.cancel_requested_at), "by": self.cancel_requested_by},
        }


def iso(when: dt.datetime | None) -> str | None:
    return when.isoformat(timespec="milliseconds") if when else None


def from_timestamp(ts: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ts, dt.UTC) if ts is not None else None
