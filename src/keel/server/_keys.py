"""API keys: created once, shown once, stored only as a salted hash.

A key reads ``keel_<id>_<secret>``. The ``id`` (12 hex characters) finds the
row; the ``secret`` (32 random bytes, URL-safe base64) is checked against
``sha256(salt || secret)`` with a constant-time comparison. The plaintext is
never written anywhere: lose it and you create a new one.

A key created with ``act_as_any`` (``keel keys create NAME --act-as-any``) may
name another user in a request body (a backend spending on behalf of its own
users); any other key is always its own name.

A key created with a tenant (``keel keys create NAME --tenant ACME``) runs its
requests as that tenant: budgets with scope ``tenant`` and cost reports by tenant
see them as the customer's spend. Only an ``act_as_any`` key may name another
tenant in a request body.

The table lives in ``telemetry.database_url`` when that is set (PostgreSQL in
scale mode, so every API replica sees the same keys), else in SQLite at
``<home>/keys.sqlite3``. A table made before ``act_as_any`` existed gets the
column added when it is opened, and one from before tenants gets ``tenant`` (null).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..config import Settings
from ..errors import InputError, NotFound, Unauthorized

__all__ = ["ApiKey", "KeyStore", "keys_url"]

_PREFIX = "keel_"
_KEY = re.compile(r"^keel_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")

_metadata = sa.MetaData()
_table = sa.Table(
    "keel_api_keys",
    _metadata,
    sa.Column("id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, index=True),
    sa.Column("salt", sa.String(32), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
    sa.Column("act_as_any", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("tenant", sa.String(128)),
)

#: columns added after the first release: name -> the DDL type added to an older table
_ADDED = {"act_as_any": "BOOLEAN NOT NULL DEFAULT FALSE", "tenant": "VARCHAR(128)"}


@dataclass(frozen=True)
class ApiKey:
    """One key's record (never its secret)."""

    id: str
    name: str
    created_at: float
    revoked_at: float | None = None
    #: may name another user (``user`` in a request body) for budgets, costs and audit
    act_as_any: bool = False
    #: the customer or team its requests are budgeted and costed as (None: no tenant)
    tenant: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": _iso(self.created_at),
            "revoked_at": _iso(self.revoked_at) if self.revoked_at else None,
            "active": self.active,
            "act_as_any": self.act_as_any,
            "tenant": self.tenant,
        }


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def keys_url(settings: Settings) -> str:
    """Where the key table lives: the telemetry database when configured, else SQLite under the data dir."""
    return settings.telemetry.database_url or f"sqlite:///{settings.data_dir / 'keys.sqlite3'}"


_engines: dict[str, Engine] = {}
_guard = threading.Lock()


def _engine(url: str) -> Engine:
    with _guard:
        engine = _engines.get(url)
        if engine is None:
            parsed = sa.engine.make_url(url)
            kwargs: dict[str, Any] = {}
            if parsed.get_backend_name() == "sqlite":
                if parsed.database and parsed.database != ":memory:":
                    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            else:
                kwargs["pool_pre_ping"] = True
            engine = sa.create_engine(parsed, **kwargs)
            _metadata.create_all(engine)
            _add_missing_columns(engine)
            _engines[url] = engine
        return engine


def _columns(engine: Engine) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns(_table.name)}


def _add_missing_columns(engine: Engine) -> None:
    """A key table from before ``act_as_any`` or ``tenant``: add what is missing (every old key acts
    only as itself, with no tenant)."""
    missing = [name for name in _ADDED if name not in _columns(engine)]
    exists = " IF NOT EXISTS" if engine.dialect.name == "postgresql" else ""  # replicas may race here
    for name in missing:
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE {_table.name} ADD COLUMN{exists} {name} {_ADDED[name]}"))
        except sa.exc.OperationalError:
            if name not in _columns(engine):  # another process on the same SQLite file added it first: fine
                raise


