"""The real embedded model: SmolLM2-135M-Instruct on llama.cpp, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from keel import App, _cancel
from keel.errors import Cancelled, ConfigError, ModelTimeout
from keel.models import ChatRequest, Message
from keel.models.local import LocalProvider

pytestmark = pytest.mark.local_model

TEXT = "This agreement dated 3 March 2024 between Acme Corp and Beta LLC is worth 25,000 EUR."
SCHEMA = {
    "type": "object",
    "properties": {"contract_date": {"type": "string"}, "party_a": {"type": "string"},
                   "total_value": {"type": "number"}, "currency": {"type": "string"}},
    "required": ["contract_date", "party_a", "total_value", "currency"],
}
TRUTH = {"contract_date": {"3 March 2024", "2024-03-03", "March 3, 2024"}, "party_a": {"Acme Corp"},
         "total_value": {25000}, "currency": {"EUR"}}


@pytest.fixture(scope="module")
def provider() -> LocalProvider:
    return LocalProvider()


def _ask(text: str, **kw) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], **kw)


def test_cli_extract_with_no_config_and_no_network(tmp_path):
    schema = tmp_path / "S.json"
    schema.write_text(json.dumps(SCHEMA))
    out = subprocess.run([sys.executable, "-m", "keel", "extract", "--schema", str(schema), TEXT, "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    import jsonschema

    jsonschema.validate(body["data"], SCHEMA)
    for field, good in TRUTH.items():
        assert body["data"][field] in good or field in body["unverified"], (field, body)
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["cost_usd"] == 0


def test_constrained_decoding_always_parses(provider):
    schema = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green"]},
                                               "count": {"type": "integer"}},
              "required": ["colour", "count"]}
    r = provider.chat(_ask("Pick a colour and a count.", json_schema=schema, max_tokens=60), timeout=60)
    data = json.loads(r.text)
    assert data["colour"] in ("red", "green") and isinstance(data["count"], int)


def test_usage_is_counted_with_the_models_tokenizer(provider):
    r = provider.chat(_ask("Say hello.", max_tokens=8), timeout=60)
    assert r.usage.output_tokens <= 8 and r.usage.input_tokens > provider.count_tokens("Say hello.")
    assert r.finish_reason in ("stop", "length")


def test_temperature_zero_is_deterministic(provider):
    a = provider.chat(_ask("Name a fruit.", max_tokens=12), timeout=60)
    b = provider.chat(_ask("Name a fruit.", max_tokens=12), timeout=60)
    assert a.text == b.text and a.text


def test_stream_yields_the_same_text_as_chat(provider):
    request = _ask("Count to three.", max_tokens=16)
    whole = provider.chat(request, timeout=60).text
    chunks = list(provider.stream(request, timeout=60))
    assert "".join(c.text for c in chunks).strip() == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.output_tokens > 0


def test_timeout_stops_generation(provider):
    with pytest.raises(ModelTimeout):
        provider.chat(_ask("Write a very long story about ships.", max_tokens=2000), timeout=0.2)
    # and the model still works afterwards
    assert provider.chat(_ask("Say yes.", max_tokens=4), timeout=60).text


def test_a_cancelled_run_stops_the_model_mid_generation(provider):
    """The run's token is set from another thread (Ctrl-C, a client gone) while the model writes:
    llama.cpp stops at its next token, and the call raises Cancelled instead of a partial answer."""
    request = _ask("Write a very long story about ships.", max_tokens=400)  # runs to the limit (13 s here)
    llm = provider._llm()[0]
    prompt_tokens = len(provider._prompt(llm, request.messages)[0])
    token = _cancel.CancelToken()

    def interrupt_once_it_writes() -> None:  # like Ctrl-C a moment into the answer
        deadline = time.monotonic() + 60
        while llm.n_tokens < prompt_tokens + 10 and time.monotonic() < deadline:
            time.sleep(0.005)
        token.cancel("interrupted")

    llm.reset()
    interrupter = threading.Thread(target=interrupt_once_it_writes)
    reset = _cancel.current.set(token)  # as the runtime makes it current for a run
    try:
        interrupter.start()
        with pytest.raises(Cancelled, match="interrupted"):
            provider.chat(request, timeout=120)
    finally:
        _cancel.current.reset(reset)
        token.cancel()
        interrupter.join()
    generated = llm.n_tokens - prompt_tokens
    assert 10 <= generated < 200, generated  # stopped mid-way, not after 400 tokens
    assert provider.chat(_ask("Say yes.", max_tokens=4), timeout=60).text  # and it still answers


def test_a_run_cancelled_before_its_call_never_reads_the_prompt(provider):
    token = _cancel.CancelToken()
    token.cancel("timeout")
    llm = provider._llm()[0]
    provider.chat(_ask("Say yes.", max_tokens=4), timeout=60)
    before = llm.n_tokens
    reset = _cancel.current.set(token)
    try:
        with pytest.raises(Cancelled):
            provider.chat(_ask("Write a poem about the sea and its ships.", max_tokens=50), timeout=60)
        with pytest.raises(Cancelled):
            list(provider.stream(_ask("Write a poem about the sea and its ships.", max_tokens=50), timeout=60))
    finally:
        _cancel.current.reset(reset)
    assert llm.n_tokens == before  # nothing was evaluated


def test_concurrent_calls_are_serialised_safely(provider):
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            results[i] = provider.chat(_ask("Name a colour.", max_tokens=6), timeout=120).text
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results.values())) == 1  # same prompt, temperature 0


def test_loaded_once_per_process(provider):
    other = LocalProvider()
    assert other._llm()[0] is provider._llm()[0]


def test_a_missing_gguf_file_is_a_config_error():
    with pytest.raises(ConfigError, match="does not exist"):
        LocalProvider(path="/nonexistent/model.gguf").chat(_ask("hi"), timeout=5)


def test_a_file_that_is_not_gguf_is_a_config_error(tmp_path):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model" * 100)
    with pytest.raises(ConfigError, match="could not load"):
        LocalProvider(path=str(bogus)).chat(_ask("hi"), timeout=5)


def test_app_extract_uses_cache_on_the_second_call():
    app = App()
    first = app.extract(TEXT, SCHEMA)
    second = app.extract(TEXT, SCHEMA)
    assert second.data == first.data and second.model_calls == 0
    assert Path(app.data_dir / "cache.sqlite3").is_file()
