"""How audit records reach the disk: queued off the request path, in order, durable before an effect.

The graph's ``audit(event, data)`` queues most records for the background writer
(group commit); approvals are written before the call returns, and the graph
flushes before (and after) a tool with effects runs. These tests stop the
background writer where it matters, so what they find on disk was put there by
the guarantee under test, not by the writer's timer.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from keel.app import App
from keel.errors import InputError
from keel.graph import FakeRetriever, build_runtime, by_purpose
from keel.models.fake import FunctionProvider
from keel.telemetry import _writer
from keel.telemetry._db import open_engine
from keel.telemetry.audit import (
    DURABLE_EVENTS,
    AuditLedger,
    _canonical_fast,
    _chain_hash,
    canonical,
    record_hash,
    verify_records,
)
from keel.tools.registry import Tool, ToolContext


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'telemetry.sqlite3'}"


def on_disk(url: str) -> list[tuple[int, str, dict[str, Any]]]:
    """What another process would read now: committed rows only, through a fresh connection."""
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT seq, event, data FROM keel_audit ORDER BY seq").fetchall()
    return [(seq, event, json.loads(data)) for seq, event, data in rows]


@pytest.fixture
def no_background_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide every queue made so far from the background thread: only flushes write."""
    monkeypatch.setattr(_writer, "_live", weakref.WeakSet())


def test_the_batched_hash_is_the_record_hash():
    samples = [
        {},
        {"b": 1, "a": [1.5, None, True, {"z": "é", "y": "\u2028"}]},
        {"big": 2**70, "small": -1e-07, "text": 'quote " and \\ backslash', "emoji": "🙂"},
    ]
    for n, data in enumerate(samples):
        for ts, event in [("2026-01-01T00:00:00.000000Z", "route"), ("2026-11-30T12:34:56.789012Z", 'é"vent')]:
            assert _chain_hash("ab" * 32, n + 1, ts, event, canonical(data)) == record_hash(
                "ab" * 32, n + 1, ts, event, data
            )


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _json_values, max_size=6))
def test_the_fast_canonical_text_is_the_canonical_text_or_none(data):
    """orjson's text is only used where it is exactly canonical(); the chain's hashes depend on it."""
    fast = _canonical_fast(data)
    assert fast is None or fast == canonical(data)


@pytest.mark.parametrize("value", [1e-05, 2.5e-7, -1e-100, 2**64, {1: "int key"}])
def test_values_the_two_encoders_write_differently_take_the_standard_librarys_way(value):
    assert _canonical_fast({"v": value}) is None


def test_nan_is_refused_on_the_fast_path_too(url):
    ledger = AuditLedger(open_engine(url))
    assert _canonical_fast({"v": 1e-4, "w": None}) == '{"v":0.0001,"w":null}'
    for data in ({"score": float("nan"), "hint": None}, {"scores": [0.5, float("inf")], "hint": None},
                 {"deep": {"pair": (None, float("-inf"))}}):
        with pytest.raises(InputError, match="NaN"):
            ledger("route", data)
    ledger("route", {"hint": None, "scores": [0.5, {"x": 1.0}]})  # a null that was None is fine
    assert [r.data["scores"] for r in ledger.records()] == [[0.5, {"x": 1.0}]]


def test_queued_records_are_on_disk_only_after_a_flush_and_records_flushes(url, no_background_writer):
    ledger = AuditLedger(open_engine(url))
    ledger("route", {"n": 1})
    ledger("answer", {"n": 2})
    assert on_disk(url) == []  # queued, not written: the request did not wait for the disk
    assert [r.data["n"] for r in ledger.records()] == [1, 2]  # reading flushes first
    assert [d["n"] for _, _, d in on_disk(url)] == [1, 2]
    assert ledger.verify().ok


def test_a_queued_record_is_a_snapshot_of_its_data(url, no_background_writer):
    ledger = AuditLedger(open_engine(url))
    data = {"tool": "send", "args": {"to": "a@b.c"}}
    ledger("agent_step", data)
    data["args"]["to"] = "mallory@evil"
    assert next(ledger.records()).data["args"] == {"to": "a@b.c"}


def test_approvals_are_written_before_the_call_returns_with_everything_before_them(url, no_background_writer):
    ledger = AuditLedger(open_engine(url))
    assert {"approval_requested", "approval_decided", "approval_used", "approval_invalid"} == DURABLE_EVENTS
    ledger("route", {"n": 1})
    ledger("agent_step", {"n": 2})
    for event in sorted(DURABLE_EVENTS):
        ledger(event, {"id": "apr_1"})
        assert on_disk(url)[-1][1] == event
    assert [e for _, e, _ in on_disk(url)][:2] == ["route", "agent_step"]
    ledger("answer", {"n": 3})
    assert len(on_disk(url)) == 2 + len(DURABLE_EVENTS)  # the answer waits for the writer


