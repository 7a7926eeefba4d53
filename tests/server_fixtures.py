"""What the server tests share besides the fixtures in conftest.py (``workspace``, ``keys``)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import httpx


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_healthy(base: str, proc: subprocess.Popen, *, timeout_s: float, output: Callable[[], str]) -> None:  # type: ignore[type-arg]
    """Wait until the server at ``base`` answers ``/healthz`` with 200; if the process ends or
    ``timeout_s`` passes first, kill it (so a pipe can be read to its end) and fail with its ``output()``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the server at {base} did not come up:\n{output()}")
        time.sleep(0.2)
