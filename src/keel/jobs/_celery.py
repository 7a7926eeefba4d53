"""The Celery backend: the broker (Redis or RabbitMQ) carries job ids; the job table stays the truth.

``submit`` writes the row, then sends the id. The task, in ``keel worker``, claims the
row exactly as an embedded worker would (so a redelivered or duplicated message finds
it running or done and is dropped), runs it with a heartbeat and records the outcome.
Cancelling needs nothing from Celery (no ``revoke``; remote control stays off): a job
cancelled while queued is done when its message arrives, so the message is dropped, and a
running job's heartbeat thread reads the cancel from the job table, as an embedded worker's does.
Messages are acknowledged late: a worker killed mid-job leaves its message unacked, and
the broker hands it to another worker (RabbitMQ at once; Redis after the visibility
timeout, which keel sets to ``jobs.lease_s``). Each ``keel worker`` also sweeps the table:
a running job whose lease ran out is queued and sent again, and so is a queued job no
worker took within ``lease_s`` (its message was lost with a broker restart).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..config import JobSettings
from ..errors import MissingDependency
from ._db import write
from ._errors import BrokerUnavailable
from ._runner import run_claimed, worker_name
from ._store import JobStore, table

if TYPE_CHECKING:
    from celery import Celery

    from ..app import App

__all__ = ["TASK", "CeleryBackend"]

TASK = "keel.jobs.run"
log = logging.getLogger("keel.jobs")
_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.5}


class CeleryBackend:
    def __init__(self, settings: JobSettings, store: JobStore) -> None:
        self.settings, self.store = settings, store
        self._celery: Celery | None = None
        self._guard = threading.Lock()

    @property
    def celery(self) -> Celery:
        with self._guard:
            if self._celery is None:
                self._celery = make_celery(self.settings)
            return self._celery

    def publish(self, job_id: str, *, countdown: float = 0.0) -> None:
        """Send the job id to the queue, or raise BrokerUnavailable."""
        try:
            self.celery.send_task(TASK, args=[job_id], queue=self.settings.queue, countdown=countdown or None,
                                  retry=True, retry_policy=_PUBLISH_RETRY)
        except Exception as exc:
            if _is_connection_error(exc):
                raise BrokerUnavailable(self.settings.broker_url, _describe(exc)) from None
            raise

    def check_broker(self) -> None:
        """Connect once, or raise BrokerUnavailable (before a worker would retry forever)."""
        try:
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=5)
        except Exception as exc:
            if _is_connection_error(exc):
                raise BrokerUnavailable(self.settings.broker_url, _describe(exc)) from None
            raise

    def sweep(self) -> list[str]:
        """Queue again and re-send jobs whose worker died, and queued jobs whose message was lost."""
        resend = self.store.reap() + self._stale_queued()
        for job_id in resend:
            log.warning("job %s: sent to the queue again", job_id)
            self.publish(job_id)
        return resend

    def _stale_queued(self) -> list[str]:
        now = time.time()
        stale = sa.and_(table.c.status == "queued", table.c.run_after < now - self.settings.lease_s)
        with self.store.engine.connect() as conn:
            ids = [row.id for row in conn.execute(sa.select(table.c.id).where(stale).limit(100))]
        taken = []
        for job_id in ids:  # bump run_after first, so two sweepers do not both re-send it
            with write(self.store.engine) as conn:
                if conn.execute(table.update().where(table.c.id == job_id, stale).values(run_after=now)).rowcount:
                    taken.append(job_id)
        return taken

    def work(self, app: App, *, concurrency: int, loglevel: str = "INFO") -> None:
        """Run a Celery worker in this process (blocks until it is shut down)."""
        self.check_broker()
        celery = self.celery
        settings, store = self.settings, self.store

        @celery.task(name=TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
        def run_job(job_id: str) -> str:
            claimed = store.claim(job_id, worker_name(threading.current_thread().name), settings.lease_s)
            if claimed is None:  # done, or running under a live lease: a duplicate message
                return "skipped"
            ran = run_claimed(app, store, *claimed, settings)
            if ran.outcome == "retry":
                self.publish(job_id, countdown=ran.delay_s)
            return ran.outcome

        stop = threading.Event()
        sweeper = threading.Thread(target=self._sweep_loop, args=(stop,), name="keel-job-sweeper", daemon=True)
        sweeper.start()
        pool = "solo" if concurrency <= 1 else "threads"
        argv = ["worker", f"--pool={pool}", f"--concurrency={max(1, concurrency)}", "-Q", settings.queue,
                f"--loglevel={loglevel}", "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-n", f"keel-{worker_name().replace(':', '-')}@{socket.gethostname()}"]
        try:
            celery.worker_main(argv)
        finally:
            stop.set()

    def _sweep_loop(self, stop: threading.Event) -> None:
        while not stop.wait(max(0.5, min(30.0, self.settings.lease_s / 2))):
            try:
                self.sweep()
            except Exception:
                log.warning("job sweep failed", exc_info=True)


def make_celery(settings: JobSettings) -> Celery:
    try:
        from celery import Celery
    except ModuleNotFoundError:
        raise MissingDependency("Celery (for jobs.backend: celery)", "scale") from None
    transport: dict[str, Any] = {"visibility_timeout": settings.lease_s}
    if settings.broker_url.startswith(("redis://", "rediss://")):
        transport["socket_connect_timeout"] = 5
    app = Celery("keel", broker=settings.broker_url, backend=settings.result_backend, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.queue,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_enable_remote_control=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        broker_transport_options={**transport, **settings.broker_transport_options},
    )
    return app


def _is_connection_error(exc: BaseException) -> bool:
    try:
        from kombu.exceptions import OperationalError
    except ModuleNotFoundError:  # pragma: no cover - kombu comes with celery
        return isinstance(exc, OSError)
    return isinstance(exc, (OperationalError, OSError, ConnectionError, TimeoutError))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
