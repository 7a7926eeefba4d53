"""The audit ledger: hash chain, tamper detection naming the first bad record, retention, hash-only."""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from keel.app import App
from keel.cli import app as cli
from keel.config import AuditSettings
from keel.errors import InputError
from keel.telemetry._db import open_engine
from keel.telemetry.audit import GENESIS, AuditLedger, read_export, record_hash, timestamp, timestamp_ns, verify_records

DECISIONS = [
    ("route", {"route": "agent", "reason": "needs a tool", "models": ["m"], "prompt_version": "ask@3"}),
    ("retrieval", {"sources": [{"id": "doc1#2", "score": 0.71}, {"id": "doc2#0", "score": 0.42}]}),
    ("tool_call", {"tool": "send_email", "args": {"to": "a@b.c"}, "approved_by": "dana", "approval": "ap-1"}),
    ("guardrail", {"verdict": "pass", "groundedness": 0.93, "checks": ["pii", "secrets"]}),
    ("answer", {"answer": "It is 42.", "answer_sha256": "ab" * 32, "config": "c0ffee"}),
]


def _ledger(url: str, **settings) -> AuditLedger:
    ledger = AuditLedger(open_engine(url), AuditSettings(**settings))
    for event, data in DECISIONS:
        ledger.append(event, data)
    return ledger


def _sql(ledger: AuditLedger, statement: str, **params) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def _swap(ledger: AuditLedger, a: int, b: int) -> None:
    """Exchange the contents (everything but the sequence number) of two records."""
    cols = "ts, event, data, prev_hash, hash"
    with ledger.engine.begin() as conn:
        ra = conn.execute(sa.text(f"SELECT {cols} FROM keel_audit WHERE seq = :s"), {"s": a}).one()
        rb = conn.execute(sa.text(f"SELECT {cols} FROM keel_audit WHERE seq = :s"), {"s": b}).one()
        for seq, row in ((a, rb), (b, ra)):
            conn.execute(
                sa.text(
                    "UPDATE keel_audit SET ts=:ts, event=:event, data=:data, prev_hash=:prev_hash, "
                    "hash=:hash WHERE seq=:seq"
                ),
                {**row._mapping, "seq": seq},
            )


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'telemetry.sqlite3'}"


def test_records_chain_each_hash_to_the_previous(url):
    ledger = _ledger(url)
    records = list(ledger.records())
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev_hash == GENESIS
    for prev, rec in zip(records, records[1:], strict=False):
        assert rec.prev_hash == prev.hash
    for rec in records:
        assert rec.hash == record_hash(rec.prev_hash, rec.seq, rec.ts, rec.event, rec.data)
    assert records[2].data == DECISIONS[2][1]
    assert ledger.verify().to_dict() == {
        "ok": True,
        "checked": 5,
        "first_bad": None,
        "reason": None,
        "head": records[-1].hash,
    }
    assert ledger.head() == (5, records[-1].hash)


def test_an_edited_field_is_found_in_its_record(url):
    ledger = _ledger(url)
    _sql(ledger, "UPDATE keel_audit SET data = replace(data, 'dana', 'mallory') WHERE seq = 3")
    result = ledger.verify()
    assert (result.ok, result.first_bad, result.checked) == (False, 3, 2)
    assert "record 3 (tool_call) was changed" in result.reason


def test_an_edited_timestamp_or_event_is_found_too(url):
    ledger = _ledger(url)
    _sql(ledger, "UPDATE keel_audit SET event = 'nothing' WHERE seq = 4")
    assert ledger.verify().first_bad == 4


def test_a_deleted_record_is_named_by_the_record_after_it(url):
    ledger = _ledger(url)
    _sql(ledger, "DELETE FROM keel_audit WHERE seq = 2")
    result = ledger.verify()
    assert (result.ok, result.first_bad) == (False, 3)
    assert "follows record 1" in result.reason and "deleted" in result.reason


