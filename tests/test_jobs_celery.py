"""The Celery backend against the real brokers on this machine (Redis, RabbitMQ), with real
`keel worker` processes; the broker being down; and the job table on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keel import App
from keel.cli import main
from keel.errors import NotFound
from keel.jobs import BrokerUnavailable

from .redis_fixtures import redis_prefix

pytest.importorskip("celery", reason='needs the scale extra: pip install "keel[scale]"')

REDIS = "redis://127.0.0.1:6379/7"  # a db of its own, and a key prefix per test inside it
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"
KEEL = Path(sys.executable).with_name("keel")

_HANGING_WORKER = """
import pathlib, sys, time
from keel import App
from keel.models.fake import FunctionProvider

marker = pathlib.Path(sys.argv[1])

def hang(request):
    marker.write_text("mid-job")
    time.sleep(600)

App(providers={"scripted": FunctionProvider(hang)}).jobs.work(concurrency=1)
"""


def _config(broker: str, queue: str, transport: dict[str, Any] | None = None) -> str:
    return json.dumps({
        "models": {"scripted": {"provider": "fake", "replies": ["Hello from Celery."]}},
        "roles": {"chat": ["scripted"], "fast": ["scripted"]},
        "gateway": {"cache": {"enabled": False}},
        "jobs": {"backend": "celery", "broker_url": broker, "queue": queue, "lease_s": 2.0,
                 "broker_transport_options": transport or {}},
    })  # JSON is YAML


@pytest.fixture
def redis_workdir(tmp_path: Path, keel_home: Path) -> Iterator[Path]:
    with redis_prefix(REDIS) as prefix:
        (tmp_path / "keel.yaml").write_text(_config(REDIS, "jobs-" + prefix[:-1], {"global_keyprefix": prefix}))
        yield tmp_path


def _wait_done(app: App, job_id: str, worker: subprocess.Popen[str], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = app.jobs.get(job_id)
        if job.done:
            return job
        if worker.poll() is not None:
            raise AssertionError(f"the worker exited ({worker.returncode}):\n{worker.communicate()[0][-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not done after {timeout}s: {app.jobs.get(job_id).to_dict()}")


def _stop(worker: subprocess.Popen[str]) -> str:
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out[-3000:]
    return out


@pytest.mark.scale
def test_redis_carries_jobs_to_a_celery_keel_worker(redis_workdir: Path, spawn: Any) -> None:
    app = App(redis_workdir / "keel.yaml")
    jobs = [app.jobs.submit("ask", {"question": f"hello {n}"}, user="ann") for n in range(2)]
    worker = spawn([str(KEEL), "worker"], redis_workdir, merge_stderr=True)
    done = [_wait_done(app, job.id, worker) for job in jobs]
    assert [(j.status, j.attempts, (j.result or {}).get("answer")) for j in done] == [
        ("succeeded", 1, "Hello from Celery.")] * 2
    assert "keel.jobs.run" in _stop(worker)  # Celery's own log names the task it registered


@pytest.mark.scale
def test_a_job_survives_its_celery_worker_being_killed(redis_workdir: Path, spawn: Any) -> None:
    app = App(redis_workdir / "keel.yaml")
    job = app.jobs.submit("ask", {"question": "hello there"})
    marker = redis_workdir / "mid-job"
    first = spawn([sys.executable, "-c", _HANGING_WORKER, str(marker)], redis_workdir, merge_stderr=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0][-3000:]
        time.sleep(0.1)
    assert (app.jobs.get(job.id).status, app.jobs.get(job.id).attempts) == ("running", 1)
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(30) == -signal.SIGKILL

    second = spawn([str(KEEL), "worker"], redis_workdir, merge_stderr=True)
    done = _wait_done(app, job.id, second)
    assert (done.status, done.attempts, done.error) == ("succeeded", 2, None)
    assert (done.result or {})["answer"] == "Hello from Celery."
    _stop(second)


@pytest.mark.scale
def test_rabbitmq_carries_jobs_to_a_celery_keel_worker(tmp_path: Path, keel_home: Path, spawn: Any) -> None:
    from kombu import Connection

    queue = f"keel-test-{uuid.uuid4().hex[:8]}"
    (tmp_path / "keel.yaml").write_text(_config(RABBITMQ, queue))
    try:
        app = App(tmp_path / "keel.yaml")
        job = app.jobs.submit("ask", {"question": "hello rabbit"})
        worker = spawn([str(KEEL), "worker", "--concurrency", "2"], tmp_path, merge_stderr=True)  # the threads pool
        done = _wait_done(app, job.id, worker)
        assert (done.status, done.attempts, (done.result or {}).get("answer")) == ("succeeded", 1,
                                                                                   "Hello from Celery.")
        _stop(worker)
    finally:
        with Connection(RABBITMQ) as conn:
            channel = conn.default_channel
            channel.queue_delete(queue)
            channel.exchange_delete(queue)


@pytest.mark.parametrize(
    ("broker", "what_to_do"),
    [("redis://127.0.0.1:1/0", "start Redis"), ("amqp://guest:secret@127.0.0.1:1//", "start RabbitMQ")],
)
def test_a_broker_that_is_down_is_a_clear_error_and_leaves_no_job(tmp_path: Path, keel_home: Path, broker: str,
                                                                  what_to_do: str) -> None:
    app = App(models={"m": {"provider": "fake"}}, roles={"chat": ["m"], "fast": ["m"]},
              jobs={"backend": "celery", "broker_url": broker})
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        app.jobs.submit("ask", {"question": "hello"})
    assert time.monotonic() - started < 30
    error = caught.value
    assert error.to_dict() == {"error": "broker_unavailable", "message": error.message, "hint": error.hint}
    assert error.message.startswith(f"the job broker at {broker.replace('secret', '***')} cannot be reached")
    assert what_to_do in (error.hint or "") and "jobs.backend: embedded" in (error.hint or "")
    assert "secret" not in str(error) and error.http_status == 503
    assert app.jobs.list() == []


def test_keel_worker_says_the_broker_is_down(tmp_path: Path, keel_home: Path, capsys: Any, monkeypatch: Any) -> None:
    (tmp_path / "keel.yaml").write_text(_config("redis://127.0.0.1:1/0", "keel.jobs"))
    monkeypatch.setattr(sys, "argv", ["keel", "worker"])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert "error: the job broker at redis://127.0.0.1:1/0 cannot be reached" in err
    assert "what to do: start Redis (redis-server), fix jobs.broker_url, or set jobs.backend: embedded" in err


@pytest.mark.scale
def test_the_job_table_on_postgresql(pg_url: str) -> None:
    from keel.jobs._embedded import WorkerPool
    from keel.models.fake import FunctionProvider

    app = App(providers={"m": FunctionProvider(lambda request: "Hello from PostgreSQL.")},
              models={"m": {"provider": "fake"}}, roles={"chat": ["m"], "fast": ["m"]},
              telemetry={"database_url": pg_url}, jobs={"lease_s": 0.3, "retry_backoff_s": 0})
    assert app.jobs.store.engine.dialect.name == "postgresql"
    ids = {app.jobs.submit("ask", {"question": f"hello {n}"}).id for n in range(6)}

    pool = WorkerPool(app, app.jobs.store, app.settings.jobs, threads=1)

    def drain(name: str) -> None:
        while pool.work_one(name):
            pass

    workers = [threading.Thread(target=drain, args=(f"pg-{n}",)) for n in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    done = app.jobs.list()
    assert {j.id for j in done} == ids
    assert {(j.status, j.attempts, (j.result or {}).get("answer")) for j in done} == {
        ("succeeded", 1, "Hello from PostgreSQL.")}

    lost = app.jobs.submit("ask", {"question": "hello again"})
    claimed = app.jobs.store.claim_next("dead", lease_s=0.3)
    assert claimed and claimed[0].id == lost.id
    time.sleep(0.5)
    assert app.jobs.store.reap() == [lost.id]
    requeued = app.jobs.get(lost.id)
    assert (requeued.status, requeued.error and requeued.error["error"]) == ("queued", "worker_lost")
    with pytest.raises(NotFound, match="no job with id 'job_missing'"):
        app.jobs.get("job_missing")


def test_burst_is_refused_with_celery(tmp_path: Path, keel_home: Path, capsys: Any, monkeypatch: Any) -> None:
    (tmp_path / "keel.yaml").write_text(_config("redis://127.0.0.1:1/0", "keel.jobs"))
    monkeypatch.setattr(sys, "argv", ["keel", "worker", "--burst"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    assert "error: --burst works with the embedded backend only" in capsys.readouterr().err
