"""Operations: HTTP metrics by route template, no CDN docs, the request timeout, workers, SIGTERM draining."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from keel.errors import ConfigError
from keel.graph import by_purpose
from keel.models.fake import FunctionProvider
from keel.server import create_app, serve

from .server_fixtures import wait_healthy
from .test_server_api import REPLY, ScriptedApp, scripted_app


def _series(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric in Prometheus text."""
    found = {}
    for line in text.splitlines():
        m = re.match(rf"^{name}(\{{.*\}})? (\S+)$", line)
        if m:
            found[m.group(1) or ""] = float(m.group(2))
    return found


def test_metrics_count_requests_by_route_template_and_status(workspace: Path) -> None:
    with TestClient(create_app(scripted_app(), workers=False)) as client:
        client.post("/v1/ask", json={"question": "What is Python?"})
        for job_id in ("job_a", "job_b", "job_c"):
            assert client.get(f"/v1/jobs/{job_id}").status_code == 404
        client.get("/no/such/path/1")
        client.get("/no/such/path/2")
        client.post("/v1/ask", content=b"x" * (300 * 1024), headers={"content-type": "application/json"})
        text = client.get("/metrics").text
    requests = _series(text, "keel_http_requests_total")
    assert requests['{method="POST",route="/v1/ask",status="200"}'] == 1
    assert requests['{method="GET",route="/v1/jobs/{job_id}",status="404"}'] == 3  # one series, not one per id
    assert requests['{method="GET",route="/{path}",status="404"}'] == 2  # the web UI's mount at / takes the rest
    assert requests['{method="POST",route="/v1/ask",status="413"}'] == 1  # refused before routing, still named
    assert not any("job_a" in labels or "/no/such" in labels for labels in requests)
    durations = _series(text, "keel_http_request_duration_seconds_count")
    assert durations['{method="POST",route="/v1/ask"}'] == 2
    assert _series(text, "keel_http_requests_in_flight") == {"": 1.0}  # the /metrics request itself
    assert 'keel_requests_total{route=' in text  # keel's own series are still there, in the same registry


class Gate:
    """A model that waits until the test lets it answer."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, request: Any) -> str:
        self.entered.set()
        self.release.wait(30)
        return by_purpose({"answer": [REPLY], "route_judge": ['{"label": "chat", "why": "x"}']})(request)  # type: ignore[no-any-return]


def gated_app(gate: Gate, **settings: Any) -> ScriptedApp:
    return ScriptedApp(
        providers={"slow": FunctionProvider(gate, name="slow")},
        models={"slow": {"provider": "fake"}},
        roles={"chat": ["slow"], "fast": ["slow"]},
        gateway={"cache": {"enabled": False}},
        **settings,
    )


def test_in_flight_requests_are_counted_while_they_run(workspace: Path) -> None:
    gate = Gate()
    with TestClient(create_app(gated_app(gate), workers=False)) as client:
        asking = threading.Thread(target=client.post, args=("/v1/ask",), kwargs={"json": {"question": "hi"}})
        asking.start()
        try:
            assert gate.entered.wait(30)
            during = _series(client.get("/metrics").text, "keel_http_requests_in_flight")
        finally:
            gate.release.set()
            asking.join(30)
        after = _series(client.get("/metrics").text, "keel_http_requests_in_flight")
    assert (during, after) == ({"": 2.0}, {"": 1.0})


def test_a_run_longer_than_the_request_timeout_is_a_typed_504(workspace: Path) -> None:
    gate = Gate()
    app = gated_app(gate, server={"request_timeout_s": 0.5})
    try:
        with TestClient(create_app(app, workers=False)) as client:
            started = time.monotonic()
            r = client.post("/v1/ask", json={"question": "What is Python?"})
            assert time.monotonic() - started < 10
            assert r.status_code == 504
            assert r.json() == {"error": "request_timeout", "message": "no answer within the server's request "
                                "timeout of 0.5s", "hint": r.json()["hint"]} and "/v1/jobs" in r.json()["hint"]
            chat = {"model": "keel", "messages": [{"role": "user", "content": "What is Python?"}]}
            openai_shaped = client.post("/v1/chat/completions", json=chat)
            assert openai_shaped.status_code == 504 and openai_shaped.json()["error"]["code"] == "request_timeout"
            streamed = client.post("/v1/chat/completions", json={**chat, "stream": True}).text
            assert '"code": "request_timeout"' in streamed and '"status": 504' in streamed
            assert streamed.rstrip().endswith("data: [DONE]")
    finally:
        gate.release.set()  # the timed-out runs finish their held call, then stop (tests/test_server_cancel.py)


def test_the_default_timeout_leaves_room_for_the_graphs_own_wall_limit(workspace: Path) -> None:
    settings = scripted_app(limits={"max_wall_s": 60}).settings
    assert settings.server.timeout_s(settings.limits.max_wall_s) == 90
    assert scripted_app(server={"request_timeout_s": 5}).settings.server.timeout_s(60) == 5


def test_swagger_and_redoc_are_off_and_the_openapi_document_is_served(workspace: Path) -> None:
    with TestClient(create_app(scripted_app(), workers=False)) as client:
        assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
        document = client.get("/openapi.json")
        ui = client.get("/")
    assert document.status_code == 200 and "/v1/ask" in document.json()["paths"]
    assert ui.status_code == 200 and not re.search(r"""(src|href)=["']?(https?:)?//""", ui.text)  # nothing remote


