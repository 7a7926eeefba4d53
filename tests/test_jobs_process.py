"""Embedded jobs across processes: a worker killed with SIGKILL mid-job, and a second one
(the real `keel worker` executable) that finishes it; the `keel jobs` commands."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from keel import App
from keel.cli import main

CONFIG = """\
models:
  scripted:
    provider: fake
    replies: ["Hello from the second worker."]
roles:
  chat: [scripted]
  fast: [scripted]
gateway:
  cache: {enabled: false}
jobs:
  lease_s: 1.5
  poll_s: 0.1
"""

# a worker whose model call never returns: it says so in a file, then hangs until killed
_HANGING_WORKER = """
import pathlib, sys, time
from keel import App
from keel.models.fake import FunctionProvider

marker = pathlib.Path(sys.argv[1])

def hang(request):
    marker.write_text("mid-job")
    time.sleep(600)

app = App(providers={"scripted": FunctionProvider(hang)})
app.jobs.work(concurrency=1)
"""

KEEL = Path(sys.executable).with_name("keel")


@pytest.fixture
def workdir(tmp_path: Path, keel_home: Path) -> Path:
    (tmp_path / "keel.yaml").write_text(CONFIG)
    return tmp_path


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_job_survives_its_worker_being_killed(workdir: Path, spawn: Any) -> None:
    app = App(workdir / "keel.yaml")
    job = app.jobs.submit("ask", {"question": "hello there"}, user="ann")
    marker = workdir / "mid-job"

    first = spawn([sys.executable, "-c", _HANGING_WORKER, str(marker)], workdir)
    _wait_for(lambda: marker.exists() or first.poll() is not None, 120, "the first worker to start the job")
    assert first.poll() is None, first.communicate()[1]
    running = app.jobs.get(job.id)
    assert (running.status, running.attempts) == ("running", 1)

    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(30) == -signal.SIGKILL
    assert app.jobs.get(job.id).status == "running"  # nobody knows yet: the lease says so later

    second = spawn([str(KEEL), "worker", "--burst", "--json"], workdir)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert json.loads(out) == {"backend": "embedded", "jobs": 1}
    done = app.jobs.get(job.id)
    assert (done.status, done.attempts, done.error) == ("succeeded", 2, None)
    assert (done.result or {})["answer"] == "Hello from the second worker."
    assert (done.result or {})["status"] == "answered"


def test_sigterm_lets_the_worker_finish_its_job_and_exit(workdir: Path, spawn: Any) -> None:
    worker = spawn([str(KEEL), "worker"], workdir)
    app = App(workdir / "keel.yaml")
    job = app.jobs.submit("ask", {"question": "hello there"})
    _wait_for(lambda: app.jobs.get(job.id).done or worker.poll() is not None, 120, "the worker to run the job")
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert app.jobs.get(job.id).status == "succeeded"


def keel(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, Any]:
    """``keel ARGS --json`` in-process through the real entry point: (exit code, JSON or stderr)."""
    monkeypatch.setattr(sys, "argv", ["keel", *args, "--json"])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out)
    except json.JSONDecodeError:
        return code, err


def test_the_jobs_commands(workdir: Path, capsys: Any, monkeypatch: Any) -> None:
    code, queued = keel(capsys, monkeypatch, "jobs", "submit", "ask", '{"question": "hello"}', "--user", "ann")
    assert code == 0 and (queued["kind"], queued["status"]) == ("ask", "queued")
    code, shown = keel(capsys, monkeypatch, "jobs", "show", queued["id"])
    assert (code, shown) == (0, queued)

    code, ran = keel(capsys, monkeypatch, "worker", "--burst")
    assert (code, ran) == (0, {"backend": "embedded", "jobs": 1})
    code, listed = keel(capsys, monkeypatch, "jobs", "list", "--status", "succeeded")
    assert code == 0 and [(j["id"], j["result"]["answer"]) for j in listed] == [
        (queued["id"], "Hello from the second worker.")]

    (workdir / "payload.json").write_text('{"question": "hello again"}')
    code, waited = keel(capsys, monkeypatch, "jobs", "submit", "ask", "@payload.json", "--wait", "--timeout", "0.3")
    assert code == 0 and waited["status"] == "queued"  # no worker runs: --wait gives up and shows it


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["jobs", "show", "job_missing"], "no job with id 'job_missing'"),
        (["jobs", "submit", "summarise", "{}"], "unknown job kind 'summarise'"),
        (["jobs", "submit", "ask", "{not json"], "the payload is not JSON"),
        (["jobs", "submit", "ask", '{"q": "x"}'], "question: Field required"),
        (["jobs", "list", "--status", "done"], "unknown job status 'done'"),
    ],
)
def test_the_jobs_commands_say_what_is_wrong(workdir: Path, capsys: Any, monkeypatch: Any, args: list[str],
                                             message: str) -> None:
    code, err = keel(capsys, monkeypatch, *args)
    assert code == 2 and message in err and "what to do:" in err


def test_the_python_example_in_docs_jobs_md_runs(workdir: Path, capsys: Any) -> None:
    import re

    docs = (Path(__file__).resolve().parent.parent / "docs" / "jobs.md").read_text()
    [example] = re.findall(r"```python\n(.*?)```", docs, flags=re.S)
    exec(compile(example, "docs/jobs.md", "exec"), {})
    status, answer = capsys.readouterr().out.split(" ", 1)
    # the knowledge base is empty, so the honest answer is a refusal to guess; the job still succeeded
    assert status == "succeeded" and "knowledge base" in answer


def test_the_jobs_package_exports_a_small_sorted_surface() -> None:
    import keel.jobs

    assert keel.jobs.__all__ == sorted(keel.jobs.__all__)
    assert all(getattr(keel.jobs, name) is not None for name in keel.jobs.__all__)
    assert App.jobs.__doc__  # the App's entry point says what it is
