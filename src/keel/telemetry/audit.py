"""The audit ledger: one record per decision, hash-chained, append-only.

Each record holds a sequence number, a UTC timestamp, an event name and its
data, plus ``prev_hash`` (the previous record's hash) and ``hash`` =
sha256(prev_hash + canonical JSON of seq, ts, event and data). Changing a
field breaks that record's hash; deleting a record breaks the sequence and the
next record's link; swapping two breaks both. :func:`verify_records` names the
first record that fails and why, for the live table or an exported file.

Retention deletes old records without breaking verification: before deleting,
the ledger appends an ``audit.pruned`` record naming the last deleted sequence
number and its hash, so the new first record's link is itself on the chain.
With ``store_text: false`` the text fields (question, answer, source text, ...)
are replaced by their sha256, so the ledger proves what was said without
keeping it. Keep :meth:`AuditLedger.head` somewhere else (a ticket, a log
service) to also detect a ledger rewritten from scratch.

Writing: the graph calls the ledger itself as its ``audit(event, data)``.
That encodes the data as its canonical JSON text at once (a snapshot the
caller may go on changing) and takes the time, then queues the record; the
process's one background writer (:mod:`._writer`) appends queued records
in order, a batch per transaction (read the head, chain and insert them all,
commit), so a request does not wait for a disk write per decision.
The hashes and the chain are exactly those one-at-a-time appends produce.
Events in :data:`DURABLE_EVENTS` (approvals) are written before the call
returns, together with everything queued before them, because a person's
decision must be on disk before it is acted on; :meth:`AuditLedger.append`
does the same for any event, and :meth:`AuditLedger.flush` (which the graph
calls before a tool with effects runs, and after it) makes everything queued
so far durable. Reading (:meth:`~AuditLedger.records`, ``verify``, ``head``,
``export``) flushes first, and so does process exit. What a crash (power loss,
SIGKILL) can lose is the last fraction of a second of queued records that
permit nothing: routes, retrievals, agent steps, guardrail verdicts, answers.
Appends from several processes still form one chain: each batch holds the
database's write lock from reading the head to its commit.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..config import AuditSettings
from ..errors import InputError
from . import _schema as t
from . import _writer
from ._db import begin_write, local_write_lock, write_lock

__all__ = [
    "DURABLE_EVENTS",
    "GENESIS",
    "AuditLedger",
    "AuditRecord",
    "VerifyResult",
    "canonical",
    "read_export",
    "verify_records",
]

GENESIS = "0" * 64
_LOCK_KEY = 0x6B65656C  # "keel": the PostgreSQL advisory lock of the chain head
# built once: SQLAlchemy caches their compiled form
_HEAD = sa.select(t.audit.c.seq, t.audit.c.hash).order_by(t.audit.c.seq.desc()).limit(1)
#: decisions that permit an effect: the graph's ``audit(event, data)`` writes them to disk
#: (after everything queued before them) before returning
DURABLE_EVENTS = frozenset({"approval_requested", "approval_decided", "approval_used", "approval_invalid"})
_BATCH = 256


# built once: json.dumps with options builds an encoder per call
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_SNAPSHOT = json.JSONEncoder(default=str, allow_nan=False)
#: orjson leaves datetimes and dataclasses to ``default=str``, as the standard library's snapshot does
_FAST = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _canonical_fast(value: dict[str, Any]) -> str | None:
    """``canonical(value)`` written by orjson (a tenth of the time), or None where the two could differ.

    orjson writes sorted, compact UTF-8 JSON like :func:`canonical`, escapes strings the same way
    (checked for every code point), and writes every float the same way except those whose
    exponent is negative: ``1e-05`` (the standard library) against ``0.00001`` or ``1e-5``
    (orjson). So a text holding ``e-`` or ``0.0000`` anywhere (in a string too: only a needless
    fallback) goes the standard library's way, as do non-string keys and integers beyond 64 bits,
    which orjson refuses. NaN and infinity, which orjson writes as null, are refused as the
    standard library refuses them. A test checks the two agree on random data.
    """
    try:
        out = orjson.dumps(value, default=str, option=_FAST)
    except TypeError:
        return None
    if b"e-" in out or b"0.0000" in out:
        return None
    if b"null" in out and not _finite(value):  # orjson wrote NaN or infinity as null
        raise ValueError("Out of range float values are not JSON compliant")
    return out.decode()


def _finite(value: Any) -> bool:
    """Whether no float in ``value`` is NaN or infinite. Only exact floats: orjson hands float
    subclasses to ``default=str``, so they cannot have become null."""
    if type(value) is float:
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def timestamp(when: datetime) -> str:
    """A record's time as stored: ``2026-11-30T08:40:01.123456Z`` (UTC, microseconds).

    Written out by hand: ``strftime`` asks the C library, which re-reads the time zone on
    every call, and the ledger stamps every decision of every request."""
    w = when.astimezone(UTC) if when.tzinfo is not None and when.utcoffset() else when
    return (f"{w.year:04d}-{w.month:02d}-{w.day:02d}T{w.hour:02d}:{w.minute:02d}:{w.second:02d}"
            f".{w.microsecond:06d}Z")


_second: tuple[int, str] = (-1, "")  # the last whole second written out, and its text


def timestamp_ns(ns: int) -> str:
    """:func:`timestamp` of a ``time.time_ns()`` reading (what the ledger takes on the request path)."""
    global _second
    seconds, rest = divmod(ns, 1_000_000_000)
    last, text = _second  # one read: another thread may replace the pair meanwhile
    if seconds != last:  # records come many to a second: write the date and time once per second
        t = time.gmtime(seconds)
        text = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        _second = (seconds, text)
    return f"{text}.{rest // 1000:06d}Z"


def canonical(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces, UTF-8, no NaN."""
    return _CANONICAL.encode(value)