def test_the_background_writer_appends_queued_records_on_its_own(url):
    ledger = AuditLedger(open_engine(url))
    for i in range(_writer_batch := 300):  # past a batch, which wakes the writer at once
        ledger("route", {"i": i})
    deadline = time.monotonic() + 10
    while len(on_disk(url)) < _writer_batch and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [d["i"] for _, _, d in on_disk(url)] == list(range(_writer_batch))
    assert ledger.verify().ok


def test_order_is_kept_under_concurrency_and_a_durable_record_follows_its_threads_queue(url):
    ledger = AuditLedger(open_engine(url))
    other = AuditLedger(open_engine(url))  # a second ledger object on the same database shares the queue
    seen: dict[int, list[int]] = {}

    def worker(w: int) -> None:
        target = ledger if w % 2 else other
        for i in range(40):
            target("agent_step", {"w": w, "i": i})
            if i % 10 == 9:  # a durable record: written with everything this thread queued before it
                rec = target.append("approval_used", {"w": w, "i": i})
                seen.setdefault(w, []).append(rec.seq)
            if i % 13 == 0:
                target.flush()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    records = list(ledger.records())
    assert verify_records(records).ok and len(records) == 8 * 44
    for w in range(8):
        mine = [r for r in records if r.data["w"] == w]
        steps = [r.data["i"] for r in mine if r.event == "agent_step"]
        assert steps == list(range(40))  # each thread's records in the order it made them
        for rec in mine:
            if rec.event == "approval_used":
                before = [r.seq for r in mine if r.event == "agent_step" and r.data["i"] <= rec.data["i"]]
                assert max(before) < rec.seq
        assert seen[w] == [r.seq for r in mine if r.event == "approval_used"]


