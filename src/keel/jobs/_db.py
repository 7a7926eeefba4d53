"""The job table's database: one SQLAlchemy engine per URL, migrated on first open.

Embedded mode keeps jobs in ``<home>/jobs.sqlite3`` (WAL: readers never block the
writer, and a write transaction takes the lock at BEGIN so two workers cannot both
claim the same job). When ``telemetry.database_url`` is set the table lives there
(PostgreSQL in scale mode). The schema is owned by the Alembic migrations beside
this module, tracked in their own version table.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..config import Settings
from ..errors import ConfigError, MissingDependency
from ..telemetry._db import sqlite_engine

__all__ = ["VERSION_TABLE", "database_url", "open_engine", "write"]

VERSION_TABLE = "keel_jobs_version"
_MIGRATIONS = Path(__file__).parent / "migrations"
_engines: dict[str, Engine] = {}
_guard = threading.Lock()


def database_url(settings: Settings) -> str:
    """``telemetry.database_url`` when set, else SQLite under the data dir."""
    return settings.telemetry.database_url or f"sqlite:///{settings.data_dir / 'jobs.sqlite3'}"


def open_engine(url: str) -> Engine:
    """The engine for ``url``, created and migrated once per process."""
    with _guard:
        engine = _engines.get(url)
        if engine is None:
            engine = _create(url)
            _upgrade(engine)
            _engines[url] = engine
        return engine


@contextmanager
def write(engine: Engine) -> Iterator[sa.Connection]:
    """A transaction that takes the write lock at BEGIN (SQLite: BEGIN IMMEDIATE), committed on exit."""
    with engine.connect() as conn:
        conn.info["write"] = True  # info belongs to the pooled DB-API connection: take the flag off again
        try:
            with conn.begin():
                yield conn
        finally:
            conn.info.pop("write", None)


def _create(url: str) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(f"the job database URL {url!r} is not a database URL",
                          hint="set telemetry.database_url to sqlite:///path/file.sqlite3 or "
                               "postgresql+psycopg://user@host/db") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return sqlite_engine(parsed)
    if backend == "postgresql":
        try:
            return sa.create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=10)
        except ModuleNotFoundError:
            raise MissingDependency("the PostgreSQL driver (psycopg)", "scale") from None
    raise ConfigError(f"the job table cannot live in {backend!r}", hint="use sqlite or postgresql")




def _upgrade(engine: Engine) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["version_table"] = VERSION_TABLE
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _fresh_lock_in_child() -> None:
    """A lock a parent's thread held at fork would never be released in the child."""
    global _guard
    _guard = threading.Lock()
    _engines.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_lock_in_child)