def test_a_deleted_and_renumbered_record_is_still_found(url):
    ledger = _ledger(url)
    _sql(ledger, "DELETE FROM keel_audit WHERE seq = 2")
    for seq in (3, 4, 5):
        _sql(ledger, "UPDATE keel_audit SET seq = :new WHERE seq = :old", new=seq - 1, old=seq)
    result = ledger.verify()
    assert (result.ok, result.first_bad) == (False, 2)


def test_deleting_the_first_or_last_record(url):
    ledger = _ledger(url)
    head_before = ledger.head()
    _sql(ledger, "DELETE FROM keel_audit WHERE seq = 1")
    result = ledger.verify()
    assert (result.ok, result.first_bad) == (False, 2) and "deleted" in result.reason
    # the newest record's removal is only visible against a published head
    ledger2 = _ledger(url.replace("telemetry", "other"))
    published = ledger2.head()
    _sql(ledger2, "DELETE FROM keel_audit WHERE seq = 5")
    assert ledger2.verify().ok and ledger2.head() != published and head_before[0] == 5


def test_two_swapped_records_are_found_at_the_first(url):
    ledger = _ledger(url)
    _swap(ledger, 2, 3)
    result = ledger.verify()
    assert (result.ok, result.first_bad) == (False, 2)
    assert "does not link to record 1" in result.reason


def test_export_round_trips_and_a_tampered_export_fails(url):
    ledger = _ledger(url)
    buf = io.StringIO()
    assert ledger.export(buf) == 5
    lines = buf.getvalue().splitlines()
    assert verify_records(read_export(lines)).ok
    lines[1], lines[2] = lines[2], lines[1]
    assert verify_records(read_export(lines)).first_bad == 3  # out of order: 3 after 1
    record = json.loads(lines[0])
    record["data"]["route"] = "fast"
    assert verify_records(read_export([json.dumps(record)])).first_bad == 1
    with pytest.raises(InputError, match="line 1"):
        list(read_export(["not json"]))


def test_hash_only_mode_keeps_proof_without_the_text(url):
    ledger = _ledger(url, store_text=False)
    answer = [r for r in ledger.records() if r.event == "answer"][0]
    assert "It is 42." not in json.dumps(answer.data)
    assert answer.data["answer"] == {"sha256": __import__("hashlib").sha256(b'"It is 42."').hexdigest()}
    assert answer.data["config"] == "c0ffee"
    assert ledger.verify().ok


def test_hash_only_mode_hashes_what_quotes_the_answer_too(tmp_path):
    """The guardrail's findings quote the draft, a check's detail quotes sentences, a tool returns text."""
    ledger = AuditLedger(open_engine(f"sqlite:///{tmp_path / 't.sqlite3'}"), AuditSettings(store_text=False))
    ledger.append("guardrail", {"verdict": "fallback", "problems": ["unsupported: 'Paris is in Spain.'"],
                                "guardrail": {"checks": [{"name": "repetition", "detail": "Paris is in Spain."}]}})
    ledger.append("tool_call", {"tool": "read_file", "args": {"path": "notes.txt"}, "result": "my secret notes"})
    stored = json.dumps([r.data for r in ledger.records()])
    assert "Spain" not in stored and "secret" not in stored
    assert '"verdict": "fallback"' in stored and '"path": "notes.txt"' in stored  # the decision itself stays
    assert ledger.verify().ok


def test_retention_prunes_old_records_and_the_chain_still_verifies(url):
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    ledger = AuditLedger(open_engine(url), AuditSettings(retention_days=30), clock=lambda: now[0])
    for i in range(4):
        ledger.append("route", {"n": i})
    now[0] += timedelta(days=40)
    ledger.append("route", {"n": 4})
    assert ledger.prune() == 4
    records = list(ledger.records())
    assert [r.event for r in records] == ["route", "audit.pruned"] and records[0].seq == 5
    assert ledger.verify().ok
    # the pruning record itself is on the chain: deleting it is detected
    _sql(ledger, "DELETE FROM keel_audit WHERE event = 'audit.pruned'")
    assert ledger.verify().first_bad == 5


