"""Batched, off-the-request-path inserts.

Telemetry must not slow the request it observes: span and cost rows are handed
to a queue in O(1) and written by one daemon thread in batches (one
transaction per batch). ``flush()`` writes everything queued so far, so a CLI
command or a test reads its own writes; an ``atexit`` hook flushes at exit.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ._db import local_write_lock

__all__ = ["BatchWriter"]

log = logging.getLogger("keel.telemetry")
Row = tuple[sa.Table, Callable[[], dict[str, Any]] | dict[str, Any]]
_live: weakref.WeakSet[BatchWriter] = weakref.WeakSet()


class BatchWriter:
    def __init__(self, engine: Engine, *, interval_s: float = 0.25, batch: int = 512) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.batch = batch
        self._queue: deque[Row] = deque()
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="keel-telemetry-writer", daemon=True)
        self._thread.start()
        _live.add(self)

    def put(self, table: sa.Table, row: Callable[[], dict[str, Any]] | dict[str, Any]) -> None:
        """Queue a row (or a function building it, run off the request path)."""
        self._queue.append((table, row))
        if len(self._queue) >= self.batch:
            self._wake.set()

    def flush(self) -> None:
        with self._flush_lock:
            while self._queue:
                self._write(self._drain())

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.flush()

    def _drain(self) -> dict[sa.Table, list[dict[str, Any]]]:
        grouped: dict[sa.Table, list[dict[str, Any]]] = {}
        for _ in range(min(len(self._queue), self.batch * 8)):
            table, row = self._queue.popleft()
            try:
                grouped.setdefault(table, []).append(row() if callable(row) else row)
            except Exception:  # one malformed span must not lose the batch
                log.exception("telemetry: dropped a row that could not be built")
        return grouped

    def _write(self, grouped: dict[sa.Table, list[dict[str, Any]]]) -> None:
        try:
            with local_write_lock(self.engine), self.engine.begin() as conn:
                for table, rows in grouped.items():
                    columns = list(rows[0])
                    # the driver's executemany with tuples: a fraction of Core's per-row cost
                    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
                    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
                    conn.exec_driver_sql(sql, [tuple(row[c] for c in columns) for row in rows])
        except sa.exc.SQLAlchemyError:
            log.exception("telemetry: could not write %d rows", sum(map(len, grouped.values())))

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._queue:
                self.flush()


@atexit.register
def _flush_all() -> None:
    for writer in list(_live):
        writer.flush()
