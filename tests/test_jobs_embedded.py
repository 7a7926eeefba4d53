"""App.jobs with the embedded backend, in one process: submit, get, list, run, fail, retry, reap."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from keel import App
from keel.errors import AllModelsFailed, InputError, ModelRefused, ModelUnavailable, NotFound
from keel.graph import by_purpose
from keel.jobs import Job, is_retryable
from keel.knowledge.types import SearchHit
from keel.models.fake import FunctionProvider


class IsStr:
    """Equal to any string matching ``regex`` (whole-structure asserts with ids and times inside)."""

    def __init__(self, regex: str = ".*") -> None:
        self.regex = regex

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(self.regex, other, re.S) is not None

    def __repr__(self) -> str:
        return f"IsStr({self.regex!r})"


SOURCE = "Python is a programming language created by Guido van Rossum."
REPLY = "Python is a programming language created by Guido van Rossum [1]."
ISO = IsStr(regex=r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")


class _App(App):
    """The knowledge base is one fixed passage (the graph finds it through App.search)."""

    def search(self, query, *, kb=None, k=5, where=None, mode="hybrid"):  # type: ignore[no-untyped-def,override]
        return [SearchHit(id="py#0", doc_id="py", title="Python", uri="file:///py.md", text=SOURCE, score=0.8)]


def _app(fn: Any = None, **settings: Any) -> _App:
    provider = FunctionProvider(fn or by_purpose({"answer": [REPLY], "agent_step": [REPLY],
                                                  "route_judge": ['{"label": "chat", "why": "facts"}']}), name="m")
    defaults = {"models": {"m": {"provider": "fake"}}, "roles": {"chat": ["m"], "fast": ["m"]},
                "gateway": {"max_retries": 0, "cache": {"enabled": False}}}
    jobs = {"lease_s": 5.0, "poll_s": 0.05, "retry_backoff_s": 0.0, **settings.pop("jobs", {})}
    return _App(providers={"m": provider}, jobs=jobs, **{**defaults, **settings})


def _drain(app: App) -> int:
    """Run every runnable job in this thread; how many ran."""
    from keel.jobs._embedded import WorkerPool

    pool = WorkerPool(app, app.jobs.store, app.settings.jobs, threads=1)
    n = 0
    while pool.work_one("test"):
        n += 1
    return n


# -- submit, get, list ------------------------------------------------------------------


def test_a_submitted_ask_job_is_queued_then_answered_with_the_answer_json() -> None:
    app = _app()
    job = app.jobs.submit("ask", {"question": "Who created Python?"}, user="ann")
    assert job.to_dict() == {"id": IsStr(regex=r"job_[0-9a-f]{20}"), "kind": "ask", "status": "queued",
                             "result": None, "error": None, "attempts": 0, "created_at": ISO, "started_at": None,
                             "finished_at": None, "cancel": None}
    assert app.jobs.get(job.id) == job
    assert _drain(app) == 1

    done = app.jobs.get(job.id)
    assert done.to_dict() == {**job.to_dict(), "status": "succeeded", "attempts": 1, "result": done.result,
                              "started_at": ISO, "finished_at": ISO}
    result = done.result or {}
    assert (result["status"], result["answer"], result["models"]) == ("answered", REPLY, ["m"])
    assert set(result) >= {"route", "route_reason", "sources", "guardrail", "usage", "trace_id", "latency_ms"}
    assert done.payload == {"question": "Who created Python?", "user": "ann"} and done.user == "ann"
    assert done.started_at and done.finished_at and job.created_at <= done.started_at <= done.finished_at


def test_the_callers_user_wins_over_the_payloads() -> None:
    app = _app()
    job = app.jobs.submit("ask", {"question": "hi", "user": "mallory"}, user="ann")
    assert (job.payload["user"], job.user) == ("ann", "ann")
    assert app.jobs.submit("ask", {"question": "hi", "user": "bob"}).user == "bob"


def test_unknown_job_is_not_found_naming_the_id() -> None:
    app = _app()
    with pytest.raises(NotFound) as caught:
        app.jobs.get("job_nope")
    assert "job_nope" in caught.value.message and caught.value.http_status == 404


@pytest.mark.parametrize(
    ("kind", "payload", "message"),
    [
        ("summarise", {"question": "x"}, "unknown job kind 'summarise'"),
        ("ask", {}, "bad payload for a 'ask' job: question: Field required"),
        ("ask", {"question": "   "}, "bad payload for a 'ask' job: question: String should have at least 1 character"),
        ("ask", {"question": "hi", "temperature": 2}, "bad payload for a 'ask' job: temperature: Extra inputs"),
        ("ask", ["hi"], "the payload of a 'ask' job must be a JSON object, not list"),
        ("ask", {"question": "x" * 9000}, "the question is 9000 characters, over the limit of 8000"),
        ("ingest", {"paths": []}, "bad payload for a 'ingest' job: paths: List should have at least 1 item"),
        ("ingest", {"paths": "docs/"}, "bad payload for a 'ingest' job: paths: Input should be a valid list"),
        ("extract", {"text": "x", "schema": {"type": "string"}}, "schema: the schema must describe an object"),
        ("extract", {"text": "x", "schema": {"type": "object"}, "role": 3}, "role: Input should be a valid string"),
    ],
)
def test_bad_kinds_and_payloads_are_refused_at_submit_time(kind: str, payload: Any, message: str) -> None:
    app = _app()
    with pytest.raises(InputError) as caught:
        app.jobs.submit(kind, payload)
    assert message in str(caught.value)
    assert caught.value.exit_code == 2 and caught.value.hint
    assert app.jobs.list() == []


def test_list_is_newest_first_and_filters_by_status() -> None:
    app = _app()
    ids = [app.jobs.submit("ask", {"question": f"question {n}"}).id for n in range(3)]
    assert [j.id for j in app.jobs.list()] == ids[::-1]
    assert [j.id for j in app.jobs.list(limit=2)] == ids[:0:-1]
    app.jobs.work(burst=True)
    assert [j.id for j in app.jobs.list("succeeded")] == ids[::-1] and app.jobs.list("queued") == []
    with pytest.raises(InputError, match="unknown job status 'done'"):
        app.jobs.list("done")


# -- failures and retries ---------------------------------------------------------------


def test_a_user_error_in_the_job_fails_it_at_once_without_retrying() -> None:
    def refuse(request: Any) -> Any:
        raise ModelRefused("the request is not allowed (400)", model="m")

    app = _app(refuse, jobs={"max_attempts": 3})
    job = app.jobs.submit("ask", {"question": "Who created Python?"})
    assert _drain(app) == 1
    failed = app.jobs.get(job.id)
    assert (failed.status, failed.attempts, failed.result) == ("failed", 1, None)
    assert failed.to_dict()["error"] == {"error": "model_refused", "message": "the request is not allowed (400)",
                                         "hint": None}


def test_retryable_errors_are_retried_until_max_attempts_then_the_job_fails() -> None:
    def down(request: Any) -> Any:
        raise ModelUnavailable("connection refused", model="m")

    app = _app(down, jobs={"max_attempts": 3}, gateway={"max_retries": 0, "cache": {"enabled": False},
                                                         "breaker": {"failure_threshold": 100}})
    job = app.jobs.submit("ask", {"question": "Who created Python?"})
    assert _drain(app) == 3
    failed = app.jobs.get(job.id)
    assert (failed.status, failed.attempts) == ("failed", 3)
    assert failed.error and failed.error["error"] in ("model_unavailable", "all_models_failed")
    assert "connection refused" in failed.error["message"]


def test_a_retried_job_that_then_works_succeeds_and_forgets_the_error() -> None:
    script = by_purpose({"answer": [REPLY], "agent_step": [REPLY], "route_judge": ['{"label": "chat"}']})
    failures = [ModelUnavailable("connection refused", model="m")]

    def flaky(request: Any) -> Any:
        if failures:
            raise failures.pop()
        return script(request)

    app = _app(flaky, jobs={"max_attempts": 2})
    job = app.jobs.submit("ask", {"question": "Who created Python?"})
    assert _drain(app) == 2  # the first attempt failed, the retry (no backoff here) worked
    done = app.jobs.get(job.id)
    assert (done.status, done.attempts, done.error, (done.result or {}).get("answer")) == ("succeeded", 2, None, REPLY)


def test_a_retry_waits_for_its_backoff() -> None:
    def down(request: Any) -> Any:
        raise ModelUnavailable("connection refused", model="m")

    app = _app(down, jobs={"max_attempts": 2, "retry_backoff_s": 30.0})
    job = app.jobs.submit("ask", {"question": "Who created Python?"})
    assert _drain(app) == 1 and _drain(app) == 0  # not before 30 s
    assert app.jobs.get(job.id).status == "queued"


def test_a_budget_that_stops_the_run_fails_the_job_and_keeps_the_partial_answer() -> None:
    app = _app(models={"m": {"provider": "fake", "input_price_per_mtok": 1.0, "output_price_per_mtok": 1.0}},
               budgets={"request_usd": 0.0000001})
    job = app.jobs.submit("ask", {"question": "Who created Python?"})
    assert _drain(app) == 1
    failed = app.jobs.get(job.id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.error == {"error": "budget_exceeded", "hint": IsStr(),
                            "message": IsStr(regex=r"budget 'request:req_\w+' \(\$0.0000001\) would be exceeded")}
    assert failed.result and failed.result["status"] == "stopped"


def test_an_unexpected_exception_is_recorded_as_an_internal_error() -> None:
    def boom(request: Any) -> Any:
        raise ZeroDivisionError("division by zero")

    app = _app(boom)
    job = app.jobs.submit("ask", {"question": "Who created Python?"})
    assert _drain(app) == 1
    failed = app.jobs.get(job.id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.error == {"error": "internal_error", "message": "the job raised ZeroDivisionError: division by zero",
                            "hint": IsStr()}


def test_which_errors_are_worth_retrying() -> None:
    down = ModelUnavailable("down", model="m")
    refused = ModelRefused("no", model="m")
    assert is_retryable(down) and not is_retryable(refused)
    assert is_retryable(AllModelsFailed([down, down])) and not is_retryable(AllModelsFailed([down, refused]))
    assert not is_retryable(InputError("bad"))


# -- leases --------------------------------------------------------------------------------


def test_a_job_whose_worker_stopped_heartbeating_is_queued_again_then_failed_when_out_of_attempts() -> None:
    # leases of a second, not less: "another worker cannot claim it yet" must hold on a busy machine too
    app = _app(jobs={"max_attempts": 2, "lease_s": 1.0})
    store = app.jobs.store
    job = app.jobs.submit("ask", {"question": "Who created Python?"})
    first = store.claim_next("dead-worker-1", lease_s=1.0)
    assert first and first[0].attempts == 1 and store.claim_next("other", lease_s=1.0) is None
    time.sleep(1.1)
    assert store.reap() == [job.id]
    requeued = app.jobs.get(job.id)
    assert (requeued.status, requeued.error and requeued.error["error"]) == ("queued", "worker_lost")
    second = store.claim_next("dead-worker-2", lease_s=1.0)
    assert second and second[0].attempts == 2
    time.sleep(1.1)
    assert store.reap() == []
    failed = app.jobs.get(job.id)
    assert (failed.status, failed.attempts, failed.finished_at is not None) == ("failed", 2, True)
    assert failed.error == {"error": "worker_lost", "message": IsStr(regex=".*after 2 attempts the job is failed"),
                            "hint": IsStr()}
    # the presumed-dead worker comes back: its claim is gone, so its outcome is dropped
    assert not store.finish(job.id, first[1], result={"late": True}, error=None)
    assert not store.heartbeat(job.id, second[1], 10.0)
    assert app.jobs.get(job.id).result is None


def test_a_heartbeat_keeps_a_long_job_leased() -> None:
    def slow(request: Any) -> Any:  # outlives its lease by half: only renewals keep it
        time.sleep(1.5)
        return by_purpose({"answer": [REPLY], "agent_step": [REPLY], "route_judge": ['{"label": "chat"}']})(request)

    app = _app(slow, jobs={"lease_s": 1.0})  # renewed every third of a second: a busy machine's stall is not a loss
    job = app.jobs.submit("ask", {"question": "Who created Python?"})
    assert _drain(app) == 1
    assert app.jobs.store.reap() == []
    done = app.jobs.get(job.id)
    assert (done.status, done.attempts) == ("succeeded", 1)


# -- in-process worker threads -------------------------------------------------------------


def test_started_worker_threads_run_submitted_jobs_and_stop() -> None:
    app = _app(jobs={"workers": 2})
    assert app.jobs.start() is True and app.jobs.start() is True  # idempotent
    try:
        jobs = [app.jobs.submit("ask", {"question": f"Who created Python? ({n})"}) for n in range(4)]
        done = [app.jobs.wait(j.id, timeout=60) for j in jobs]
    finally:
        app.jobs.stop()
    assert [(j.status, j.attempts) for j in done] == [("succeeded", 1)] * 4
    assert not app.jobs._pool.running  # type: ignore[union-attr]


def test_no_threads_start_when_workers_is_zero() -> None:
    app = _app(jobs={"workers": 0})
    assert app.jobs.start() is False
    job = app.jobs.submit("ask", {"question": "hi"})
    time.sleep(0.2)
    assert app.jobs.get(job.id).status == "queued"


def test_concurrent_workers_never_run_a_job_twice() -> None:
    import threading

    seen: list[str] = []
    script = by_purpose({"answer": [REPLY], "agent_step": [REPLY], "route_judge": ['{"label": "chat"}']})

    def record(request: Any) -> Any:
        if request.metadata.get("purpose") == "answer":
            seen.append(next(m.content for m in request.messages if "Who" in str(m.content)))
        return script(request)

    app = _app(record)
    ids = {app.jobs.submit("ask", {"question": f"Who created Python? ({n})"}).id for n in range(8)}
    workers = [threading.Thread(target=_drain, args=(app,)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert {j.id for j in app.jobs.list("succeeded")} == ids
    assert all(j.attempts == 1 for j in app.jobs.list())
    assert len(seen) == 8 and len(set(seen)) == 8


# -- the other kinds -------------------------------------------------------------------------


def test_an_ingest_job_returns_the_ingest_report(tmp_path: Path) -> None:
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\n\nThe deploy runs on Tuesdays after the review.\n")
    app = App(models={"m": {"provider": "fake"}}, roles={"chat": ["m"], "fast": ["m"]})
    job = app.jobs.submit("ingest", {"paths": ["notes.md", "missing.md"], "kb": "notes"})
    assert job.payload["paths"] == [str(doc), str(tmp_path / "missing.md")]  # pinned at submit time
    assert app.jobs.work(burst=True) == 1
    done = app.jobs.get(job.id)
    report = done.result or {}
    assert (done.status, report["kb"], report["documents"], report["ok"]) == ("succeeded", "notes", 1, False)
    assert report["failed"] == [{"path": str(tmp_path / "missing.md"), "message": "no such file or folder",
                                 "hint": "check the path"}]


def test_an_extract_job_returns_the_extract_result() -> None:
    app = _app(lambda request: '{"name": "Guido van Rossum"}')
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    job = app.jobs.submit("extract", {"text": "Python was created by Guido van Rossum.", "schema": schema})
    assert _drain(app) == 1
    done = app.jobs.get(job.id)
    assert done.status == "succeeded" and (done.result or {})["data"] == {"name": "Guido van Rossum"}


def test_job_is_a_frozen_pydantic_model() -> None:
    app = _app()
    job = app.jobs.submit("ask", {"question": "hi"})
    assert isinstance(job, Job) and not job.done
    with pytest.raises(Exception, match="frozen"):
        job.status = "failed"  # type: ignore[misc]