def test_concurrent_appends_keep_one_unbroken_chain(url):
    ledger = AuditLedger(open_engine(url))
    other = AuditLedger(open_engine(url))  # a second writer on the same database
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: (ledger if i % 2 else other).append("tool_call", {"i": i}), range(80)))
    result = ledger.verify()
    assert (result.ok, result.checked) == (True, 80)
    assert sorted(r.data["i"] for r in ledger.records()) == list(range(80))


def test_bad_input_gets_a_typed_error(url):
    ledger = AuditLedger(open_engine(url))
    with pytest.raises(InputError, match="NaN"):
        ledger.append("route", {"score": float("nan")})
    with pytest.raises(InputError, match="1-100 characters"):
        ledger.append("", {})
    with pytest.raises(InputError, match="must be a dict"):
        ledger.append("route", ["x"])  # type: ignore[arg-type]


def test_app_audit_is_the_ledger_append_and_the_cli_verifies_it(keel_home):
    app = App()
    audit = app.audit
    for event, data in DECISIONS:
        audit(event, data)
    records = list(app.telemetry.audit.records())
    assert {r.data["config_hash"] for r in records} == {app.settings.fingerprint()}  # which config decided
    runner = CliRunner()
    ok = runner.invoke(cli, ["audit", "verify", "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["checked"] == 5
    exported = runner.invoke(cli, ["audit", "export", "--out", "ledger.jsonl", "--json"])
    assert json.loads(exported.stdout)["records"] == 5
    _sql(app.telemetry.audit, "UPDATE keel_audit SET data = replace(data, 'agent', 'fast') WHERE seq = 1")
    bad = runner.invoke(cli, ["audit", "verify"])
    assert bad.exit_code == 1 and "FAILED at record 1" in bad.stdout
    assert runner.invoke(cli, ["audit", "verify", "--file", "ledger.jsonl"]).exit_code == 0


def test_a_disabled_ledger_is_a_no_op_callable(keel_home):
    app = App(telemetry={"audit": {"enabled": False}})
    assert app.audit("route", {"route": "fast"}) is None


@pytest.mark.scale
def test_the_same_ledger_on_postgresql(pg_url):
    ledger = _ledger(pg_url)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: ledger.append("tool_call", {"i": i}), range(30)))
    assert ledger.verify().checked == 35
    _swap(ledger, 10, 11)
    assert ledger.verify().first_bad == 10
    _swap(ledger, 10, 11)
    _sql(ledger, "UPDATE keel_audit SET data = replace(data, 'dana', 'eve') WHERE seq = 3")
    assert ledger.verify().first_bad == 3
    with ledger.engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())  # the test's own schema, via search_path
    assert {"keel_span_batches", "keel_model_calls", "keel_feedback", "keel_curation", "keel_audit"} <= tables
    ledger.engine.dispose()


def _append_many(url: str, tag: str, n: int, go) -> None:  # type: ignore[no-untyped-def]
    ledger = AuditLedger(open_engine(url))
    go.wait(60)  # both processes start appending at the same moment
    for i in range(n):
        ledger.append("tool_call", {"writer": tag, "i": i})
        time.sleep(0.002)  # yield the core, so the two writers overlap even on a loaded machine


def test_two_processes_appending_at_once_keep_one_chain(url):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    go = ctx.Barrier(2)
    open_engine(url)  # migrate once here, before the writers open it
    workers = [ctx.Process(target=_append_many, args=(url, tag, 150, go)) for tag in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    ledger = AuditLedger(open_engine(url))
    records = list(ledger.records())
    result = verify_records(records)
    assert (result.ok, result.checked) == (True, 300)
    assert sorted((r.data["writer"], r.data["i"]) for r in records) == [
        (tag, i) for tag in ("a", "b") for i in range(150)
    ]
    writers = [r.data["writer"] for r in records]
    assert sum(a != b for a, b in zip(writers, writers[1:], strict=False)) > 1  # they did interleave


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31)))
def test_record_timestamps_are_what_strftime_writes(when):

    assert timestamp(when) == when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    aware = when.replace(tzinfo=UTC)
    assert timestamp(aware) == when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    micros = (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)  # exact, unlike timestamp()
    ns = micros * 1000 + 999  # below a microsecond: dropped
    assert timestamp_ns(ns) == timestamp(aware)
