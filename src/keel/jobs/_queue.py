"""``JobQueue``: what ``App.jobs`` returns. Submit, look up and list jobs; run workers."""

from __future__ import annotations

import builtins
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import NotFound
from ._celery import CeleryBackend
from ._db import database_url, open_engine
from ._embedded import WorkerPool
from ._kinds import validate
from ._model import Job
from ._store import JobStore

if TYPE_CHECKING:
    from ..app import App

__all__ = ["JobQueue"]


class JobQueue:
    """Background jobs over keel's job table (``jobs:`` settings).

    ``submit`` checks the payload and records the job; a worker runs it: the embedded
    backend's threads (``start()``, or ``keel worker`` in another process), or Celery
    workers (``keel worker`` with ``jobs.backend: celery``).
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.settings = app.settings.jobs
        self.store = JobStore(open_engine(database_url(app.settings)))
        self._celery = CeleryBackend(self.settings, self.store) if self.settings.backend == "celery" else None
        self._pool: WorkerPool | None = None
        self._guard = threading.Lock()

    @property
    def backend(self) -> str:
        return self.settings.backend

    # -- callers -------------------------------------------------------------------------

    def submit(self, kind: str, payload: dict[str, Any], *, user: str | None = None) -> Job:
        """Check ``payload`` for ``kind`` (InputError if wrong), record the job queued, hand it to a worker."""
        clean = validate(kind, payload, self.app.settings)
        if kind == "ask" and user is not None:
            clean["user"] = user  # the caller's identity (an API key's user) wins over the body's
        job = self.store.insert(kind, clean, user=user or clean.get("user"), max_attempts=self.settings.max_attempts)
        if self._celery is not None:
            try:
                self._celery.publish(job.id)
            except BaseException:
                self.store.delete(job.id)  # never accepted: no orphan row left queued
                raise
        elif self._pool is not None:
            self._pool.wake()
        return job

    def get(self, job_id: str) -> Job:
        """The job with this id, or NotFound."""
        return _found(job_id, self.store.get(job_id))

    def cancel(self, job_id: str, *, by: str | None = None) -> Job:
        """Cancel a job; ``by`` (who) is recorded on it. A queued job is ``cancelled`` at once and never
        runs. A running one stays ``running`` until its worker, which checks every ``jobs.cancel_check_s``,
        stops the run at its next step; then it is ``cancelled`` (``wait`` for that). Cancelling it again
        changes nothing. NotFound for an unknown id; JobFinished (HTTP 409) once it succeeded, failed or
        was cancelled."""
        return _found(job_id, self.store.cancel(job_id, by=by))

    def list(self, status: str | None = None, limit: int = 50) -> builtins.list[Job]:
        """The newest ``limit`` jobs, optionally only those in ``status``."""
        return self.store.list(status, limit)

    def wait(self, job_id: str, *, timeout: float = 600.0, poll_s: float = 0.2) -> Job:
        """Block until the job succeeded, failed or was cancelled (or ``timeout`` passed); return it as it is then."""
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while not job.done and time.monotonic() < deadline:
            time.sleep(poll_s)
            job = self.get(job_id)
        return job

    # -- workers -------------------------------------------------------------------------

    def start(self, threads: int | None = None) -> bool:
        """Start this process's embedded worker threads (``jobs.workers``) once; True if they run.

        A server calls this at startup. With the Celery backend, or ``jobs.workers: 0``, it does
        nothing: ``keel worker`` processes run the jobs."""
        n = self.settings.workers if threads is None else threads
        if self._celery is not None or n <= 0:
            return False
        with self._guard:
            if self._pool is None:
                self._pool = WorkerPool(self.app, self.store, self.settings, threads=n)
            self._pool.start()
        return True

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the threads ``start`` began; a job still running after ``timeout`` is resumed
        elsewhere once its lease runs out."""
        with self._guard:
            pool = self._pool
        if pool is not None:
            pool.stop(timeout)

    def work(self, *, concurrency: int | None = None, burst: bool = False,
             stop: threading.Event | None = None) -> int:
        """Run workers in the foreground (``keel worker``); returns how many jobs this process ran.

        Embedded: until ``stop`` is set, or with ``burst`` until no job is queued or running.
        Celery: a Celery worker on ``jobs.queue`` until it is shut down (SIGTERM, Ctrl-C)."""
        n = max(1, concurrency if concurrency is not None else self.settings.workers)
        if self._celery is not None:
            self._celery.work(self.app, concurrency=n)
            return 0
        pool = WorkerPool(self.app, self.store, self.settings, threads=n)
        pool.run(burst=burst, stop=stop)
        return pool.ran

    def check(self) -> None:
        """Raise BrokerUnavailable when the Celery broker cannot be reached (no-op when embedded)."""
        if self._celery is not None:
            self._celery.check_broker()


def _found(job_id: str, job: Job | None) -> Job:
    if job is None:
        raise NotFound(f"no job with id {job_id!r}", hint="`keel jobs list` shows the recent jobs")
    return job
