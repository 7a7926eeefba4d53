"""The CLI as a user runs it: real processes, one-line errors, exit codes per class."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

KEEL = [sys.executable, "-m", "keel"]


def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*KEEL, *args], capture_output=True, text=True, input=input, timeout=300)


def test_help_lists_the_commands():
    out = run("--help")
    assert out.returncode == 0
    for command in ("init", "models", "extract"):
        assert command in out.stdout


def test_init_writes_a_starter_that_loads_and_refuses_to_overwrite():
    first = run("init")
    assert first.returncode == 0 and Path("keel.yaml").is_file()
    from keel.config import load_settings

    assert load_settings("keel.yaml").chain("chat") == ["local"]
    again = run("init")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_bad_config_is_one_line_and_exit_2():
    Path("keel.yaml").write_text("gateway:\n  max_retries: lots\n")
    out = run("models", "--json")
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and "gateway.max_retries" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_schema_is_a_user_error():
    out = run("extract", "--schema", "nope.json", "some text")
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_empty_text_is_a_user_error(tmp_path):
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "object", "properties": {"a": {"type": "string"}}}')
    out = run("extract", "--schema", str(schema), "   ")
    assert out.returncode == 2 and "empty" in out.stderr


def test_raise_errors_env_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("KEEL_RAISE_ERRORS", "1")
    out = run("extract", "--schema", "nope.json", "text")
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_unreachable_endpoint_is_a_clear_model_error(tmp_path):
    Path("keel.yaml").write_text(
        "models:\n  remote:\n    provider: openai\n    model: m\n    base_url: http://127.0.0.1:9/v1\n"
        "roles:\n  chat: [remote]\ngateway:\n  max_retries: 0\n"
    )
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "object", "properties": {"a": {"type": "string"}}}')
    out = run("extract", "--schema", str(schema), "text")
    assert out.returncode == 3
    assert "cannot reach remote" in out.stderr and "base_url" in out.stderr and "Traceback" not in out.stderr


def test_extract_with_a_scripted_model_prints_the_contract(tmp_path):
    Path("keel.yaml").write_text(
        "models:\n  scripted:\n    provider: fake\n    replies:\n"
        "      - '{\"contract_date\": \"3 March 2024\", \"party_a\": \"Acme Corp\", \"total_value\": 250000,"
        " \"currency\": \"EUR\"}'\n"
        "roles:\n  chat: [scripted]\n"
    )
    schema = tmp_path / "S.json"
    schema.write_text(json.dumps({
        "type": "object",
        "properties": {"contract_date": {"type": "string"}, "party_a": {"type": "string"},
                       "total_value": {"type": "number"}, "currency": {"type": "string"}},
        "required": ["contract_date", "party_a", "total_value", "currency"],
    }))
    text = "This agreement dated 3 March 2024 between Acme Corp and Beta LLC is worth 25,000 EUR."
    out = run("extract", "--schema", str(schema), text, "--json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert set(body) == {"data", "unverified", "usage", "models"}
    assert body["unverified"] == ["total_value"]  # the scripted model keeps inventing it
    assert body["usage"]["model_calls"] == 3 and body["models"] == ["scripted"]


@pytest.mark.local_model
def test_models_json_lists_the_local_model_as_available():
    out = run("models", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["local"]["available"] is True and rows["local"]["provider"] == "local"
    assert rows["local"]["context_window"] >= 2048 and rows["local"]["input_price_per_mtok"] == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [(["ask", "--bogus", "x"], "No such option: --bogus"), (["nonsense"], "No such command 'nonsense'")],
)
def test_a_usage_mistake_is_a_usage_message_and_exit_2_not_a_traceback(args, says):
    done = run(*args)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr
    assert "--help' for help" in done.stderr
