"""Test-wide guards and fixtures.

- No test reaches the network by accident: sockets may only connect to loopback.
- Each test gets its own KEEL_HOME and working directory, so no state leaks.
- The real embedded model is opt-in per test with the ``local_model`` marker.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address, *args, **kwargs):  # type: ignore[no-untyped-def]
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = host == "localhost"
        if not ok:
            raise RuntimeError(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address, *args, **kwargs)


socket.socket.connect = _loopback_only  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "keel-home"
    monkeypatch.setenv("KEEL_HOME", str(home))
    monkeypatch.delenv("KEEL_CONFIG", raising=False)
    monkeypatch.delenv("KEEL_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture
def keel_home(_isolated_home: Path) -> Path:
    return _isolated_home


@pytest.fixture
def pg_url():  # type: ignore[no-untyped-def]
    """A SQLAlchemy URL into a fresh schema of the real PostgreSQL server, dropped afterwards."""
    import uuid

    import sqlalchemy as sa

    schema = f"keel_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def hung_redis():  # type: ignore[no-untyped-def]
    """A port that accepts connections and never answers (a Redis that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The workspace folder of the server tests' scripted App (tests that need none define their own)."""
    from .test_server_api import make_workspace

    return make_workspace(tmp_path, monkeypatch)


@pytest.fixture
def keys(keel_home: Path):  # type: ignore[no-untyped-def]
    """An API key store in this test's data directory."""
    from keel.server import KeyStore

    return KeyStore(f"sqlite:///{keel_home / 'keys.sqlite3'}")


@pytest.fixture
def spawn():  # type: ignore[no-untyped-def]
    """Start processes that are killed (and reaped) when the test ends, however it ends:
    ``spawn(args, cwd, merge_stderr=False)`` returns the Popen (text mode, pipes)."""
    import os
    import signal
    import subprocess

    procs: list[subprocess.Popen[str]] = []

    def start(args: list[str], cwd: Path, *, merge_stderr: bool = False) -> subprocess.Popen[str]:
        proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, text=True, start_new_session=True,
                                stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
