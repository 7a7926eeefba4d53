"""The OpenAI-compatible endpoint, through OpenAI's own Python client against a real `keel serve` process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from keel.server import KeyStore, create_app
from keel.server._openai import pieces

from .server_fixtures import wait_healthy
from .test_server_api import REPLY, scripted_app

SERVED_REPLY = "Hello from keel, the production runtime for language model applications."

KEEL_YAML = f"""
models:
  scripted:
    provider: fake
    replies: [{SERVED_REPLY!r}]
roles:
  chat: [scripted]
  fast: [scripted]
tools:
  enabled: []
gateway:
  cache:
    enabled: false
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real `keel serve` on a free loopback port, with one API key; yields (base URL, key)."""
    root = tmp_path_factory.mktemp("served")
    (root / "keel.yaml").write_text(KEEL_YAML)
    home = root / "home"
    env = {**os.environ, "KEEL_HOME": str(home), "KEEL_CONFIG": str(root / "keel.yaml")}
    _, key = KeyStore(f"sqlite:///{home / 'keys.sqlite3'}").create("ann", act_as_any=True)  # names end users
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "keel", "serve", "--port", str(port), "--log-level", "warning"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, timeout_s=60, output=lambda: proc.stdout.read() if proc.stdout else "")
        yield base, key
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _client(served: tuple[str, str], **kwargs: object) -> openai.OpenAI:
    base, key = served
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60, **kwargs)  # type: ignore[arg-type]


def test_openai_client_non_streaming(served: tuple[str, str]) -> None:
    client = _client(served)
    done = client.chat.completions.create(
        model="keel",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
        temperature=0.2,
        max_tokens=64,
        user="end-user-1",
    )
    assert done.object == "chat.completion" and done.model == "keel"
    [choice] = done.choices
    assert (choice.message.role, choice.message.content, choice.finish_reason) == (
        "assistant", SERVED_REPLY, "stop")
    assert done.usage is not None and done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    keel = done.model_extra["keel"]  # type: ignore[index]
    assert keel["status"] == "answered" and keel["models"] == ["scripted"] and len(keel["trace_id"]) == 32
    assert {"route", "route_reason", "sources", "guardrail", "usage", "latency_ms"} <= set(keel)
    assert keel["usage"]["input_tokens"] == done.usage.prompt_tokens

    base, key = served
    trace = httpx.get(f"{base}/v1/traces/{keel['trace_id']}", headers={"Authorization": f"Bearer {key}"}).json()
    assert trace["spans"][0]["attributes"]["user.id"] == "end-user-1"


def test_openai_client_streaming(served: tuple[str, str]) -> None:
    client = _client(served)
    stream = client.chat.completions.create(
        model="keel",
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choice = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in with_choice)
    assert text == SERVED_REPLY
    assert len([c for c in with_choice if c.choices[0].delta.content]) > 1  # sent in pieces
    last = with_choice[-1]
    assert last.choices[0].finish_reason == "stop"
    keel = last.model_extra["keel"]  # type: ignore[index]
    assert keel["status"] == "answered" and keel["trace_id"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.total_tokens > 0
    assert (usage.prompt_tokens, usage.completion_tokens) == (keel["usage"]["input_tokens"],
                                                              keel["usage"]["output_tokens"])


def test_the_raw_stream_is_sse_that_ends_with_done(served: tuple[str, str]) -> None:
    base, key = served
    body = {"model": "keel", "stream": True, "messages": [{"role": "user", "content": "Say hello"}]}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}", "X-Keel-Session": "sse-1"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") or e.startswith(":") for e in events)
    assert events[-1] == "data: [DONE]" and events.count("data: [DONE]") == 1


def test_openai_client_errors(served: tuple[str, str]) -> None:
    with pytest.raises(openai.AuthenticationError) as denied:
        _client((served[0], "keel_000000000000_" + "x" * 43)).chat.completions.create(
            model="keel", messages=[{"role": "user", "content": "hi"}])
    assert denied.value.status_code == 401 and denied.value.code == "unauthorized"
    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        _client(served).chat.completions.create(model="keel", messages=[{"role": "assistant", "content": "hi"}])
    assert "user message" in invalid.value.message
    assert [m.id for m in _client(served).models.list()] == ["keel"]


def test_the_real_server_serves_the_api_and_probes(served: tuple[str, str]) -> None:
    base, key = served
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.post(f"{base}/v1/ask", json={"question": "Say hello"}).status_code == 401
    r = httpx.post(f"{base}/v1/ask", json={"question": "Say hello"}, headers=auth, timeout=60)
    assert r.status_code == 200 and r.json()["answer"] == SERVED_REPLY
    assert httpx.get(f"{base}/readyz", timeout=60).status_code == 200
    assert "keel_requests_total" in httpx.get(f"{base}/metrics", headers=auth).text


# -- in-process details ----------------------------------------------------------------------------


def test_pieces_are_whole_words_that_join_back_exactly() -> None:
    text = "  Python is a programming language\ncreated by Guido van Rossum [1].  "
    parts = pieces(text, size=10)
    assert "".join(parts) == text and len(parts) > 3
    assert all(not p[:1].isalnum() or i == 0 or parts[i - 1][-1:].isspace() for i, p in enumerate(parts))
    assert pieces("") == []


def test_session_from_the_header_or_metadata_and_the_last_user_message(workspace: Path) -> None:
    app = scripted_app()
    seen: list[dict[str, object]] = []
    real_ask = app.ask

    def spy(question, **kwargs):  # type: ignore[no-untyped-def]
        assert kwargs["cancel"].cancelled is False  # every run gets a token the server can set
        seen.append({"question": question, **{k: v for k, v in kwargs.items() if k != "cancel"}})
        return real_ask(question, **kwargs)

    app.ask = spy  # type: ignore[method-assign]
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an earlier answer"},
        {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "Python?"}]},
    ]
    with TestClient(create_app(app)) as client:
        r = client.post("/v1/chat/completions", json={"model": "keel", "messages": messages},
                        headers={"X-Keel-Session": "s-header"})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == REPLY
        client.post("/v1/chat/completions", json={"model": "keel", "messages": messages, "user": "zoe",
                                                  "metadata": {"session": "s-meta", "kb": "default"}})
    assert seen == [
        {"question": "What is Python?", "kb": None, "session": "s-header", "user": None, "tenant": None},
        {"question": "What is Python?", "kb": "default", "session": "s-meta", "user": "zoe", "tenant": None},
    ]


def test_a_stream_that_fails_says_so_in_openai_shape(workspace: Path) -> None:
    app = scripted_app(budgets={"user_usd": 0.000001})
    question = [{"role": "user", "content": "What is Python?"}]
    body = {"model": "keel", "stream": True, "user": "ann", "messages": question}
    with TestClient(create_app(app)) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        plain = client.post("/v1/chat/completions", json={**body, "stream": False})
    assert events[-1] == "data: [DONE]"
    import json

    error = json.loads(events[-2][len("data: "):])["error"]
    assert (error["code"], error["status"]) == ("budget_exceeded", 429) and error["hint"]
    assert plain.status_code == 429 and plain.json()["error"]["type"] == "budget_exceeded"


def test_a_pending_approval_comes_back_as_a_message_with_the_approval(workspace: Path) -> None:
    (workspace / "notes.txt").write_text("x")
    with TestClient(create_app(scripted_app())) as client:
        r = client.post("/v1/chat/completions", json={
            "model": "keel", "messages": [{"role": "user", "content": "delete notes.txt in the workspace"}]})
    assert r.status_code == 200
    body = r.json()
    assert body["keel"]["status"] == "pending_approval" and body["keel"]["approval"]["tool"] == "delete_file"
    assert body["choices"][0]["message"]["content"].startswith("Waiting for a person to approve")


def test_heartbeats_keep_a_slow_stream_alive(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keel.server._openai as oa

    monkeypatch.setattr(oa, "HEARTBEAT_S", 0.05)
    app = scripted_app()
    real_ask = app.ask

    def slow(question, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.3)
        return real_ask(question, **kwargs)

    app.ask = slow  # type: ignore[method-assign]
    body = {"model": "keel", "stream": True, "messages": [{"role": "user", "content": "What is Python?"}]}
    with TestClient(create_app(app)) as client, client.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[0].startswith("data: ") and '"role": "assistant"' in lines[0]
    assert any(line.startswith(": keel is still working") for line in lines[1:])
    assert lines[-1] == "data: [DONE]"
