"""A person's approval of one tool call: recorded, bound, single use, expiring.

The record holds the tool, its exact arguments and their hash, who asked, and
when it expires. Approving is a decision by a person (``keel approvals approve
ID``); the run then resumes and *consumes* the approval, which succeeds only if
the approval is still ``approved``, unexpired, and its hash matches both the
stored arguments and the call the run is about to make. Consuming is one
conditional UPDATE, so a replay finds it already ``used``. Nothing a model or a
document says can approve anything: only :meth:`ApprovalStore.decide` does.

Stored with SQLAlchemy Core: SQLite under the data directory by default, or the
``state.database_url`` database (PostgreSQL in scale mode) with the same table,
so an approval asked on one API replica can be listed, decided and used on
another. Every state change is one conditional UPDATE, so two replicas (or two
people) racing to decide or use the same approval cannot both succeed.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from ..errors import ConfigError, InputError, MissingDependency, StateUnavailable
from .registry import args_hash

__all__ = ["Approval", "ApprovalInvalid", "ApprovalNotFound", "ApprovalStore", "StateUnavailable", "redacted"]

Status = Literal["pending", "approved", "rejected", "expired", "used"]

_metadata = sa.MetaData()
_table = sa.Table(
    "approvals",
    _metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("run_id", sa.String(80), nullable=False, index=True),
    sa.Column("tool", sa.String(100), nullable=False),
    sa.Column("args_json", sa.Text, nullable=False),
    sa.Column("args_hash", sa.String(64), nullable=False),
    sa.Column("requester", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("decided_by", sa.String(200)),
    sa.Column("decided_at", sa.Float),
    sa.Column("reason", sa.Text),
)


#: pg_advisory_xact_lock key that serialises creating the table when replicas start together
_SETUP_LOCK = 0x6B65656C_61707072  # "keelappr"


class ApprovalInvalid(InputError):
    """The approval cannot be used: unknown, already decided or used, expired, or altered."""

    code = "approval_invalid"


class ApprovalNotFound(ApprovalInvalid):
    """No approval has that id (HTTP 404)."""

    http_status = 404
    code = "not_found"


@dataclass
class Approval:
    id: str
    run_id: str
    tool: str
    args: dict[str, Any]
    args_hash: str
    requester: str
    created_at: float
    expires_at: float
    status: Status
    decided_by: str | None = None
    decided_at: float | None = None
    reason: str | None = None

    def public(self) -> dict[str, Any]:
        """The ``approval`` object of an answer that waits for a person."""
        return {"id": self.id, "tool": self.tool, "args": self.args, "expires_at": _iso(self.expires_at)}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"], data["expires_at"] = _iso(self.created_at), _iso(self.expires_at)
        data["decided_at"] = _iso(self.decided_at) if self.decided_at else None
        return data


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


def redacted(url: str | sa.engine.URL) -> str:
    """A database URL fit for a message: the password hidden."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(not a database URL)"


def _engine(url: str) -> sa.engine.Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(
            f"state.database_url {url!r} is not a database URL",
            hint="use sqlite:///path/file.sqlite3 or postgresql+psycopg://user@host/db",
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return sa.create_engine(parsed, connect_args={"timeout": 30})
    if backend == "postgresql":
        try:
            return sa.create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=10)
        except ModuleNotFoundError:
            raise MissingDependency("the PostgreSQL driver (psycopg)", "scale") from None
    raise ConfigError(f"approvals cannot be stored in {backend!r}", hint="use sqlite or postgresql")


