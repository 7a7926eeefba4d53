"""One SQLite connection per thread for a file, in WAL mode: what keel's small SQLite stores share.

sqlite3 connections must not cross threads, and the server and job workers call these stores
from many; each thread opens its own on first use and keeps it.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

__all__ = ["ThreadConnections"]


class ThreadConnections:
    def __init__(self, path: str | Path, *, timeout: float = 30.0, autocommit: bool = True) -> None:
        self.path = str(path)
        self.timeout = timeout
        #: True: no implicit BEGIN (the store issues BEGIN IMMEDIATE itself); False: sqlite3's default
        self.autocommit = autocommit
        self._local = threading.local()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = (sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None) if self.autocommit
                    else sqlite3.connect(self.path, timeout=self.timeout))
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn
