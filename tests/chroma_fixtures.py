"""A real Chroma server (``chroma run``), for knowledge tests where several processes or replicas share vectors."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def chroma_server(path: Path) -> Iterator[int]:
    """Chroma's own server on a free loopback port, its data under ``path``; yields the port once it answers."""
    import httpx

    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
    assert chroma, "chromadb's `chroma` command is installed with keel"
    port = free_port()
    server = subprocess.Popen([chroma, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert server.poll() is None and time.monotonic() < deadline, "chroma run did not start"
                time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)