class ApprovalStore:
    def __init__(self, url: str, *, clock: Any = _now) -> None:
        self.engine = _engine(url)
        self._clock = clock
        with self._begin() as conn:
            if conn.dialect.name == "postgresql":  # replicas starting together would race to create it
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SETUP_LOCK})
            _metadata.create_all(conn)

    @classmethod
    def sqlite(cls, path: Any, **kwargs: Any) -> ApprovalStore:
        return cls(f"sqlite:///{path}", **kwargs)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Database errors leave as StateUnavailable, saying which database and what to do."""
        try:
            yield
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise StateUnavailable(
                f"the approvals database {redacted(self.engine.url)} cannot be used: {exc.orig}",
                hint="start the database or fix state.database_url (default: telemetry.database_url when it is "
                "PostgreSQL); paused runs cannot be listed or resumed until then",
            ) from None

    @contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        with self._translated(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        with self._translated(), self.engine.connect() as conn:
            yield conn

    def create(self, *, run_id: str, tool: str, args: dict[str, Any], requester: str, ttl_s: float) -> Approval:
        now = self._clock()
        row = {
            "id": "apr_" + secrets.token_hex(8),
            "run_id": run_id,
            "tool": tool,
            "args_json": json.dumps(args, sort_keys=True, ensure_ascii=False),
            "args_hash": args_hash(tool, args),
            "requester": requester,
            "created_at": now,
            "expires_at": now + ttl_s,
            "status": "pending",
        }
        with self._begin() as conn:
            conn.execute(_table.insert().values(**row))
        return self._approval(row)

    def get(self, approval_id: str) -> Approval:
        with self._connect() as conn:
            row = conn.execute(_table.select().where(_table.c.id == approval_id)).mappings().first()
        if row is None:
            raise ApprovalNotFound(f"no approval {approval_id!r}", hint="see `keel approvals list` for the ids")
        return self._approval(dict(row))

    def list(self, status: Status | None = None) -> list[Approval]:
        self.expire_due()
        query = _table.select().order_by(_table.c.created_at)
        if status is not None:
            query = query.where(_table.c.status == status)
        with self._connect() as conn:
            return [self._approval(dict(r)) for r in conn.execute(query).mappings()]

    def expire_due(self) -> int:
        """Mark pending approvals past their expiry as expired (expiry counts as rejection)."""
        with self._begin() as conn:
            result = conn.execute(
                _table.update()
                .where(_table.c.status == "pending", _table.c.expires_at <= self._clock())
                .values(status="expired", reason="expired before a decision")
            )
        return result.rowcount

    def decide(self, approval_id: str, *, approve: bool, approver: str, reason: str | None = None) -> Approval:
        """A person's decision. Only a pending, unexpired approval can be decided, once.

        The decision is one conditional UPDATE (still pending, not yet expired), so when two
        people or two replicas decide at the same moment exactly one wins; the other is told
        who did. An approval that expired is returned as ``expired`` (expiry counts as rejection).
        """
        if not approver.strip():
            raise InputError("an approval decision needs the approver's name", hint="pass --by NAME")
        self.expire_due()
        now = self._clock()
        status = "approved" if approve else "rejected"
        with self._begin() as conn:
            done = conn.execute(
                _table.update()
                .where(_table.c.id == approval_id, _table.c.status == "pending", _table.c.expires_at > now)
                .values(status=status, decided_by=approver, decided_at=now, reason=reason)
            ).rowcount
        if done != 1:
            self.expire_due()  # a pending approval the UPDATE skipped is past its expiry
        current = self.get(approval_id)
        if done == 1 or current.status == "expired":
            return current
        by = f" by {current.decided_by}" if current.decided_by else ""
        raise ApprovalInvalid(
            f"approval {approval_id} is already {current.status}{by}",
            hint="an approval can be decided once; ask again to get a new one",
        )

    def consume(self, approval_id: str, *, tool: str, args: dict[str, Any]) -> Approval:
        """Use an approved approval for exactly this call, once. Raises ApprovalInvalid otherwise."""
        record = self.get(approval_id)
        stored_hash = args_hash(record.tool, record.args)
        if stored_hash != record.args_hash or args_hash(tool, args) != record.args_hash:
            raise ApprovalInvalid(
                f"approval {approval_id} does not match the call (its arguments were altered)",
                hint="ask again: an approval covers one exact call",
            )
        if record.status != "approved":
            raise ApprovalInvalid(
                f"approval {approval_id} is {record.status}, not approved",
                hint="an approval works once; ask again to get a new one",
            )
        with self._begin() as conn:
            done = conn.execute(
                _table.update()
                .where(
                    _table.c.id == approval_id, _table.c.status == "approved", _table.c.args_hash == record.args_hash
                )
                .values(status="used")
            ).rowcount
        if done != 1:
            raise ApprovalInvalid(f"approval {approval_id} was already used", hint="ask again to get a new one")
        return record

    @staticmethod
    def _approval(row: dict[str, Any]) -> Approval:
        data = dict(row)
        data["args"] = json.loads(data.pop("args_json"))
        return Approval(**data)
