"""Ctrl-C in `keel ask` and `keel chat`: the first stops the run at its next step (exit 130, one
`cancelled` audit record), a second quits at once. Real `keel` processes get a real SIGINT while
their model call stalls on a local OpenAI-compatible server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keel import App

from .http_fixtures import FlakyServer, flaky_server
from .test_jobs_embedded import IsStr

KEEL = Path(sys.executable).with_name("keel")
INTERRUPTED = {"error": "cancelled", "message": "the run was cancelled: it was interrupted (Ctrl-C)",
               "hint": "ask again when you want the answer"}
STOPPING = "stopping the run at its next step (Ctrl-C again to quit now)"


@contextlib.contextmanager
def model_server(workdir: Path, behaviour: str = "timeout", stall_s: float = 3.0) -> Iterator[FlakyServer]:
    """keel.yaml in ``workdir`` whose only model is a local OpenAI-compatible server that answers each
    call after ``stall_s`` seconds ("timeout"), or at once ("ok")."""
    with flaky_server(lambda n: behaviour, stall_s=stall_s) as server:
        model = {"provider": "openai", "model": "test-model", "base_url": server.url, "timeout_s": 120}
        (workdir / "keel.yaml").write_text(json.dumps({  # JSON is YAML
            "models": {"m": model}, "roles": {"chat": ["m"], "fast": ["m"]},
            "gateway": {"cache": {"enabled": False}, "max_retries": 0},
        }))
        yield server


@pytest.fixture
def slow_model(tmp_path: Path, keel_home: Path) -> Iterator[FlakyServer]:
    with model_server(tmp_path) as server:
        yield server


def _in_model_call(proc: subprocess.Popen[str], server: FlakyServer, calls: int = 1) -> None:
    """Wait until the process's run has sent its ``calls``-th model call (it now stalls there)."""
    deadline = time.monotonic() + 120
    while len(server.calls) < calls:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no model call arrived"
        time.sleep(0.05)


def _cancelled_records(workdir: Path) -> list[dict[str, Any]]:
    app = App(workdir / "keel.yaml")
    return [r.data for r in app.telemetry.audit.records() if r.event == "cancelled"]


def test_ctrl_c_stops_keel_ask_at_its_next_step(tmp_path: Path, slow_model: FlakyServer, spawn: Any) -> None:
    proc = spawn([str(KEEL), "ask", "hello", "--json"], tmp_path)
    _in_model_call(proc, slow_model)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == STOPPING  # one short line; the answer says the rest
    answer = json.loads(out)
    assert (answer["status"], answer["answer"], answer["error"]) == ("stopped", "", INTERRUPTED)
    assert len(slow_model.calls) == 1  # the call in flight finished (3 s later); no further call was made
    assert _cancelled_records(tmp_path) == [{"thread_id": IsStr(r"req_[0-9a-f]+"), "reason": "interrupted",
                                             **INTERRUPTED, "config_hash": IsStr()}]


def test_keel_ask_says_it_stopped_without_json(tmp_path: Path, slow_model: FlakyServer, spawn: Any) -> None:
    proc = spawn([str(KEEL), "ask", "hello"], tmp_path)
    _in_model_call(proc, slow_model)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped: the run was cancelled: it was interrupted (Ctrl-C)" in out
    assert [r["reason"] for r in _cancelled_records(tmp_path)] == ["interrupted"]


def test_a_second_ctrl_c_quits_at_once(tmp_path: Path, keel_home: Path, spawn: Any) -> None:
    with model_server(tmp_path, stall_s=60.0) as server:
        proc = spawn([str(KEEL), "ask", "hello"], tmp_path)
        _in_model_call(proc, server)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        waited = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert waited < 10  # the model call would have taken 60 s
    assert err.splitlines() == [STOPPING, "interrupted"] and out == ""


class Chat:
    """`keel chat` in a process of its own, its stdin a pipe; its output collected as it comes."""

    def __init__(self, workdir: Path) -> None:
        self.proc = subprocess.Popen([str(KEEL), "chat", "--session", "s1"], cwd=workdir, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.out: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while char := self.proc.stdout.read(1):
            self.out.append(char)

    def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, text: str, count: int = 1) -> None:
        deadline = time.monotonic() + 120
        while "".join(self.out).count(text) < count:
            assert self.proc.poll() is None and time.monotonic() < deadline, "".join(self.out)
            time.sleep(0.05)

    def end(self) -> tuple[str, str]:
        assert self.proc.stderr is not None
        self.proc.wait(60)
        self._reader.join(10)
        return "".join(self.out), self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.communicate(timeout=30)


@pytest.fixture
def start_chat(tmp_path: Path) -> Iterator[Callable[[], Chat]]:
    """``chat()`` starts `keel chat` in tmp_path (write keel.yaml first); killed when the test ends."""
    sessions: list[Chat] = []

    def start() -> Chat:
        sessions.append(Chat(tmp_path))
        return sessions[-1]

    yield start
    for session in sessions:
        session.kill()


def test_ctrl_c_in_keel_chat_stops_the_answer_and_ends_the_chat(tmp_path: Path, slow_model: FlakyServer,
                                                               start_chat: Callable[[], Chat]) -> None:
    chat = start_chat()
    chat.say("hello")
    _in_model_call(chat.proc, slow_model)
    chat.proc.send_signal(signal.SIGINT)
    out, err = chat.end()
    assert chat.proc.returncode == 130, err
    assert err.splitlines() == [STOPPING, "continue with: keel chat --session s1"]
    assert "stopped: the run was cancelled: it was interrupted (Ctrl-C)" in out
    assert len(slow_model.calls) == 1
    assert [r["reason"] for r in _cancelled_records(tmp_path)] == ["interrupted"]


def test_ctrl_c_at_the_chat_prompt_ends_the_chat_as_before(tmp_path: Path, keel_home: Path,
                                                          start_chat: Callable[[], Chat]) -> None:
    with model_server(tmp_path, "ok"):
        chat = start_chat()
        chat.wait_for("you> ")
        chat.say("hello")
        chat.wait_for("you> ", 2)  # answered; the prompt is back, with Ctrl-C handled as it always was
        chat.proc.send_signal(signal.SIGINT)
        out, err = chat.end()
    assert chat.proc.returncode == 0, err
    assert "echo: " in out and STOPPING not in err
    assert _cancelled_records(tmp_path) == []
