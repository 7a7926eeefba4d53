"""Background jobs: ask, ingest and extract, run by workers and recorded in one SQL table.

    app = keel.App()
    job = app.jobs.submit("ask", {"question": "What does yield do?"})
    app.jobs.get(job.id).to_dict()   # {"id", "kind", "status", "result", "error", "attempts", ...}
    app.jobs.cancel(job.id, by="ann")  # queued: cancelled now; running: its worker stops the run

Two backends (``jobs.backend``): ``embedded`` (worker threads polling the table: a durable
SQLite queue by default) and ``celery`` (Redis or RabbitMQ carries job ids to ``keel worker``).
Either way the job table is the source of truth; see docs/jobs.md.
"""

from ._errors import BrokerUnavailable, JobFinished, WorkerLost
from ._model import FINISHED, STATUSES, Job, JobStatus
from ._queue import JobQueue
from ._runner import is_retryable

__all__ = ["BrokerUnavailable", "FINISHED", "Job", "JobFinished", "JobQueue", "JobStatus", "STATUSES", "WorkerLost",
           "is_retryable"]
