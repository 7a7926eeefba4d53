"""What the server tests share besides the fixtures in conftest.py (``workspace``, ``keys``)."""

from __future__ import annotations


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