def _record(row: Any) -> ApiKey:
    return ApiKey(row["id"], row["name"], row["created_at"], row["revoked_at"], bool(row["act_as_any"]),
                  row["tenant"])


class KeyStore:
    """Create, verify, list and revoke API keys."""

    def __init__(self, url: str) -> None:
        self.engine = _engine(url)

    @classmethod
    def for_settings(cls, settings: Settings) -> KeyStore:
        return cls(keys_url(settings))

    def create(self, name: str, *, act_as_any: bool = False, tenant: str | None = None) -> tuple[ApiKey, str]:
        """A new key for ``name``; returns its record and the plaintext key (shown once, never stored).

        ``act_as_any``: requests with this key may name another user (and tenant) in their body.
        ``tenant``: requests with this key run as that tenant (budgets, costs, audit)."""
        if not _NAME.match(name):
            raise InputError(
                f"key name {name!r} must be 1-64 letters, digits, or . _ @ - (starting with a letter or digit)",
                hint="name the key after who uses it, e.g. keel keys create ann or keel keys create ci-bot",
            )
        if tenant is not None and not _TENANT.match(tenant):
            raise InputError(
                f"tenant {tenant!r} must be 1-128 letters, digits, or . _ @ : - (starting with a letter or digit)",
                hint="name the tenant after the customer, e.g. keel keys create acme-app --tenant acme",
            )
        if any(k.name == name and k.active for k in self.list()):
            raise InputError(
                f"an active key named {name!r} already exists",
                hint=f"revoke it first (keel keys revoke {name}) or pick another name",
            )
        key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
        row = {"id": key_id, "name": name, "salt": salt, "key_hash": _digest(salt, secret), "created_at": _now(),
               "act_as_any": act_as_any, "tenant": tenant}
        with self.engine.begin() as conn:
            conn.execute(_table.insert().values(**row))
        record = ApiKey(key_id, name, row["created_at"], act_as_any=act_as_any, tenant=tenant)
        return record, f"{_PREFIX}{key_id}_{secret}"

    def verify(self, key: str) -> ApiKey:
        """The active key whose plaintext is ``key``; raises Unauthorized otherwise."""
        found = _KEY.match(key.strip())
        if found is None:
            raise Unauthorized("the API key is malformed",
                               hint="keys look like keel_<id>_<secret>; make one with keel keys create NAME")
        key_id, secret = found.groups()
        with self.engine.connect() as conn:
            row = conn.execute(_table.select().where(_table.c.id == key_id)).mappings().first()
        if row is None or not hmac.compare_digest(row["key_hash"], _digest(row["salt"], secret)):
            raise Unauthorized("the API key is not valid",
                               hint="check the key, or make one with keel keys create NAME")
        if row["revoked_at"] is not None:
            raise Unauthorized("the API key was revoked", hint="create a new one with keel keys create NAME")
        return _record(row)

    def list(self, *, include_revoked: bool = True) -> list[ApiKey]:
        query = _table.select().order_by(_table.c.created_at)
        if not include_revoked:
            query = query.where(_table.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_record(r) for r in rows]

    def any_active(self) -> bool:
        query = sa.select(_table.c.id).where(_table.c.revoked_at.is_(None)).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def revoke(self, ref: str) -> list[ApiKey]:
        """Revoke the active keys named ``ref``, or the key whose id is ``ref``; returns what was revoked."""
        targets = [k for k in self.list(include_revoked=False) if ref in (k.name, k.id)]
        if not targets:
            raise NotFound(f"no active API key named or with id {ref!r}", hint="see keel keys list")
        when = _now()
        with self.engine.begin() as conn:
            conn.execute(
                _table.update()
                .where(_table.c.id.in_([k.id for k in targets]), _table.c.revoked_at.is_(None))
                .values(revoked_at=when)
            )
        return [ApiKey(k.id, k.name, k.created_at, when, k.act_as_any, k.tenant) for k in targets]
