"""A liveness signal for ``keel worker``: a heartbeat file, fresh while the worker lives.

The worker touches the file every ``INTERVAL_S`` while its job threads (embedded)
or its process (Celery) are alive, and removes it when it stops.
``keel worker --check`` exits 0 when the file is younger than ``MAX_AGE_S``, else 1:
a cheap exec probe (no database, no broker: a liveness probe must not restart a
worker because a shared service is down; jobs survive a restart through their leases).

The file is per machine or container: ``<tmp>/keel-worker-<hash of the data dir>.heartbeat``,
so workers of different keel homes do not mix, and a volume shared by several
containers never carries another worker's heartbeat. Two workers of one home on one
machine share it: give each its own with ``--heartbeat``.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

__all__ = ["INTERVAL_S", "MAX_AGE_S", "Heartbeat", "check_heartbeat", "default_heartbeat_path", "job_threads_alive"]

INTERVAL_S = 10.0
MAX_AGE_S = 30.0
#: the embedded pool names its threads keel-job-worker-<n> (see _embedded.WorkerPool.start)
WORKER_THREAD_PREFIX = "keel-job-worker-"


def default_heartbeat_path(data_dir: Path) -> Path:
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"keel-worker-{digest}.heartbeat"


def job_threads_alive() -> bool:
    """Whether any embedded job worker thread of this process is running."""
    return any(t.name.startswith(WORKER_THREAD_PREFIX) and t.is_alive() for t in threading.enumerate())


class Heartbeat:
    """Touch ``path`` every ``interval_s`` while ``alive()``; remove it on exit."""

    def __init__(self, path: Path, *, interval_s: float = INTERVAL_S, alive: Callable[[], bool] = lambda: True):
        self.path = path
        self.interval_s = interval_s
        self.alive = alive
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="keel-worker-heartbeat", daemon=True)

    def _loop(self) -> None:
        touched = False
        while True:
            if self.alive():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.touch()
                touched = True
            if self._stop.wait(self.interval_s if touched else min(self.interval_s, 0.2)):  # soon after start
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)
        self.path.unlink(missing_ok=True)


def check_heartbeat(path: Path, max_age_s: float = MAX_AGE_S) -> tuple[bool, str]:
    """(healthy, why): the heartbeat file exists and is younger than ``max_age_s``."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False, f"no heartbeat at {path}: no keel worker runs here (or it has not started yet)"
    if age > max_age_s:
        return False, f"the heartbeat at {path} is {age:.0f}s old (over {max_age_s:g}s): the worker is stuck or gone"
    return True, f"the worker's heartbeat is {age:.0f}s old"
