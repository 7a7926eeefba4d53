"""Run one claimed job: heartbeat while it runs, then record what happened.

    succeeded   the kind returned a result and no error
    retry       a run error that may pass (model unreachable, rate limited, store locked)
                with attempts left: queued again after a backoff, the error kept on the job
    failed      any other error, or the last attempt: the error recorded, never retried
                (a user error or a spent budget will not change by trying again)
    lost        the claim was taken over (this worker was presumed dead); nothing recorded
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..config import JobSettings
from ..errors import AllModelsFailed, CircuitOpen, InputError, KeelError, ModelError, RetrievalError, RunError
from ._kinds import KINDS, Outcome
from ._model import Job
from ._store import JobStore

if TYPE_CHECKING:
    from ..app import App

__all__ = ["Ran", "is_retryable", "run_claimed", "worker_name"]

log = logging.getLogger("keel.jobs")


class JobCrashed(RunError):
    """An exception keel did not expect escaped the job (a bug): recorded, not retried."""

    code = "internal_error"


@dataclass(frozen=True)
class Ran:
    job: Job
    outcome: Literal["succeeded", "failed", "retry", "lost"]
    delay_s: float = 0.0


def worker_name(suffix: str = "") -> str:
    return f"{socket.gethostname()}:{os.getpid()}{':' + suffix if suffix else ''}"


def is_retryable(error: KeelError) -> bool:
    """Whether running the job again may succeed without anyone changing anything."""
    if isinstance(error, AllModelsFailed):
        return bool(error.errors) and all(is_retryable(e) for e in error.errors)
    if isinstance(error, ModelError):
        return error.retryable or isinstance(error, CircuitOpen)
    return isinstance(error, RetrievalError)


def run_claimed(app: App, store: JobStore, job: Job, token: str, settings: JobSettings) -> Ran:
    with _Heartbeat(store, job.id, token, settings.lease_s):
        result, error = _execute(app, job)
    if error is None:
        recorded = store.finish(job.id, token, result=result, error=None)
        ran = Ran(job, "succeeded")
    elif is_retryable(error) and job.attempts < job.max_attempts:
        delay = settings.retry_backoff_s * 2 ** (job.attempts - 1)
        recorded = store.retry(job.id, token, error=error.to_dict(), delay_s=delay)
        ran = Ran(job, "retry", delay)
    else:
        recorded = store.finish(job.id, token, result=result, error=error.to_dict())
        ran = Ran(job, "failed")
    if not recorded:
        log.warning("job %s: another worker took it over while this one ran it; its outcome is dropped", job.id)
        return Ran(job, "lost")
    log.info("job %s (%s) attempt %d: %s%s", job.id, job.kind, job.attempts, ran.outcome,
             f" ({error.code}: {error.message})" if error else "")
    return ran


def _execute(app: App, job: Job) -> Outcome:
    kind = KINDS.get(job.kind)
    if kind is None:  # a row written by a newer keel
        return None, InputError(f"this worker cannot run {job.kind!r} jobs", hint="upgrade the worker's keel")
    try:
        return kind.run(app, job.payload)
    except KeelError as exc:
        return None, exc
    except Exception as exc:
        log.exception("job %s (%s) raised", job.id, job.kind)
        return None, JobCrashed(f"the job raised {type(exc).__name__}: {exc}",
                                hint="a bug in keel or in a plugin: the worker's log has the traceback")


class _Heartbeat:
    """Renews the job's lease every third of ``lease_s`` while the job runs."""

    def __init__(self, store: JobStore, job_id: str, token: str, lease_s: float) -> None:
        self.store, self.job_id, self.token, self.lease_s = store, job_id, token, lease_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"keel-heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._done.wait(self.lease_s / 3):
            try:
                if not self.store.heartbeat(self.job_id, self.token, self.lease_s):
                    log.warning("job %s: the lease was lost (re-queued elsewhere); finishing anyway", self.job_id)
                    return
            except Exception:  # a database hiccup: the next beat may work, the lease has slack
                log.warning("job %s: heartbeat failed", self.job_id, exc_info=True)
