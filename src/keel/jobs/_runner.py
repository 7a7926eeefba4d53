"""Run one claimed job: heartbeat while it runs, then record what happened.

    succeeded   the kind returned a result and no error
    retry       a run error that may pass (model unreachable, rate limited, store locked)
                with attempts left: queued again after a backoff, the error kept on the job
    failed      any other error, or the last attempt: the error recorded, never retried
                (a user error or a spent budget will not change by trying again)
    cancelled   someone cancelled the job while it ran: the heartbeat thread, which reads the
                job's row every ``cancel_check_s``, set the run's cancel token and the run
                stopped at its next node, model call, tool call or ingested file (an attempt
                that ended in a retryable error is not retried either)
    lost        the claim was taken over (this worker was presumed dead); nothing recorded

A run that ended before its worker noticed the cancel keeps its outcome (succeeded or failed).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .._cancel import CancelToken, current
from ..config import JobSettings
from ..errors import (
    AllModelsFailed,
    Cancelled,
    CircuitOpen,
    InputError,
    KeelError,
    ModelError,
    RetrievalError,
    RunError,
)
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
    outcome: Literal["succeeded", "failed", "retry", "cancelled", "lost"]
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
    cancel = CancelToken()
    with _Heartbeat(store, job.id, token, settings, cancel):
        result, error = _execute(app, job, cancel)
    ran, recorded = _record(store, job, token, settings, result, error)
    if not recorded:
        log.warning("job %s: another worker took it over while this one ran it; its outcome is dropped", job.id)
        return Ran(job, "lost")
    log.info("job %s (%s) attempt %d: %s%s", job.id, job.kind, job.attempts, ran.outcome,
             f" ({error.code}: {error.message})" if error else "")
    return ran


def _record(store: JobStore, job: Job, token: str, settings: JobSettings, result: dict[str, Any] | None,
            error: KeelError | None) -> tuple[Ran, bool]:
    """Write the attempt's outcome; whether this worker's claim was still the job's."""
    if error is None:
        return Ran(job, "succeeded"), store.finish(job.id, token, result=result, error=None)
    if isinstance(error, Cancelled):
        return Ran(job, "cancelled"), store.finish_cancelled(job.id, token, result=result)
    if is_retryable(error) and job.attempts < job.max_attempts:
        delay = settings.retry_backoff_s * 2 ** (job.attempts - 1)
        if store.retry(job.id, token, error=error.to_dict(), delay_s=delay):
            return Ran(job, "retry", delay), True
        # not queued again: it was cancelled meanwhile (or taken over, and then nothing is recorded)
        return Ran(job, "cancelled"), store.finish_cancelled(job.id, token, result=result)
    return Ran(job, "failed"), store.finish(job.id, token, result=result, error=error.to_dict())


def _execute(app: App, job: Job, cancel: CancelToken) -> Outcome:
    kind = KINDS.get(job.kind)
    if kind is None:  # a row written by a newer keel
        return None, InputError(f"this worker cannot run {job.kind!r} jobs", hint="upgrade the worker's keel")
    bound = current.set(cancel)  # model calls outside the graph (extract) check it too
    try:
        return kind.run(app, job.payload, cancel)
    except KeelError as exc:
        return None, exc
    except Exception as exc:
        log.exception("job %s (%s) raised", job.id, job.kind)
        return None, JobCrashed(f"the job raised {type(exc).__name__}: {exc}",
                                hint="a bug in keel or in a plugin: the worker's log has the traceback")
    finally:
        current.reset(bound)


class _Heartbeat:
    """While the job runs: renews its lease every third of ``lease_s``, and reads every
    ``cancel_check_s`` whether someone cancelled it, then sets the run's ``cancel`` token."""

    def __init__(self, store: JobStore, job_id: str, token: str, settings: JobSettings,
                 cancel: CancelToken) -> None:
        self.store, self.job_id, self.token, self.cancel = store, job_id, token, cancel
        self.lease_s = settings.lease_s
        self.check_s = min(settings.lease_s / 3, settings.cancel_check_s)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"keel-heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        renewed = time.monotonic()
        while True:  # the first check at once: a cancel may have come as the job was claimed
            try:
                self._check_cancelled()
                if time.monotonic() - renewed >= self.lease_s / 3 - self.check_s / 2:  # a wait may end a hair early
                    renewed = time.monotonic()
                    if not self.store.heartbeat(self.job_id, self.token, self.lease_s):
                        log.warning("job %s: the lease was lost (re-queued elsewhere); finishing anyway", self.job_id)
                        return
            except Exception:  # a database hiccup: the next beat may work, the lease has slack
                log.warning("job %s: heartbeat failed", self.job_id, exc_info=True)
            if self._done.wait(self.check_s):
                return

    def _check_cancelled(self) -> None:
        if not self.cancel.cancelled and self.store.cancel_requested(self.job_id):
            log.info("job %s: cancelled; its run stops at its next step", self.job_id)
            self.cancel.cancel("job_cancelled")
