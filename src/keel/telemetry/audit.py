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

The graph takes ``ledger.append`` (or the ledger itself) as its
``audit(event, data)`` callable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..config import AuditSettings
from ..errors import InputError
from . import _schema as t
from ._db import begin_write, local_write_lock, write_lock

__all__ = [
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
_INSERT = t.audit.insert()


def canonical(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


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


class AuditLedger:
    """Append-only, hash-chained decision records in the telemetry database."""

    def __init__(
        self,
        engine: Engine,
        settings: AuditSettings | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        context: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings or AuditSettings()
        self.clock = clock
        #: added to every record unless the caller sets the key (App: {"config_hash": ...})
        self.context = dict(context or {})
        self._text_keys = frozenset(self.settings.text_keys)

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        self.append(event, data)

    def append(self, event: str, data: dict[str, Any]) -> AuditRecord:
        """Write one decision record after the current head; atomic across threads and processes."""
        if not event or len(event) > 100:
            raise InputError(f"audit event name {event!r} must be 1-100 characters", hint="e.g. 'route', 'tool_call'")
        if not isinstance(data, dict):
            raise InputError("audit data must be a dict", hint="pass e.g. {'route': 'fast', 'reason': '...'}")
        body = self._prepare(data)
        ts = self.clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with local_write_lock(self.engine), begin_write(self.engine) as conn:
            write_lock(conn, _LOCK_KEY)
            head = conn.execute(_HEAD).first()
            seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
            digest = record_hash(prev, seq, ts, event, body)
            conn.execute(
                _INSERT,
                {
                    "seq": seq,
                    "ts": ts,
                    "event": event,
                    "data": canonical(body),
                    "prev_hash": prev,
                    "hash": digest,
                },
            )
        return AuditRecord(seq, ts, event, body, prev, digest)

    def _prepare(self, data: dict[str, Any]) -> dict[str, Any]:
        try:
            plain = json.loads(json.dumps({**self.context, **data}, default=str, allow_nan=False))
        except ValueError as exc:
            raise InputError(f"audit data cannot be stored as JSON: {exc}", hint="replace NaN/inf values") from None
        return plain if self.settings.store_text else _hash_text(plain, self._text_keys)

    def records(self, *, since: str | None = None) -> Iterator[AuditRecord]:
        """Every record in sequence order (optionally from an ISO timestamp on)."""
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
        cutoff = (self.clock() - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
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
