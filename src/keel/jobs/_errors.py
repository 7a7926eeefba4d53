"""The errors only jobs raise, placed in keel's tree (``keel.errors``)::

    RunError
    ├── BrokerUnavailable   the Celery broker (Redis, RabbitMQ) cannot be reached    exit 1, HTTP 503
    └── WorkerLost          the worker running a job died before it finished      (recorded on the job)
"""

from __future__ import annotations

from ..errors import RunError

__all__ = ["BrokerUnavailable", "WorkerLost"]


class BrokerUnavailable(RunError):
    http_status = 503
    code = "broker_unavailable"

    def __init__(self, url: str, detail: str) -> None:
        scheme = url.split(":", 1)[0]
        start = {"amqp": "start RabbitMQ", "pyamqp": "start RabbitMQ"}.get(scheme, "start Redis (redis-server)")
        super().__init__(
            f"the job broker at {_redact(url)} cannot be reached: {detail}",
            hint=f"{start}, fix jobs.broker_url, or set jobs.backend: embedded in keel.yaml "
                 "(no broker needed)",
        )
        self.url = url


class WorkerLost(RunError):
    code = "worker_lost"

    def __init__(self, attempts: int, final: bool) -> None:
        then = (f"after {attempts} attempt{'s' if attempts != 1 else ''} the job is failed"
                if final else "the job was queued again")
        super().__init__(
            f"the worker running this job stopped heartbeating (killed, crashed or cut off); {then}",
            hint="check the worker's log; a job that kills its worker every time needs a smaller input"
                 if final else None,
        )


def _redact(url: str) -> str:
    """The URL without its password."""
    head, sep, tail = url.rpartition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, creds = head.partition("://")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}" if ":" in creds else url
