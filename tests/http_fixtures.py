"""A real local HTTP server that speaks the OpenAI chat API and misbehaves on cue."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Behaviour = str  # "ok" | "429" | "500" | "timeout" | "garbled" | "503"


def completion_body(text: str, prompt_tokens: int = 11, completion_tokens: int = 7) -> dict:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class FlakyServer:
    """``plan(n)`` decides what call number n (0-based) gets."""

    def __init__(self, plan: Callable[[int], Behaviour], *, stall_s: float = 2.0) -> None:
        self.plan = plan
        self.stall_s = stall_s
        self.calls: list[Behaviour] = []
        self.successes = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("content-length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    n = len(server.calls)
                    behaviour = server.plan(n)
                    server.calls.append(behaviour)
                server._answer(self, behaviour, request)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _answer(self, h: BaseHTTPRequestHandler, behaviour: Behaviour, request: dict) -> None:
        stalled = behaviour == "timeout"
        if stalled:  # answer, but only after the client has given up
            time.sleep(self.stall_s)
            behaviour = "ok"
        if behaviour in ("429", "500", "503"):
            body = json.dumps({"error": {"message": f"simulated {behaviour}", "type": "server_error"}}).encode()
            h.send_response(int(behaviour))
            h.send_header("content-type", "application/json")
            if behaviour == "429":
                h.send_header("retry-after", "0")
            h.send_header("content-length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        if behaviour == "garbled":
            body = b'{"id": "chatcmpl-x", "choices": [{"message": {"content": "trunc'
        else:
            last = request.get("messages", [{}])[-1].get("content", "")
            body = json.dumps(completion_body(f"echo: {last}")).encode()
            if not stalled:
                with self._lock:
                    self.successes += 1
        h.send_response(200)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(body)))
        h.end_headers()
        with contextlib.suppress(BrokenPipeError):  # the client gave up (timeout) before we answered
            h.wfile.write(body)


@contextmanager
def flaky_server(plan: Callable[[int], Behaviour], **kw) -> Iterator[FlakyServer]:
    server = FlakyServer(plan, **kw)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
