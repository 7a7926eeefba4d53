"""Two real `keel serve` processes, each with its own KEEL_HOME, sharing PostgreSQL and Redis:
a run paused through one is approved through the other, which finishes it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .server_fixtures import wait_healthy

pytestmark = pytest.mark.scale

KEEL = Path(sys.executable).with_name("keel")
REDIS = "redis://127.0.0.1:6379/13"
CONFIG = """\
models:
  scripted:
    provider: fake
    replies: ["Done: deleted notes.txt."]
    input_price_per_mtok: 0.15
    output_price_per_mtok: 0.6
roles:
  chat: [scripted]
  fast: [scripted]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    log = (tmp_path / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [str(KEEL), "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path, env={**env, "KEEL_HOME": str(tmp_path / f"home-{name}")}, stdout=log, stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, proc, timeout_s=120, output=(tmp_path / f"{name}.log").read_text)
    return proc, base


@pytest.fixture
def servers(tmp_path: Path, pg_url: str) -> Iterator[tuple[str, str]]:
    import redis

    (tmp_path / "keel.yaml").write_text(CONFIG)
    (tmp_path / "ws").mkdir()
    prefix = f"keel-test:{os.getpid()}:{tmp_path.name}:"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update({
        "KEEL_CONFIG": str(tmp_path / "keel.yaml"),
        "KEEL_WORKSPACE": str(tmp_path / "ws"),
        "KEEL_TELEMETRY__DATABASE_URL": pg_url,
        "KEEL_GATEWAY__CACHE__BACKEND": "redis",
        "KEEL_GATEWAY__CACHE__REDIS_URL": REDIS,
        "KEEL_GATEWAY__CACHE__KEY_PREFIX": prefix,
    })
    client = redis.Redis.from_url(REDIS)
    procs = []
    try:
        a, base_a = _serve(tmp_path, "a", env)  # one at a time: each migrates the shared schema at start
        procs.append(a)
        b, base_b = _serve(tmp_path, "b", env)
        procs.append(b)
        yield base_a, base_b
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_two_servers_share_paused_runs_and_approvals(servers: tuple[str, str], tmp_path: Path) -> None:
    base_a, base_b = servers
    notes = tmp_path / "ws" / "notes.txt"
    notes.write_text("x")

    paused = httpx.post(base_a + "/v1/ask", json={"question": "delete notes.txt in the workspace"}, timeout=60)
    assert paused.status_code == 202, paused.text
    body = paused.json()
    approval_id = body["approval"]["id"]
    assert (body["status"], body["approval"]["tool"], body["approval"]["args"]) == (
        "pending_approval", "delete_file", {"path": "notes.txt"})

    listed = httpx.get(base_b + "/v1/approvals", params={"status": "pending"}, timeout=30)
    assert [(x["id"], x["tool"]) for x in listed.json()] == [(approval_id, "delete_file")]
    done = httpx.post(f"{base_b}/v1/approvals/{approval_id}/approve", timeout=60)
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["answer"]) == ("answered", "Done: deleted notes.txt.")
    assert not notes.exists()

    again = httpx.post(f"{base_a}/v1/approvals/{approval_id}/approve", timeout=60)
    assert again.status_code == 422 and again.json()["error"] == "approval_invalid", again.text
    assert f"approval {approval_id} is already used" in again.json()["message"]
    assert not (tmp_path / "home-a" / "approvals.sqlite3").exists()
    assert not (tmp_path / "home-b" / "checkpoints.sqlite3").exists()