def record_hash(prev_hash: str, seq: int, ts: str, event: str, data: Any) -> str:
    body = canonical({"seq": seq, "ts": ts, "event": event, "data": data})
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: str
    event: str
    data: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    #: sequence number of the first record that fails, or None
    first_bad: int | None = None
    reason: str | None = None
    head: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fail(checked: int, seq: int, reason: str) -> VerifyResult:
    return VerifyResult(False, checked, seq, reason)


def verify_records(records: Iterable[AuditRecord]) -> VerifyResult:
    """Walk the chain in order; stop at the first record whose sequence, link or hash is wrong."""
    items = list(records)
    if not items:
        return VerifyResult(True, 0, head=GENESIS)
    prev_seq, prev_hash = _start(items)
    for n, rec in enumerate(items):
        if prev_seq is None:
            return _fail(
                n,
                rec.seq,
                f"the ledger starts at record {rec.seq}, and no audit.pruned record "
                f"accounts for the records before it (deleted)",
            )
        if rec.seq != prev_seq + 1:
            why = "missing (deleted)" if rec.seq > prev_seq + 1 else "out of order"
            return _fail(n, rec.seq, f"record {rec.seq} follows record {prev_seq}: records in between are {why}")
        if rec.prev_hash != prev_hash:
            return _fail(
                n,
                rec.seq,
                f"record {rec.seq} does not link to record {prev_seq}'s hash (a record was deleted, inserted or moved)",
            )
        if record_hash(rec.prev_hash, rec.seq, rec.ts, rec.event, rec.data) != rec.hash:
            return _fail(n, rec.seq, f"record {rec.seq} ({rec.event}) was changed after it was written")
        prev_seq, prev_hash = rec.seq, rec.hash
    return VerifyResult(True, len(items), head=prev_hash)


def _start(items: list[AuditRecord]) -> tuple[int | None, str]:
    """Where the chain may begin: genesis, or just after the records a retention prune removed."""
    first = items[0]
    if first.seq == 1:
        return 0, GENESIS
    for rec in items:
        if rec.event == "audit.pruned" and rec.data.get("through_seq") == first.seq - 1:
            return first.seq - 1, str(rec.data.get("last_hash"))
    return None, GENESIS


class _Pending:
    """A record taken but not yet chained: its time, event and data as JSON text (a snapshot).

    ``canonical``: the text is already the canonical JSON the record is hashed and stored
    with; otherwise it is a plain snapshot that the writer decodes, passes through
    ``store_text: false`` and encodes canonically. The time is taken as a ``time_ns()``
    reading (or the ledger clock's datetime) and written out as text by the writer.
    ``written`` holds (seq, stored data, prev_hash, hash) once the record is on disk.
    """

    __slots__ = ("canonical", "event", "prepare", "text", "when", "written")

    def __init__(self, when: int | datetime, event: str, text: str, canonical: bool,
                 prepare: Callable[[Any], Any]) -> None:
        self.when: int | datetime | str = when
        self.event = event
        self.text = text
        self.canonical = canonical
        self.prepare = prepare
        self.written: tuple[int, str, str, str] | None = None

    @property
    def ts(self) -> str:
        when = self.when
        if not isinstance(when, str):
            when = self.when = timestamp_ns(when) if isinstance(when, int) else timestamp(when)
        return when

    @property
    def record(self) -> AuditRecord:
        assert self.written is not None, "the record was not written yet"
        seq, data, prev_hash, digest = self.written
        return AuditRecord(seq, self.ts, self.event, json.loads(data), prev_hash, digest)