def test_a_failed_batch_stays_queued_and_is_written_later(url, no_background_writer, monkeypatch):
    ledger = AuditLedger(open_engine(url))
    ledger("route", {"n": 1})
    appender = ledger._appender
    real = appender._write
    monkeypatch.setattr(appender, "_write", lambda batch: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        ledger.append("approval_used", {"n": 2})
    monkeypatch.setattr(appender, "_write", real)
    assert [(r.event, r.data["n"]) for r in ledger.records()] == [("route", 1), ("approval_used", 2)]
    assert ledger.verify().ok


def test_a_flush_waits_for_a_batch_another_thread_is_writing(url, no_background_writer, monkeypatch):
    """The queue is empty while another thread writes the last batch: flush() (and so the exit
    flush) must still wait for that write, or the process ends with it half done."""
    ledger = AuditLedger(open_engine(url))
    appender = ledger._appender
    real, writing, release = appender._write, threading.Event(), threading.Event()

    def slow_write(batch):
        writing.set()
        release.wait(10)
        real(batch)

    monkeypatch.setattr(appender, "_write", slow_write)
    for i in range(3):
        ledger("route", {"i": i})
    first = threading.Thread(target=appender.flush)
    first.start()
    assert writing.wait(10) and not appender._queue  # the batch is taken: nothing is left queued
    second = threading.Thread(target=appender.flush)
    second.start()
    second.join(0.3)
    assert second.is_alive()  # still waiting on the write in flight
    release.set()
    second.join(10)
    assert [e[2]["i"] for e in on_disk(url)] == [0, 1, 2]  # on disk once the second flush returned
    first.join(10)


# -- the graph: records that permit an effect are on disk before it ---------------------------------


class _Note(BaseModel):
    text: str


def _graph_app(effects: list[list[str]], url_holder: list[str], steps: list[str] | None = None) -> tuple[App, Any]:
    def stamp(args: _Note, ctx: ToolContext) -> str:
        # the tool's effect: at this moment, what does the database (another process) hold?
        effects.append([e for _, e, _ in on_disk(url_holder[0])])
        return f"stamped {args.text}"

    tools = [
        Tool("stamp_ledger", "Write a stamp (a change in the outside world).", _Note, stamp, risk="write"),
        Tool("shred_ledger", "Shred a stamp (destructive).", _Note, stamp, risk="destructive"),
    ]
    steps = steps or [
        json.dumps({"tool": "stamp_ledger", "args": {"text": "a"}}),
        json.dumps({"tool": "final_answer", "args": {"answer": "Stamped."}}),
        json.dumps({"tool": "shred_ledger", "args": {"text": "b"}}),
        json.dumps({"tool": "final_answer", "args": {"answer": "Shredded."}}),
    ]
    app = App(
        models={"fake": {"provider": "fake"}},
        roles={"chat": ["fake"], "fast": ["fake"]},
        gateway={"cache": {"enabled": False}},
        providers={"fake": FunctionProvider(by_purpose({"agent_step": steps}), name="fake")},
    )
    url_holder.append(app.telemetry.url)
    runtime = build_runtime(app.settings, app.gateway, retriever=FakeRetriever([]), audit=app.audit, extra_tools=tools)
    return app, runtime


def test_a_risky_tools_decision_and_approval_are_on_disk_before_its_effect(keel_home, monkeypatch):
    effects: list[list[str]] = []
    url_holder: list[str] = []
    app, runtime = _graph_app(effects, url_holder)
    assert app.telemetry.audit.verify().ok  # builds the ledger (and its queue) before hiding queues from the writer
    monkeypatch.setattr(_writer, "_live", weakref.WeakSet())
    url = url_holder[0]

    # a write tool: no approval, but the step that chose it is on disk before it runs
    answer = runtime.ask("use the stamp_ledger tool with text a", user="ann")
    assert answer.answer == "Stamped." and len(effects) == 1
    assert effects[0][-1] == "agent_step" and "route" in effects[0]
    step = [d for _, e, d in on_disk(url) if e == "agent_step"][-1]
    assert (step["tool"], step["args"]) == ("stamp_ledger", {"text": "a"})
    assert on_disk(url)[-1][1] == "tool_call"  # its result, flushed right after the effect
    assert "answer" not in [e for _, e, _ in on_disk(url)]  # the answer record is only queued

    # a destructive tool: the request for approval is on disk when the run pauses ...
    paused = runtime.ask("use the shred_ledger tool with text b", user="ann")
    assert paused.status == "pending_approval" and len(effects) == 1
    assert on_disk(url)[-1][1] == "approval_requested"
    # ... and the decision and its use are on disk before the tool's effect
    done = runtime.resume(paused.approval["id"], approve=True, approver="boss")
    assert done.answer == "Shredded." and len(effects) == 2
    assert effects[1][-3:] == ["approval_requested", "approval_decided", "approval_used"]
    last = on_disk(url)[-1]
    assert (last[1], last[2]["tool"], last[2]["approved_by"]) == ("tool_call", "shred_ledger", "boss")
    assert app.telemetry.audit.verify().ok


def test_a_read_only_tool_does_not_wait_for_the_disk(keel_home, monkeypatch):
    effects: list[list[str]] = []
    url_holder: list[str] = []
    steps = [
        json.dumps({"tool": "calculator", "args": {"expression": "6*7"}}),
        json.dumps({"tool": "final_answer", "args": {"answer": "6*7 = 42"}}),
    ]
    app, runtime = _graph_app(effects, url_holder, steps)
    assert app.telemetry.audit.verify().ok  # builds the ledger before hiding queues from the writer
    monkeypatch.setattr(_writer, "_live", weakref.WeakSet())
    answer = runtime.ask("use the calculator on six times seven please", user="ann")
    assert answer.status == "answered"
    assert on_disk(url_holder[0]) == []  # nothing forced a write: every record is queued
    events = [r.event for r in app.telemetry.audit.records()]
    assert "tool_call" in events and events[-1] == "answer" and effects == []


# -- processes: exit flushes, and concurrent group commits keep one chain -------------------------

_CHILD = textwrap.dedent(
    """
    import sqlite3, sys
    from keel.telemetry import _writer
    _writer.INTERVAL_S = 3600  # the background writer stays asleep: only the exit flush writes
    from keel.telemetry._db import open_engine
    from keel.telemetry.audit import AuditLedger
    url, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ledger = AuditLedger(open_engine(url))
    for i in range(n):
        ledger("route", {"writer": tag, "i": i})
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        mine = conn.execute("SELECT count(*) FROM keel_audit WHERE data LIKE ?", (f'%"{tag}"%',)).fetchone()[0]
    print(mine)  # what was on disk just before exit
    """
)


def _child(url: str, tag: str, n: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _CHILD, url, tag, str(n)], stdout=subprocess.PIPE, text=True)


def test_queued_records_are_flushed_at_process_exit(url):
    open_engine(url)
    child = _child(url, "solo", 25)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0 and out.strip() == "0"  # nothing was on disk before the exit
    records = list(AuditLedger(open_engine(url)).records())
    assert [r.data["i"] for r in records] == list(range(25)) and verify_records(records).ok


def test_two_processes_group_committing_at_once_keep_one_chain(url):
    open_engine(url)  # migrate once here, before the writers open it
    children = [_child(url, tag, 600) for tag in ("a", "b")]  # 600 > a batch: the writer wakes mid-run
    for child in children:
        child.communicate(timeout=120)
    assert [c.returncode for c in children] == [0, 0]
    records = list(AuditLedger(open_engine(url)).records())
    assert verify_records(records).ok and len(records) == 1200
    for tag in ("a", "b"):
        assert [r.data["i"] for r in records if r.data["writer"] == tag] == list(range(600))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_write_its_parents_queue_again(url, no_background_writer):
    import os

    ledger = AuditLedger(open_engine(url))
    ledger("route", {"by": "parent", "i": 0})
    ledger("route", {"by": "parent", "i": 1})
    pid = os.fork()
    if pid == 0:  # the child: queue one of its own, flush, leave without running the parent's atexit
        code = 1
        try:
            ledger("route", {"by": "child", "i": 0})
            ledger.flush()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    records = list(ledger.records())
    assert sorted((r.data["by"], r.data["i"]) for r in records) == [("child", 0), ("parent", 0), ("parent", 1)]
    assert verify_records(records).ok
