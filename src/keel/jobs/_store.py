"""The job table and every change to it: each one a single conditional statement.

A worker *claims* a job by setting ``status='running'`` and a fresh ``claim`` token
where the row is still claimable, so two workers can never both run one attempt. While
it runs, the worker renews ``lease_until`` (the heartbeat). Finishing, retrying and
heartbeating all match on the claim token: a worker that was presumed dead and lost its
job cannot overwrite the result of the one that took over. ``reap`` re-queues running
jobs whose lease ran out, or fails them once they are out of attempts.

``cancel`` takes the row's lock and decides in one transaction: a queued job becomes
``cancelled`` (a worker's claim, which wants ``status='queued'``, then finds nothing); a
running one gets ``cancel_requested_at``, which its worker reads between heartbeats and
answers by stopping the run. From then on the job is never queued again: not by a retry,
not by ``reap`` (a cancelled job whose worker died is ``cancelled``), not by a claim of an
expired lease.

    queued ──claim──► running ──finish──► succeeded | failed
      │  ▲              │  │
      │  └────retry─────┘  └─(cancel requested: the run stops, or its lease runs out)─► cancelled
      └──────────────────cancel──────────────────────────────────────────────────────► cancelled
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..errors import Cancelled, InputError, JobFinished
from ._db import write
from ._errors import WorkerLost
from ._model import STATUSES, Job, from_timestamp, iso

__all__ = ["JobStore", "table"]

_metadata = sa.MetaData()
table = sa.Table(
    "keel_jobs",
    _metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("user_id", sa.String(200)),
    sa.Column("result", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("run_after", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float),
    sa.Column("claim", sa.String(40)),
    sa.Column("worker", sa.String(200)),
    sa.Column("cancel_requested_at", sa.Float),
    sa.Column("cancel_requested_by", sa.String(200)),
)
t = table.c
#: the error a cancelled job carries
CANCELLED = Cancelled("job_cancelled").to_dict()


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- callers -------------------------------------------------------------------------

    def insert(self, kind: str, payload: dict[str, Any], *, user: str | None, max_attempts: int) -> Job:
        now = time.time()
        row = {"id": "job_" + uuid.uuid4().hex[:20], "kind": kind, "status": "queued", "payload": dumps(payload),
               "user_id": user, "attempts": 0, "max_attempts": max_attempts, "created_at": now, "run_after": now}
        with self._write() as conn:
            conn.execute(table.insert().values(**row))
        return _job(row)

    def get(self, job_id: str) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(table).where(t.id == job_id)).mappings().first()
        return _job(row) if row else None

    def list(self, status: str | None = None, limit: int = 50) -> list[Job]:
        if status is not None and status not in STATUSES:
            raise InputError(f"unknown job status {status!r}", hint=f"use one of: {', '.join(STATUSES)}")
        if not 1 <= limit <= 1000:
            raise InputError(f"limit must be between 1 and 1000, not {limit}")
        query = sa.select(table).order_by(t.created_at.desc(), t.id.desc()).limit(limit)
        if status is not None:
            query = query.where(t.status == status)
        with self.engine.connect() as conn:
            return [_job(row) for row in conn.execute(query).mappings()]

    def delete(self, job_id: str) -> None:
        with self._write() as conn:
            conn.execute(table.delete().where(t.id == job_id, t.status == "queued"))

    def cancel(self, job_id: str, *, by: str | None) -> Job | None:
        """Cancel a queued job, or ask a running one's worker to stop it; None for an unknown id.
        JobFinished if it already ended. Asking twice keeps the first request."""
        now = time.time()
        with self._write() as conn:
            row = conn.execute(sa.select(table).where(t.id == job_id).with_for_update()).mappings().first()
            if row is None:
                return None
            status = row["status"]
            if status not in ("queued", "running"):
                raise JobFinished(job_id, status, when=iso(from_timestamp(row["finished_at"])),
                                  by=row["cancel_requested_by"] if status == "cancelled" else None)
            asked = {"cancel_requested_at": now, "cancel_requested_by": by and by[:200]}
            if status == "queued":
                values = {"status": "cancelled", "finished_at": now, "error": _text(CANCELLED), **asked}
                conn.execute(table.update().where(t.id == job_id, t.status == "queued").values(**values))
            elif row["cancel_requested_at"] is None:
                conn.execute(table.update().where(t.id == job_id, t.status == "running",
                                                  t.cancel_requested_at.is_(None)).values(**asked))
            row = conn.execute(sa.select(table).where(t.id == job_id)).mappings().one()
        return _job(row)

    def cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked to cancel this job (its worker asks between heartbeats)."""
        with self.engine.connect() as conn:
            asked = conn.execute(sa.select(t.cancel_requested_at).where(t.id == job_id)).scalar_one_or_none()
        return asked is not None

    def counts(self) -> dict[str, int]:
        """How many jobs are in each status, and how many queued ones may run now (``runnable``)."""
        now = time.time()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.status, sa.func.count()).group_by(t.status)).all()
            runnable = conn.execute(sa.select(sa.func.count()).where(t.status == "queued", t.run_after <= now))
            out = {s: 0 for s in STATUSES} | {str(s): int(n) for s, n in rows}
            out["runnable"] = int(runnable.scalar_one())
        return out

    # -- workers -------------------------------------------------------------------------

    def claim_next(self, worker: str, lease_s: float) -> tuple[Job, str] | None:
        """Take the oldest queued job that may run now, or None."""
        now = time.time()
        ready = sa.select(t.id).where(t.status == "queued", t.run_after <= now)
        with self.engine.connect() as conn:  # a read first: an idle poll takes no write lock
            if conn.execute(ready.limit(1)).first() is None:
                return None
        with self._write() as conn:
            picked = conn.execute(
                ready.order_by(t.run_after, t.created_at).limit(1).with_for_update(skip_locked=True)
            ).first()
            return self._claim(conn, picked.id, worker, lease_s, now, t.status == "queued") if picked else None

    def claim(self, job_id: str, worker: str, lease_s: float) -> tuple[Job, str] | None:
        """Take one job by id if it is queued, or running on a lease that ran out (and not cancelled); else None."""
        now = time.time()
        claimable = sa.or_(t.status == "queued", sa.and_(t.status == "running", t.lease_until < now,
                                                         t.cancel_requested_at.is_(None)))
        with self._write() as conn:
            return self._claim(conn, job_id, worker, lease_s, now, claimable)

    def _claim(self, conn: sa.Connection, job_id: str, worker: str, lease_s: float, now: float,
               claimable: Any) -> tuple[Job, str] | None:
        token = uuid.uuid4().hex
        done = conn.execute(
            table.update().where(t.id == job_id, claimable).values(
                status="running", claim=token, worker=worker[:200], attempts=t.attempts + 1, started_at=now,
                lease_until=now + lease_s, finished_at=None)
        )
        if done.rowcount != 1:
            return None
        row = conn.execute(sa.select(table).where(t.id == job_id)).mappings().one()
        return _job(row), token

    def heartbeat(self, job_id: str, token: str, lease_s: float) -> bool:
        """Renew the lease; False when this claim is no longer the job's."""
        with self._write() as conn:
            done = conn.execute(table.update().where(t.id == job_id, t.claim == token, t.status == "running")
                                .values(lease_until=time.time() + lease_s))
        return done.rowcount == 1

    def finish(self, job_id: str, token: str, *, result: dict[str, Any] | None,
               error: dict[str, Any] | None) -> bool:
        """Record the outcome: succeeded without an error, failed with one."""
        values = {"status": "failed" if error else "succeeded", "result": _text(result), "error": _text(error),
                  "finished_at": time.time(), "claim": None, "lease_until": None}
        return self._by_claim(job_id, token, values)

    def retry(self, job_id: str, token: str, *, error: dict[str, Any], delay_s: float) -> bool:
        """Queue the job again after ``delay_s``, keeping the error of the attempt that failed;
        False (nothing changed) once someone asked to cancel it: see :meth:`finish_cancelled`."""
        values = {"status": "queued", "error": _text(error), "run_after": time.time() + delay_s,
                  "claim": None, "lease_until": None}
        return self._by_claim(job_id, token, values, t.cancel_requested_at.is_(None))

    def finish_cancelled(self, job_id: str, token: str, *, result: dict[str, Any] | None) -> bool:
        """Record that the run stopped because the job was cancelled (False if nobody asked to)."""
        values = {"status": "cancelled", "result": _text(result), "error": _text(CANCELLED),
                  "finished_at": time.time(), "claim": None, "lease_until": None}
        return self._by_claim(job_id, token, values, t.cancel_requested_at.is_not(None))

    def _by_claim(self, job_id: str, token: str, values: dict[str, Any], *where: Any) -> bool:
        with self._write() as conn:
            done = conn.execute(table.update().where(t.id == job_id, t.claim == token, t.status == "running", *where)
                                .values(**values))
        return done.rowcount == 1

    def reap(self) -> list[str]:
        """Jobs whose worker stopped heartbeating: queued again (their ids returned), failed
        when they used their last attempt, cancelled when someone asked to cancel them."""
        now = time.time()
        expired = sa.and_(t.status == "running", t.lease_until < now)
        with self.engine.connect() as conn:
            if conn.execute(sa.select(t.id).where(expired).limit(1)).first() is None:
                return []
        requeued = []
        with self._write() as conn:
            rows = conn.execute(sa.select(t.id, t.attempts, t.max_attempts, t.cancel_requested_at)
                                .where(expired)).all()
            for job_id, attempts, max_attempts, cancelled in rows:
                values = _after_lost_worker(attempts, max_attempts, cancelled is not None, now)
                final = values["status"] != "queued"
                asked = t.cancel_requested_at
                as_read = asked.is_not(None) if cancelled is not None else asked.is_(None)  # a cancel since?
                done = conn.execute(table.update().where(t.id == job_id, expired, as_read).values(
                    claim=None, lease_until=None, **values))
                if done.rowcount == 1 and not final:
                    requeued.append(job_id)
        return requeued

    def _write(self) -> Any:
        return write(self.engine)


def _after_lost_worker(attempts: int, max_attempts: int, cancelled: bool, now: float) -> dict[str, Any]:
    """What a job whose worker stopped heartbeating becomes: cancelled if someone asked, failed
    out of attempts, else queued again."""
    if cancelled:
        return {"status": "cancelled", "finished_at": now, "error": _text(CANCELLED)}
    final = attempts >= max_attempts
    values = {"status": "failed", "finished_at": now} if final else {"status": "queued", "run_after": now}
    return {**values, "error": _text(WorkerLost(attempts, final).to_dict())}


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


def _text(value: dict[str, Any] | None) -> str | None:
    return None if value is None else dumps(value)


def _job(row: Any) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        status=row["status"],
        payload=json.loads(row["payload"]),
        user=row["user_id"],
        result=json.loads(row["result"]) if row.get("result") else None,
        error=json.loads(row["error"]) if row.get("error") else None,
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        created_at=from_timestamp(row["created_at"]),
        started_at=from_timestamp(row.get("started_at")),
        finished_at=from_timestamp(row.get("finished_at")),
        cancel_requested_at=from_timestamp(row.get("cancel_requested_at")),
        cancel_requested_by=row.get("cancel_requested_by"),
    )