class _Appender:
    """This process's queue of records for one database, chained and written in order.

    Only the holder of ``_flush_lock`` takes records off the queue, a batch at a time,
    and puts them back at the front if the transaction fails, so a record is written
    once, in the order it was queued, or stays queued to be retried.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._queue: deque[_Pending] = deque()
        self._flush_lock = threading.Lock()
        _writer.register(self)

    def put(self, item: _Pending) -> None:
        self._queue.append(item)
        if len(self._queue) >= _BATCH:
            _writer.wake()  # a no-op while the writer is already woken

    def flush(self) -> None:
        """Write everything queued before this call."""
        try:
            last = self._queue[-1]
        except IndexError:
            # an empty queue may still mean a batch in flight: another thread took it and is
            # writing it; wait for that write (at exit, the process would otherwise end mid-write)
            with self._flush_lock:
                return
        self.write_through(last)

    def write_through(self, item: _Pending) -> AuditRecord:
        """Write the queue up to and including ``item``; its record."""
        with self._flush_lock:
            while item.written is None:
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), _BATCH))]
                if not batch:
                    raise RuntimeError("an audit record was flushed that was never queued")
                try:
                    self._write(batch)
                except BaseException:
                    self._queue.extendleft(reversed(batch))
                    raise
        return item.record

    def _write(self, batch: list[_Pending]) -> None:
        texts = [item.text if item.canonical else canonical(item.prepare(json.loads(item.text))) for item in batch]
        rows: list[tuple[int, str, str, str, str, str]] = []
        with local_write_lock(self.engine), begin_write(self.engine) as conn:
            write_lock(conn, _LOCK_KEY)
            head = conn.execute(_HEAD).first()
            seq, prev = (head.seq, head.hash) if head else (0, GENESIS)
            for item, data in zip(batch, texts, strict=True):
                seq += 1
                ts = item.ts
                digest = _chain_hash(prev, seq, ts, item.event, data)
                rows.append((seq, ts, item.event, data, prev, digest))
                prev = digest
            conn.exec_driver_sql(_writer.insert_sql(conn, t.audit, _COLUMNS), rows)
        for item, (seq, _, _, data, prev_hash, digest) in zip(batch, rows, strict=True):
            item.written = (seq, data, prev_hash, digest)


_COLUMNS = ("seq", "ts", "event", "data", "prev_hash", "hash")


@functools.lru_cache(maxsize=1024)  # event names repeat
def _event_json(event: str) -> str:
    return canonical(event)


def _chain_hash(prev_hash: str, seq: int, ts: str, event: str, data: str) -> str:
    """:func:`record_hash` given the canonical JSON of the data: the same text, built without re-encoding it.

    canonical() sorts the keys (data, event, seq, ts) and writes no spaces, so the body is this
    concatenation (a written timestamp is plain ASCII, so its JSON is itself in quotes); a test
    checks the two agree.
    """
    body = f'{{"data":{data},"event":{_event_json(event)},"seq":{seq},"ts":"{ts}"}}'
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


_appenders: dict[Engine, _Appender] = {}
_appenders_guard = threading.Lock()


def _fresh_guard_in_child() -> None:
    global _appenders_guard
    _appenders_guard = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_guard_in_child)


def _appender_for(engine: Engine) -> _Appender:
    with _appenders_guard:
        appender = _appenders.get(engine)
        if appender is None:
            appender = _appenders[engine] = _Appender(engine)
        return appender


class AuditLedger:
    """Append-only, hash-chained decision records in the telemetry database."""

    def __init__(
        self,
        engine: Engine,
        settings: AuditSettings | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings or AuditSettings()
        #: None: the system clock, read as time_ns() per record (cheaper than a datetime)
        self._clock = clock
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        #: added to every record unless the caller sets the key (App: {"config_hash": ...})
        self.context = dict(context or {})
        self._text_keys = frozenset(self.settings.text_keys)
        #: shared by every ledger on this database in this process, so they queue in one order
        self._appender = _appender_for(engine)

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        """The graph's hook: approvals are written at once, other decisions queued (see the module doc)."""
        if event in DURABLE_EVENTS:
            self.append(event, data)
        else:
            self.enqueue(event, data)

    def enqueue(self, event: str, data: dict[str, Any]) -> None:
        """Queue one decision record (data copied, time taken now); the background writer appends it."""
        self._appender.put(self._pending(event, data))

    def append(self, event: str, data: dict[str, Any]) -> AuditRecord:
        """Write one decision record, after everything queued before it; atomic across threads and processes."""
        item = self._pending(event, data)
        self._appender.put(item)
        return self._appender.write_through(item)

    def flush(self) -> None:
        """Write every record this process queued so far (for this database)."""
        self._appender.flush()

    def _pending(self, event: str, data: dict[str, Any]) -> _Pending:
        if not event or len(event) > 100:
            raise InputError(f"audit event name {event!r} must be 1-100 characters", hint="e.g. 'route', 'tool_call'")
        if not isinstance(data, dict):
            raise InputError("audit data must be a dict", hint="pass e.g. {'route': 'fast', 'reason': '...'}")
        merged = {**self.context, **data}
        when = time.time_ns() if self._clock is None else self._clock()
        try:  # the JSON text is the snapshot: the caller may change ``data`` once we return
            text = _canonical_fast(merged) if self.settings.store_text else None
            if text is not None:
                return _Pending(when, event, text, True, self._prepare)
            return _Pending(when, event, _SNAPSHOT.encode(merged), False, self._prepare)
        except ValueError as exc:
            raise InputError(f"audit data cannot be stored as JSON: {exc}", hint="replace NaN/inf values") from None

    def _prepare(self, plain: Any) -> Any:
        """The stored form of the decoded data: as is, or with text fields replaced by their sha256."""
        return plain if self.settings.store_text else _hash_text(plain, self._text_keys)

    def records(self, *, since: str | None = None) -> Iterator[AuditRecord]:
        """Every record in sequence order (optionally from an ISO timestamp on), queued ones included."""
        self.flush()  # now, not at the first next()
        return self._read(since)

    def _read(self, since: str | None) -> Iterator[AuditRecord]:
        q = sa.select(t.audit).order_by(t.audit.c.seq)
        if since:
            q = q.where(t.audit.c.ts >= since)
        with self.engine.connect() as conn:
            for r in conn.execute(q):
                yield AuditRecord(r.seq, r.ts, r.event, json.loads(r.data), r.prev_hash, r.hash)

    def verify(self) -> VerifyResult:
        return verify_records(self.records())

    def head(self) -> tuple[int, str]:
        """(last sequence number, its hash): publish it elsewhere to pin the whole ledger."""
        self.flush()
        with self.engine.connect() as conn:
            row = conn.execute(_HEAD).first()
        return (row.seq, row.hash) if row else (0, GENESIS)

    def export(self, out: IO[str], *, since: str | None = None) -> int:
        """Write the records as JSON lines (verifiable with ``keel audit verify --file``)."""
        n = 0
        for rec in self.records(since=since):
            out.write(canonical(rec.to_dict()) + "\n")
            n += 1
        return n

    def prune(self, *, older_than_days: float | None = None) -> int:
        """Delete records older than the retention period, keeping the chain verifiable."""
        days = older_than_days if older_than_days is not None else self.settings.retention_days
        if days is None:
            return 0
        self.flush()
        cutoff = timestamp(self.clock() - timedelta(days=days))
        with self.engine.connect() as conn:
            last = conn.execute(
                sa.select(t.audit.c.seq, t.audit.c.hash)
                .where(t.audit.c.ts < cutoff)
                .order_by(t.audit.c.seq.desc())
                .limit(1)
            ).first()
        if last is None:
            return 0
        self.append("audit.pruned", {"through_seq": last.seq, "last_hash": last.hash, "cutoff": cutoff})
        with local_write_lock(self.engine), begin_write(self.engine) as conn:
            return conn.execute(t.audit.delete().where(t.audit.c.seq <= last.seq)).rowcount


def read_export(lines: Iterable[str]) -> Iterator[AuditRecord]:
    """Records from ``keel audit export`` output."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            yield AuditRecord(int(d["seq"]), d["ts"], d["event"], d["data"], d["prev_hash"], d["hash"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f"line {n} of the export is not an audit record: {exc}",
                hint="pass a file written by `keel audit export`",
            ) from None


def _hash_text(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {
            k: (
                {"sha256": hashlib.sha256(canonical(v).encode()).hexdigest()}
                if k in keys and v is not None
                else _hash_text(v, keys)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_hash_text(v, keys) for v in value]
    return value
