"""``POST /v1/chat/completions`` and ``GET /v1/models``: OpenAI's wire format over keel's graph.

The last user message is the question; conversation memory is keel's session
(``X-Keel-Session`` header or ``metadata.session``), not the messages resent
by the client; system messages are not used (keel's prompts are versioned on
the server). The answer's keel metadata (status, route, sources, guardrail,
usage with cost, trace id, approval) rides in an extra top-level ``keel`` field.

Streaming is honest about what it is: the quality guardrail must see the whole
answer before any of it leaves, so the graph finishes first and the checked
text is then sent as SSE chunks of a few words. While the graph runs, the
stream carries the assistant role chunk and SSE comment heartbeats, so
proxies and clients see a live connection. It is not token-by-token. A client
that closes the stream, like one that stops waiting for a plain response,
cancels the run (see ``_timeout``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .._cancel import CancelToken
from ..errors import BudgetExceeded, Cancelled, InputError, KeelError
from ..graph import Answer
from ._auth import Caller, CallerDep
from ._errors import error_body, retry_after
from ._schemas import ChatCompletionRequest, ChatMessage, OpenAIErrorOut
from ._timeout import run_with_timeout

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"])
log = logging.getLogger("keel.server")

#: seconds between SSE comment lines while the graph is still working
HEARTBEAT_S = 10.0
#: a streamed content chunk holds about this many characters (whole words)
CHUNK_CHARS = 24

_PIECE = re.compile(r"\s+|\S+\s*")


def _text(message: ChatMessage) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", "")) for p in content if p.get("type") in ("text", "input_text"))


def question_of(messages: list[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            text = _text(message).strip()
            if text:
                return text
    raise InputError("the request has no user message with text", hint="end messages with {role: user, content: ...}")


def pieces(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """``text`` in runs of whole words of about ``size`` characters; joined they give ``text`` back."""
    out: list[str] = []
    current = ""
    for token in _PIECE.findall(text):
        current += token
        if len(current) >= size:
            out.append(current)
            current = ""
    if current:
        out.append(current)
    return out


def _finish_reason(answer: Answer) -> str:
    return "length" if answer.status == "stopped" else "stop"


def _content(answer: Answer) -> str:
    if answer.status == "stopped" and not answer.answer:
        return f"keel stopped: {(answer.error or {}).get('message', 'a limit ended the run')}"
    return answer.answer


def _usage(answer: Answer) -> dict[str, int]:
    i, o = int(answer.usage.get("input_tokens", 0)), int(answer.usage.get("output_tokens", 0))
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


def _meta(answer: Answer) -> dict[str, Any]:
    return {k: v for k, v in answer.to_dict().items() if k != "answer"}


def _ask_kwargs(body: ChatCompletionRequest, who: Caller, session: str | None, kb: str | None) -> dict[str, Any]:
    meta = body.metadata or {}
    return {
        "kb": kb or meta.get("kb") or None,
        "session": session or meta.get("session") or None,
        "user": who.user_for(body.user),
        "tenant": who.tenant_for(meta.get("tenant") or None),
    }


SessionHeader = Annotated[str | None, Header(alias="x-keel-session", max_length=200)]
KbHeader = Annotated[str | None, Header(alias="x-keel-kb", max_length=64)]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "a chat.completion object, or an SSE stream of chat.completion.chunk objects",
          "content": {"application/json": {}, "text/event-stream": {}}},
    **{code: {"model": OpenAIErrorOut} for code in (400, 401, 403, 413, 422, 429, 502, 503, 504)},
}


@router.post("/chat/completions", responses=_RESPONSES, response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    who: CallerDep,
    x_keel_session: SessionHeader = None,
    x_keel_kb: KbHeader = None,
) -> JSONResponse | StreamingResponse:
    """OpenAI-compatible chat completion answered by keel's graph (set ``stream`` for SSE)."""
    question = question_of(body.messages)
    kwargs = _ask_kwargs(body, who, x_keel_session, x_keel_kb)
    app = request.app.state.keel
    completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]

    def run(cancel: CancelToken) -> Answer:
        return app.ask(question, **kwargs, cancel=cancel)  # type: ignore[no-any-return]

    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = _stream(request, run, completion_id, body.model, include_usage)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
    answer = await run_with_timeout(request, run)
    if isinstance(answer.exception, BudgetExceeded):
        raise answer.exception
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": _content(answer), "refusal": None},
                    "finish_reason": _finish_reason(answer),
                    "logprobs": None,
                }
            ],
            "usage": _usage(answer),
            "keel": _meta(answer),
        }
    )


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


async def _stream(
    request: Request, run: Any, completion_id: str, model: str, include_usage: bool
) -> AsyncIterator[str]:
    created = int(time.time())
    path = request.url.path

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                     "system_fingerprint": None, "choices": [choice], **extra})

    yield chunk({"role": "assistant", "content": ""})
    task = asyncio.ensure_future(run_with_timeout(request, run))  # the same timeout and client watch as JSON
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a stream closed early: no lost-error warning
    try:
        while True:
            done, _ = await asyncio.wait((task,), timeout=HEARTBEAT_S)
            if done:
                break
            yield ": keel is still working\n\n"
        answer: Answer = task.result()
        if isinstance(answer.exception, BudgetExceeded):
            raise answer.exception
    except Cancelled:
        return  # the client closed the stream: nobody to tell
    except KeelError as exc:
        wait = retry_after(exc)
        extra = {"status": exc.http_status, **({"retry_after": wait} if wait is not None else {})}
        yield _sse(error_body(path, exc.code, exc.message, exc.hint, **extra))
        yield _sse("[DONE]")
        return
    except Exception as exc:  # headers are sent: the stream itself must say that it failed
        log.exception("chat completion %s failed", completion_id)
        yield _sse(error_body(path, "internal_error", f"the server failed: {type(exc).__name__}",
                              "see the server log", status=500))
        yield _sse("[DONE]")
        return
    finally:
        task.cancel()  # still waiting here: the stream was closed, so run_with_timeout cancels the run
    for piece in pieces(_content(answer)):
        yield chunk({"content": piece})
    yield chunk({}, _finish_reason(answer), keel=_meta(answer))
    if include_usage:
        yield _sse({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "system_fingerprint": None, "choices": [], "usage": _usage(answer)})
    yield _sse("[DONE]")


@router.get("/models", responses={code: {"model": OpenAIErrorOut} for code in (401, 429)})
def models(who: CallerDep) -> dict[str, Any]:
    """The one model name this endpoint answers as: ``keel`` (its router picks the real models)."""
    return {"object": "list", "data": [{"id": "keel", "object": "model", "created": 0, "owned_by": "keel"}]}
