"""The embedded backend: worker threads that poll the job table.

In a server they run beside the requests (``App.jobs.start()``); ``keel worker`` runs the
same loop in its own process, as many as you like, on the same database. A job survives
any of them dying: its lease runs out and the next poll anywhere takes it again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from ..config import JobSettings
from ._runner import run_claimed, worker_name
from ._store import JobStore

if TYPE_CHECKING:
    from ..app import App

__all__ = ["WorkerPool"]

log = logging.getLogger("keel.jobs")


class WorkerPool:
    """``threads`` workers over one job store; ``start()``, then ``stop()`` or ``run()`` in the foreground."""

    def __init__(self, app: App, store: JobStore, settings: JobSettings, *, threads: int) -> None:
        self.app, self.store, self.settings = app, store, settings
        self.threads = threads
        #: jobs this pool ran to an outcome (succeeded, failed, retry or lost)
        self.ran = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._busy = 0
        self._last_reap = 0.0
        self._workers: list[threading.Thread] = []

    @property
    def running(self) -> bool:
        return any(w.is_alive() for w in self._workers)

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._workers = [threading.Thread(target=self._loop, args=(n,), name=f"keel-job-worker-{n}", daemon=True)
                         for n in range(self.threads)]
        for worker in self._workers:
            worker.start()

    def wake(self) -> None:
        """A job was just submitted in this process: look now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Take no new job; wait up to ``timeout`` for the running ones to finish."""
        self._stop.set()
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def run(self, *, burst: bool = False, stop: threading.Event | None = None) -> None:
        """Work in the foreground until ``stop`` is set or, with ``burst``, until no job is left."""
        stop = stop or threading.Event()
        self.start()
        try:
            while not stop.wait(self.settings.poll_s):
                if burst and self._drained():
                    break
        finally:
            self.stop()

    def _drained(self) -> bool:
        counts = self.store.counts()
        with self._lock:
            return self._busy == 0 and counts["queued"] == 0 and counts["running"] == 0

    def _loop(self, n: int) -> None:
        name = worker_name(str(n))
        while not self._stop.is_set():
            try:
                worked = self.work_one(name)
            except Exception:  # the database went away for a moment: log it, keep polling
                log.exception("job worker %s: polling failed", name)
                worked = False
            if not worked:
                self._wake.wait(self.settings.poll_s)
                self._wake.clear()

    def work_one(self, name: str) -> bool:
        """Claim one runnable job and run it; False when there was none."""
        self._maybe_reap()
        with self._lock:
            self._busy += 1
        try:
            claimed = self.store.claim_next(name, self.settings.lease_s)
            if claimed is None:
                return False
            run_claimed(self.app, self.store, *claimed, self.settings)
            with self._lock:
                self.ran += 1
            return True
        finally:
            with self._lock:
                self._busy -= 1

    def _maybe_reap(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last_reap < min(1.0, self.settings.lease_s / 4):
                return
            self._last_reap = now
        for job_id in self.store.reap():
            log.warning("job %s: its worker stopped heartbeating; queued again", job_id)