def test_several_processes_refuse_the_embedded_knowledge_store(workspace: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        serve(scripted_app(), port=1, workers=2, announce=lambda _: None)
    assert "knowledge.store: server" in (refused.value.hint or "")


_SLOW_SERVER = """
import sys, time
from keel import App
from keel.models.fake import FunctionProvider
from keel.server import serve

def slow(request):
    time.sleep(1.0)
    return "Python is a programming language."

app = App(providers={"slow": FunctionProvider(slow, name="slow")}, models={"slow": {"provider": "fake"}},
          roles={"chat": ["slow"], "fast": ["slow"]}, gateway={"cache": {"enabled": False}},
          server={"shutdown_timeout_s": 30})
serve(app, port=int(sys.argv[1]), log_level="info", announce=lambda line: print(line, flush=True))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigterm_lets_a_request_in_flight_finish_then_exits(tmp_path: Path) -> None:
    script = tmp_path / "slow_server.py"
    script.write_text(_SLOW_SERVER)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "KEEL_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, str(script), str(port)], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_healthy(base, proc, timeout_s=90, output=lambda: proc.stdout.read() if proc.stdout else "")
        result: dict[str, Any] = {}

        def ask() -> None:
            result["response"] = httpx.post(f"{base}/v1/ask", json={"question": "What is Python?"}, timeout=60)

        asking = threading.Thread(target=ask)
        asking.start()
        time.sleep(0.5)  # the request is in flight: its first model call sleeps for a second
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no new connections once draining started
            httpx.get(f"{base}/healthz", timeout=2)
        asking.join(60)
        # uvicorn drains, runs the app's shutdown, then re-raises SIGTERM so the exit status says why it stopped
        assert proc.wait(timeout=60) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = proc.stdout.read() if proc.stdout else ""
    if proc.stdout:
        proc.stdout.close()
    response = result["response"]
    assert response.status_code == 200 and response.json()["status"] == "answered", (response.text, output)
    assert "Application shutdown complete" in output and "Traceback" not in output, output  # workers, telemetry


def test_shutdown_writes_what_is_queued_and_stops_the_alert_rechecks(workspace: Path) -> None:
    rule = {"name": "spend", "metric": "cost_usd", "threshold": 10.0, "window_s": 3600}
    app = scripted_app(telemetry={"alerts": [rule]})
    with TestClient(create_app(app, workers=False)) as client:
        asked = client.post("/v1/ask", json={"question": "What is Python?"}).json()
        rechecks = app.telemetry.alerts._rechecks
        assert rechecks is not None and rechecks.is_alive()
    assert not rechecks.is_alive()  # the server's shutdown closed the telemetry
    assert [t.trace_id for t in app.telemetry.traces.list()] == [asked["trace_id"]]
