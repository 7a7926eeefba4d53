"""Cancelling a job: a queued one never runs, a running one's worker stops its run (embedded threads, a
`keel worker` process, Celery on the real Redis), a finished one is a 409; races with a worker claiming
or finishing the same job leave one consistent state; `keel jobs cancel` and POST /v1/jobs/{id}/cancel."""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from keel import App
from keel._cancel import current
from keel.cli import app as cli
from keel.errors import JobFinished, ModelUnavailable, NotFound
from keel.jobs import Job
from keel.jobs._store import JobStore
from keel.server import KeyStore, create_app

from .redis_fixtures import redis_prefix
from .server_fixtures import auth
from .test_jobs_embedded import ISO, REPLY, IsStr, _app, _drain

CANCELLED = {"error": "cancelled", "message": "the run was cancelled: someone cancelled its job",
             "hint": "submit the job again if its result is still wanted"}


class Blocking:
    """A model whose first call waits, inside the call, until the run's cancel token is set (so the
    worker's heartbeat must have read the cancel), then answers; later calls answer at once."""

    def __init__(self, then: Any = REPLY) -> None:
        self.then = then
        self.started = threading.Event()
        self.calls = 0

    def __call__(self, request: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            return REPLY
        token = current.get()
        assert token is not None, "a job's model call runs with the job's cancel token current"
        self.started.set()
        deadline = time.monotonic() + 60
        while not token.cancelled:
            assert time.monotonic() < deadline, "the worker never noticed the cancel"
            time.sleep(0.01)
        if isinstance(self.then, BaseException):
            raise self.then
        return self.then


def _wait_until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def _events(app: App, event: str) -> list[dict[str, Any]]:
    app.telemetry.flush()
    return [r.data for r in app.telemetry.audit.records() if r.event == event]


@pytest.fixture
def running() -> Iterator[Callable[..., tuple[App, Blocking, Job]]]:
    """``running(then=...)``: an App whose worker threads run an ask job that sits in its first model call."""
    apps: list[App] = []

    def start(**kw: Any) -> tuple[App, Blocking, Job]:
        model = Blocking(**kw)
        app = _app(model, jobs={"cancel_check_s": 0.05})
        apps.append(app)
        job = app.jobs.submit("ask", {"question": "Who created Python?"}, user="ann")
        app.jobs.start()
        assert model.started.wait(60), app.jobs.get(job.id)
        return app, model, job

    yield start
    for app in apps:
        app.jobs.stop(30)


# -- a queued job ---------------------------------------------------------------------------------


def test_a_queued_job_is_cancelled_at_once_and_never_runs() -> None:
    model = Blocking()
    app = _app(model)
    job = app.jobs.submit("ask", {"question": "Who created Python?"}, user="ann")
    cancelled = app.jobs.cancel(job.id, by="bob")
    assert cancelled.to_dict() == {**job.to_dict(), "status": "cancelled", "error": CANCELLED, "finished_at": ISO,
                                   "cancel": {"requested_at": ISO, "by": "bob"}}
    assert app.jobs.get(job.id) == cancelled and cancelled.done
    assert _drain(app) == 0 and model.calls == 0
    assert app.jobs.store.claim(job.id, "celery-redelivery", 60) is None  # a late broker message finds it done
    assert [j.id for j in app.jobs.list("cancelled")] == [job.id]
    assert app.jobs.store.counts() == {"queued": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 1,
                                       "runnable": 0}


def test_a_job_queued_again_after_a_failed_attempt_is_cancelled_and_not_retried() -> None:
    app = _app(lambda request: ModelUnavailable("down", model="m"), jobs={"max_attempts": 3, "retry_backoff_s": 60})
    job = app.jobs.submit("ask", {"question": "Who created Python?"})
    assert _drain(app) == 1 and app.jobs.get(job.id).status == "queued"
    cancelled = app.jobs.cancel(job.id)
    assert (cancelled.status, cancelled.attempts, cancelled.error, cancelled.cancel_requested_by) == (
        "cancelled", 1, CANCELLED, None)
    assert _drain(app) == 0


# -- unhappy paths ----------------------------------------------------------------------------------


def test_an_unknown_job_is_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        _app().jobs.cancel("job_nope", by="ann")
    assert (caught.value.message, caught.value.http_status) == ("no job with id 'job_nope'", 404)


def test_a_finished_job_cannot_be_cancelled() -> None:
    app = _app()
    job = app.jobs.submit("ask", {"question": "Who created Python?"})
    assert _drain(app) == 1
    with pytest.raises(JobFinished) as caught:
        app.jobs.cancel(job.id, by="ann")
    error = caught.value
    assert (error.code, error.http_status, error.exit_code, error.status) == ("job_finished", 409, 2, "succeeded")
    assert error.message == IsStr(rf"job {job.id} already succeeded at {ISO.regex}; a finished job cannot be "
                                  "cancelled")
    assert error.hint == f"nothing to cancel: `keel jobs show {job.id}` (GET /v1/jobs/{job.id}) shows what it did"
    assert app.jobs.get(job.id).to_dict()["cancel"] is None  # nothing recorded


def test_cancelling_twice() -> None:
    app = _app()
    job = app.jobs.submit("ask", {"question": "Who created Python?"})
    first = app.jobs.cancel(job.id, by="ann")
    with pytest.raises(JobFinished) as caught:
        app.jobs.cancel(job.id, by="bob")
    assert caught.value.message == IsStr(rf"job {job.id} was already cancelled at {ISO.regex} by ann; .*")
    assert app.jobs.get(job.id) == first  # the first cancel stands


def test_cancelling_a_running_job_twice_keeps_the_first_request(running: Any) -> None:
    app, model, job = running()
    first = app.jobs.cancel(job.id, by="ann")
    try:
        again = app.jobs.cancel(job.id, by="bob")
    except JobFinished as stopped:  # its worker was quicker: it stopped the run in between
        assert stopped.message == IsStr(rf"job {job.id} was already cancelled at {ISO.regex} by ann; .*")
    else:
        assert (again.status, again.cancel_requested_by, again.cancel_requested_at) == (
            "running", "ann", first.cancel_requested_at)
    done = app.jobs.wait(job.id, timeout=60)
    assert (done.status, done.cancel_requested_by) == ("cancelled", "ann")


# -- a running job --------------------------------------------------------------------------------


def test_a_running_ask_job_stops_at_its_next_step_and_is_cancelled(running: Any) -> None:
    app, model, job = running()
    asked = app.jobs.cancel(job.id, by="ann")
    assert (asked.status, asked.to_dict()["cancel"]) == ("running", {"requested_at": ISO, "by": "ann"})
    done = app.jobs.wait(job.id, timeout=60)
    assert done.to_dict() == {**asked.to_dict(), "status": "cancelled", "error": CANCELLED, "result": done.result,
                              "finished_at": ISO}
    answer = done.result or {}
    assert (answer["status"], answer["answer"], answer["error"]) == ("stopped", "", CANCELLED)
    assert model.calls == 1  # the call in flight finished; nothing after it ran
    assert _events(app, "cancelled") == [{"thread_id": IsStr(), "reason": "job_cancelled", **CANCELLED,
                                          "config_hash": app.settings.fingerprint()}]


def test_a_retryable_error_of_a_cancelled_job_is_not_retried(running: Any) -> None:
    app, model, job = running(then=ModelUnavailable("the endpoint went away", model="m"))
    app.jobs.cancel(job.id, by="ann")
    done = app.jobs.wait(job.id, timeout=60)
    assert (done.status, done.attempts, done.error) == ("cancelled", 1, CANCELLED)
    time.sleep(0.2)  # a retry would have been queued at once (retry_backoff_s: 0)
    assert app.jobs.get(job.id) == done and model.calls == 1


def test_an_extract_job_stops_before_its_next_model_call() -> None:
    model = Blocking(then="not JSON, so extract asks again")
    app = _app(model, jobs={"cancel_check_s": 0.05})
    job = app.jobs.submit("extract", {"text": "Ann is 41.", "schema": {
        "type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}})
    app.jobs.start()
    try:
        assert model.started.wait(60)
        app.jobs.cancel(job.id)
        done = app.jobs.wait(job.id, timeout=60)
    finally:
        app.jobs.stop(30)
    assert (done.status, done.error, done.result, model.calls) == ("cancelled", CANCELLED, None, 1)


def test_an_ingest_job_stops_after_the_file_it_is_storing(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(3):
        (docs / f"{n}.md").write_text(f"# Note {n}\nkeel note number {n}.\n")
    app = _app()
    job = app.jobs.submit("ingest", {"paths": [str(docs)], "kb": "notes"})
    claimed = app.jobs.store.claim_next("test", 60)
    assert claimed is not None
    app.jobs.cancel(job.id)  # before the worker starts: its first check finds it

    from keel.jobs._runner import run_claimed

    ran = run_claimed(app, app.jobs.store, *claimed, app.settings.jobs.model_copy(update={"cancel_check_s": 0.01}))
    assert ran.outcome == "cancelled"
    done = app.jobs.get(job.id)
    assert (done.status, done.error) == ("cancelled", CANCELLED)


def test_a_cancelled_job_whose_worker_died_is_cancelled_not_queued_again() -> None:
    app = _app()
    store = app.jobs.store
    job = app.jobs.submit("ask", {"question": "Who created Python?"})
    assert store.claim_next("doomed", lease_s=0.05) is not None
    app.jobs.cancel(job.id, by="ann")
    time.sleep(0.1)  # the lease runs out with nobody heartbeating
    assert store.claim(job.id, "celery-redelivery", 60) is None  # a redelivered message does not take it
    assert store.reap() == []
    done = app.jobs.get(job.id)
    assert (done.status, done.attempts, done.error, done.cancel_requested_by) == ("cancelled", 1, CANCELLED, "ann")


def test_a_run_that_ends_before_its_worker_notices_keeps_its_outcome() -> None:
    app = _app()
    store = app.jobs.store
    job = app.jobs.submit("ask", {"question": "Who created Python?"})
    _, token = store.claim_next("w", 60) or (None, "")
    app.jobs.cancel(job.id, by="ann")
    assert store.finish(job.id, token, result={"answer": "done"}, error=None)
    done = app.jobs.get(job.id)
    assert (done.status, done.result, done.cancel_requested_by) == ("succeeded", {"answer": "done"}, "ann")


# -- races ------------------------------------------------------------------------------------------


def _race(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
    """Both at the same moment, from two threads (each its own database connection)."""
    barrier = threading.Barrier(2)
    out: list[Any] = [None, None]

    def go(i: int, fn: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            out[i] = fn()
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=go, args=(i, fn)) for i, fn in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out[0], out[1]


def _claim_vs_cancel(app: App, claim: Callable[[JobStore, str], Any], rounds: int) -> dict[str, int]:
    store, seen = app.jobs.store, {"claim first": 0, "cancel first": 0}
    for n in range(rounds):
        job = app.jobs.submit("ask", {"question": f"question {n}"})
        claimed, cancelled = _race(functools.partial(claim, store, job.id), functools.partial(store.cancel, job.id,
                                                                                                by="ann"))
        assert isinstance(cancelled, Job), cancelled
        final = store.get(job.id)
        assert final is not None
        if claimed is None:  # the cancel came first: the claim found nothing to take
            assert (final.status, final.attempts, cancelled.status) == ("cancelled", 0, "cancelled")
            seen["cancel first"] += 1
            continue
        _, token = claimed  # the claim came first: the job runs, its worker is asked to stop it
        assert (final.status, final.attempts, cancelled.status) == ("running", 1, "running")
        assert store.cancel_requested(job.id)
        assert not store.retry(job.id, token, error={"error": "x"}, delay_s=0)  # never queued again
        assert store.finish_cancelled(job.id, token, result=None)
        assert store.get(job.id).status == "cancelled"  # type: ignore[union-attr]
        seen["claim first"] += 1
    return seen


def _next(store: JobStore, job_id: str) -> Any:
    return store.claim_next("racer", 60)


def _by_id(store: JobStore, job_id: str) -> Any:
    return store.claim(job_id, "racer", 60)


@pytest.mark.parametrize("claim", [_next, _by_id], ids=["embedded-poll", "celery-by-id"])
def test_cancel_racing_a_claim_leaves_one_consistent_state(claim: Any) -> None:
    seen = _claim_vs_cancel(_app(), claim, rounds=25)
    assert sum(seen.values()) == 25


@pytest.mark.scale
@pytest.mark.parametrize("claim", [_next, _by_id], ids=["embedded-poll", "celery-by-id"])
def test_cancel_racing_a_claim_on_postgresql(pg_url: str, claim: Any) -> None:
    seen = _claim_vs_cancel(_app(telemetry={"database_url": pg_url}), claim, rounds=25)
    assert sum(seen.values()) == 25


def test_cancel_racing_the_finish_of_a_run() -> None:
    app = _app()
    store = app.jobs.store
    for n in range(20):
        job = app.jobs.submit("ask", {"question": f"question {n}"})
        _, token = store.claim_next("w", 60) or (None, "")
        finished, cancelled = _race(functools.partial(store.finish, job.id, token, result={"n": 1}, error=None),
                                    functools.partial(store.cancel, job.id, by="ann"))
        final = store.get(job.id)
        assert finished is True and final is not None and final.status == "succeeded"
        if isinstance(cancelled, JobFinished):  # the finish came first
            assert final.cancel_requested_at is None
        else:  # the cancel came first, too late to stop anything: the outcome stands, the request is recorded
            assert isinstance(cancelled, Job) and cancelled.status == "running" and final.cancel_requested_by == "ann"


# -- across processes: a `keel worker`-like process on the same job table --------------------------------

_WORKER = """
import pathlib, sys, time
from keel import App
from keel._cancel import current
from keel.models.fake import FunctionProvider

marker = pathlib.Path(sys.argv[1])

def wait_for_cancel(request):
    marker.write_text("mid-job")
    token = current.get()
    while not token.cancelled:  # set by this process's heartbeat thread once it reads the cancel
        time.sleep(0.01)
    return "too late"

App(providers={"scripted": FunctionProvider(wait_for_cancel)}).jobs.work(concurrency=1)
"""


def _config(**jobs: Any) -> str:
    return json.dumps({  # JSON is YAML
        "models": {"scripted": {"provider": "fake", "replies": ["Hello."]}},
        "roles": {"chat": ["scripted"], "fast": ["scripted"]},
        "gateway": {"cache": {"enabled": False}},
        "jobs": {"lease_s": 30.0, "poll_s": 0.1, "cancel_check_s": 0.1, **jobs},
    })


def _cancel_in_another_process(app: App, spawn: Any, workdir: Path) -> Job:
    job = app.jobs.submit("ask", {"question": "hello there"}, user="ann")
    marker = workdir / "mid-job"
    worker = spawn([sys.executable, "-c", _WORKER, str(marker)], workdir, merge_stderr=True)
    _wait_until(lambda: marker.exists() or worker.poll() is not None, 120, "the worker to start the job")
    assert worker.poll() is None, worker.communicate()[0][-3000:]
    assert app.jobs.cancel(job.id, by="ann").status == "running"
    done = app.jobs.wait(job.id, timeout=120)
    assert worker.poll() is None, worker.communicate()[0][-3000:]  # the worker goes on to the next job
    return done


def test_a_job_running_in_another_process_is_stopped_there(tmp_path: Path, keel_home: Path, spawn: Any) -> None:
    (tmp_path / "keel.yaml").write_text(_config())
    app = App(tmp_path / "keel.yaml")
    done = _cancel_in_another_process(app, spawn, tmp_path)
    assert (done.status, done.attempts, done.error, done.cancel_requested_by) == ("cancelled", 1, CANCELLED, "ann")
    assert (done.result or {})["status"] == "stopped"
    written = _wait_until(lambda: _events(app, "cancelled"), 30, "the worker's audit record")  # its writer batches
    assert [r["reason"] for r in written] == ["job_cancelled"]


# -- Celery on the real Redis -----------------------------------------------------------------------------------

REDIS = "redis://127.0.0.1:6379/7"
KEEL = Path(sys.executable).with_name("keel")


@pytest.fixture
def celery_workdir(tmp_path: Path, keel_home: Path) -> Iterator[Path]:
    pytest.importorskip("celery", reason='needs the scale extra: pip install "keel[scale]"')
    with redis_prefix(REDIS) as prefix:
        (tmp_path / "keel.yaml").write_text(_config(backend="celery", broker_url=REDIS, queue="jobs-" + prefix[:-1],
                                                    broker_transport_options={"global_keyprefix": prefix}))
        yield tmp_path


@pytest.mark.scale
def test_celery_a_queued_job_cancelled_is_dropped_by_the_worker(celery_workdir: Path, spawn: Any) -> None:
    app = App(celery_workdir / "keel.yaml")
    dropped = app.jobs.submit("ask", {"question": "never mind"})
    assert app.jobs.cancel(dropped.id, by="ann").status == "cancelled"  # its message is still in Redis
    worker = spawn([str(KEEL), "worker"], celery_workdir, merge_stderr=True)
    after = app.jobs.submit("ask", {"question": "hello"})
    done = app.jobs.wait(after.id, timeout=120)
    assert (done.status, (done.result or {}).get("answer")) == ("succeeded", "Hello."), worker.poll()
    assert app.jobs.get(dropped.id).status == "cancelled"  # the worker took its message and dropped it


@pytest.mark.scale
def test_celery_a_running_job_is_stopped_by_its_worker(celery_workdir: Path, spawn: Any) -> None:
    app = App(celery_workdir / "keel.yaml")
    done = _cancel_in_another_process(app, spawn, celery_workdir)
    assert (done.status, done.attempts, done.error, done.cancel_requested_by) == ("cancelled", 1, CANCELLED, "ann")


# -- the command line and the HTTP API ---------------------------------------------------------------------------


def test_keel_jobs_cancel(tmp_path: Path, keel_home: Path) -> None:
    (tmp_path / "keel.yaml").write_text(_config())
    app = App(tmp_path / "keel.yaml")
    job = app.jobs.submit("ask", {"question": "hello"})
    runner = CliRunner()
    out = runner.invoke(cli, ["jobs", "cancel", job.id, "--by", "ann", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {**app.jobs.get(job.id).to_dict(), "status": "cancelled",
                                      "cancel": {"requested_at": ISO, "by": "ann"}}
    human = runner.invoke(cli, ["jobs", "show", job.id])
    assert "cancelled" in human.stdout and f"cancelled at {app.jobs.get(job.id).to_dict()['cancel']['requested_at']}"\
        " by ann" in human.stdout
    again = runner.invoke(cli, ["jobs", "cancel", job.id])
    assert isinstance(again.exception, JobFinished)  # keel's main() turns it into one line and exit 2
    assert [j["id"] for j in json.loads(runner.invoke(cli, ["jobs", "list", "--status", "cancelled",
                                                             "--json"]).stdout)] == [job.id]
    assert isinstance(runner.invoke(cli, ["jobs", "cancel", "job_nope"]).exception, NotFound)


def test_keel_jobs_cancel_exit_codes(tmp_path: Path, keel_home: Path, capsys: Any, monkeypatch: Any) -> None:
    from keel.cli import main

    (tmp_path / "keel.yaml").write_text(_config())
    job = App(tmp_path / "keel.yaml").jobs.submit("ask", {"question": "hello"})
    codes = []
    for args in (["jobs", "cancel", job.id], ["jobs", "cancel", job.id], ["jobs", "cancel", "job_nope"]):
        monkeypatch.setattr(sys, "argv", ["keel", *args])
        try:
            main()
            codes.append(0)
        except SystemExit as exc:
            codes.append(exc.code)
    assert codes == [0, 2, 2]
    err = capsys.readouterr().err
    assert f"error: job {job.id} was already cancelled at" in err and "error: no job with id 'job_nope'" in err


def test_post_cancel_over_http(workspace: Path, keys: KeyStore) -> None:
    _, ann = keys.create("ann")
    _, bob = keys.create("bob")
    _, ops = keys.create("ops", act_as_any=True)
    from .test_server_api import scripted_app

    with TestClient(create_app(scripted_app(), keys=keys, workers=False)) as client:
        jobs = [client.post("/v1/jobs", json={"kind": "ask", "payload": {"question": "hi"}}, headers=auth(ann)).json()
                for _ in range(2)]
        r = client.post(f"/v1/jobs/{jobs[0]['id']}/cancel", headers=auth(bob))
        assert (r.status_code, r.json()["error"]) == (403, "forbidden")
        assert r.json()["message"] == "the API key of 'bob' may not cancel a job of user 'ann'"

        r = client.post(f"/v1/jobs/{jobs[0]['id']}/cancel", headers=auth(ann))
        assert r.status_code == 200 and r.headers["location"] == f"/v1/jobs/{jobs[0]['id']}"
        assert r.json() == {**jobs[0], "status": "cancelled", "error": CANCELLED, "finished_at": ISO,
                            "cancel": {"requested_at": ISO, "by": "ann"}}
        assert client.get(f"/v1/jobs/{jobs[0]['id']}", headers=auth(ann)).json() == r.json()

        again = client.post(f"/v1/jobs/{jobs[0]['id']}/cancel", headers=auth(ann))
        assert (again.status_code, again.json()["error"]) == (409, "job_finished")
        assert again.json()["message"].startswith(f"job {jobs[0]['id']} was already cancelled at ")

        r = client.post(f"/v1/jobs/{jobs[1]['id']}/cancel", headers=auth(ops))  # an act-as-any key may
        assert (r.status_code, r.json()["cancel"]["by"]) == (200, "ops")

        missing = client.post("/v1/jobs/job_nope/cancel", headers=auth(ann))
        assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
        assert client.delete(f"/v1/jobs/{jobs[1]['id']}", headers=auth(ann)).status_code == 405


def test_post_cancel_of_a_running_job_is_accepted_and_it_ends_cancelled(workspace: Path, keys: KeyStore) -> None:
    from .test_server_api import scripted_app

    model = Blocking()
    app = scripted_app(jobs={"cancel_check_s": 0.05, "poll_s": 0.05})
    app.providers["scripted"].fn = model  # type: ignore[attr-defined]
    _, ann = keys.create("ann")
    with TestClient(create_app(app, keys=keys), headers=auth(ann)) as client:
        job = client.post("/v1/jobs", json={"kind": "ask", "payload": {"question": "What is Python?"}}).json()
        assert model.started.wait(60)
        r = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert (r.status_code, r.json()["status"], r.json()["cancel"]["by"]) == (202, "running", "ann")
        done = _wait_until(lambda: (j := client.get(r.headers["location"]).json())["status"] != "running" and j,
                           60, "the job to stop")
    assert (done["status"], done["error"], done["result"]["status"]) == ("cancelled", CANCELLED, "stopped")
