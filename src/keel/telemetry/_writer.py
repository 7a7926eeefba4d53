"""Batched, off-the-request-path inserts.

Telemetry must not slow the request it observes: span and cost rows are handed
to a queue in O(1) and written in batches (one transaction per batch) by one
daemon thread shared by every writer in the process. ``flush()`` writes
everything queued so far, so a CLI command or a test reads its own writes; an
``atexit`` hook flushes at exit. The audit ledger's appender
(:mod:`keel.telemetry.audit`) is served by the same thread through
:func:`register`, and so are slow periodic chores such as retention
(:func:`every`).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ._db import local_write_lock

__all__ = [
    "BatchWriter", "Queued", "build_rows", "build_with", "every", "insert_sql", "insert_statement", "register", "wake",
]

log = logging.getLogger("keel.telemetry")
Row = tuple[sa.Table, Any]
#: turns the items queued for one table into its rows (one row may stand for several items)
Builder = Callable[[list[Any]], list[dict[str, Any]]]
INTERVAL_S = 0.25


class Queued(Protocol):
    """Anything the background thread drains: a queue to look at and a ``flush()``."""

    _queue: deque[Any]

    def flush(self) -> None: ...


_live: weakref.WeakSet[Queued] = weakref.WeakSet()
_builders: dict[sa.Table, Builder] = {}
#: [period in seconds, the bound method (held weakly), when it is next due (monotonic)]
_periodic: list[list[Any]] = []
_wake = threading.Event()
_started = threading.Lock()
_thread: list[threading.Thread] = []


class BatchWriter:
    def __init__(self, engine: Engine, *, batch: int = 512) -> None:
        self.engine = engine
        self.batch = batch
        self._queue: deque[Row] = deque()
        self._flush_lock = threading.Lock()
        register(self)

    def put(self, table: sa.Table, row: Any) -> None:
        """Queue a row, a function building it, or an item for the table's builder; all built
        off the request path."""
        self._queue.append((table, row))
        if len(self._queue) >= self.batch:
            wake()

    def flush(self) -> None:
        with self._flush_lock:
            while self._queue:
                self._write(self._drain())

    def _drain(self) -> dict[sa.Table, list[dict[str, Any]]]:
        queued: dict[sa.Table, list[Any]] = {}
        for _ in range(min(len(self._queue), self.batch * 8)):
            table, item = self._queue.popleft()
            queued.setdefault(table, []).append(item)
        grouped = {}
        for table, items in queued.items():
            try:
                rows = _builders.get(table, build_rows)(items)
            except Exception:  # a builder's bug must not lose the other tables' rows
                log.exception("telemetry: dropped %d items for %s that could not be built", len(items), table.name)
                continue
            if rows:
                grouped[table] = rows
        return grouped

    def _write(self, grouped: dict[sa.Table, list[dict[str, Any]]]) -> None:
        try:
            with local_write_lock(self.engine), self.engine.begin() as conn:
                for table, rows in grouped.items():
                    conn.exec_driver_sql(*insert_statement(conn, table, rows))
        except sa.exc.SQLAlchemyError:
            log.exception("telemetry: could not write %d rows", sum(map(len, grouped.values())))


def build_with(table: sa.Table, builder: Builder) -> None:
    """Have ``builder`` turn the items queued for ``table`` into its rows, a batch at a time
    (the trace store queues spans and writes one row per trace)."""
    _builders[table] = builder


def build_rows(items: list[Any]) -> list[dict[str, Any]]:
    """Rows as queued, or built by the function queued in their place."""
    rows = []
    for item in items:
        try:
            rows.append(item() if callable(item) else item)
        except Exception:  # one malformed row must not lose the batch
            log.exception("telemetry: dropped a row that could not be built")
    return rows


def insert_sql(conn: sa.Connection, table: sa.Table, columns: Sequence[str]) -> str:
    """INSERT of ``columns`` in the driver's own parameter style, for ``exec_driver_sql`` with tuples."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"


def insert_statement(
    conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]
) -> tuple[str, list[tuple[Any, ...]]]:
    """The driver's own executemany with tuples: a fraction of SQLAlchemy Core's per-row cost."""
    columns = list(rows[0])
    sql = insert_sql(conn, table, columns)
    values = itemgetter(*columns)
    return sql, [values(row) for row in rows] if len(columns) > 1 else [(row[columns[0]],) for row in rows]


def _run() -> None:
    while True:
        _wake.wait(INTERVAL_S)
        _wake.clear()
        for writer in list(_live):
            try:
                if writer._queue:
                    writer.flush()
            except Exception:  # the thread serves every writer: it must outlive any one failure
                log.exception("telemetry: the background writer failed; it will retry")
        _run_due()


def every(period_s: float, method: Callable[[], Any]) -> None:
    """Have the background thread call ``method`` about every ``period_s`` seconds, the first time
    one period from now. ``method`` is a bound method held weakly: it stops with its object."""
    _periodic.append([period_s, weakref.WeakMethod(method), time.monotonic() + period_s])  # type: ignore[arg-type]
    _ensure_thread()


def _run_due() -> None:
    now = time.monotonic()
    for task in list(_periodic):
        period, ref, due = task
        if now < due:
            continue
        method = ref()
        if method is None:  # its object is gone
            _periodic.remove(task)
            continue
        task[2] = now + period
        try:
            method()
        except Exception:  # a chore that fails now runs again next period; the writes go on
            log.exception("telemetry: a periodic task failed; it will run again in %gs", period)


def register(queued: Queued) -> None:
    """Have the background thread drain ``queued`` every interval (and flush it at exit)."""
    _live.add(queued)
    _ensure_thread()


def wake() -> None:
    """Ask the background thread to drain now rather than at the next interval."""
    if not _wake.is_set():  # a full queue asks on every put until drained: keep that cheap
        _wake.set()


def _ensure_thread() -> None:
    with _started:
        if not _thread:
            thread = threading.Thread(target=_run, name="keel-telemetry-writer", daemon=True)
            thread.start()
            _thread.append(thread)


def _after_fork_in_child() -> None:
    """A forked child starts empty: the parent writes what it queued; the writer thread did not survive."""
    for queued in list(_live):
        queued._queue.clear()
        queued._flush_lock = threading.Lock()  # type: ignore[attr-defined]
    _thread.clear()
    if _live:
        _ensure_thread()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _flush_all() -> None:
    for writer in list(_live):
        try:
            writer.flush()
        except Exception:  # one database failing at exit must not stop the others' flush
            log.exception("telemetry: could not flush at exit")
