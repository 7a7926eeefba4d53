"""Settings: defaults with no file, keel.yaml, KEEL_* overrides, clear errors, secrets kept out."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.config import load_settings
from keel.errors import ConfigError, MissingAPIKey
from keel.models.registry import build_provider


def test_defaults_run_with_no_file_and_no_key(tmp_path, monkeypatch):
    monkeypatch.delenv("KEEL_HOME")
    s = load_settings()
    assert s.config_path is None
    assert s.chain("chat") == ["local"] and s.models["local"].provider == "local"
    assert s.data_dir == tmp_path / ".keel"


def test_home_is_beside_the_config_file(tmp_path, monkeypatch):
    monkeypatch.delenv("KEEL_HOME")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "keel.yaml").write_text("gateway:\n  max_retries: 7\n")
    s = load_settings(project / "keel.yaml")
    assert s.data_dir == project / ".keel" and s.gateway.max_retries == 7


def test_keel_home_wins(keel_home):
    assert load_settings().data_dir == keel_home


def test_yaml_found_in_working_directory_and_env_overrides_it(tmp_path, monkeypatch):
    Path("keel.yaml").write_text("gateway:\n  max_retries: 7\n  breaker:\n    failure_threshold: 2\n")
    monkeypatch.setenv("KEEL_GATEWAY__MAX_RETRIES", "9")
    s = load_settings()
    assert s.config_path == tmp_path / "keel.yaml"
    assert s.gateway.max_retries == 9 and s.gateway.breaker.failure_threshold == 2


def test_keel_config_env_points_to_a_file(tmp_path, monkeypatch):
    other = tmp_path / "other.yaml"
    other.write_text("roles:\n  chat: [local]\n")
    monkeypatch.setenv("KEEL_CONFIG", str(other))
    assert load_settings().config_path == other
    monkeypatch.setenv("KEEL_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gateway: [1, 2", "not valid YAML"),
        ("- just\n- a list\n", "mapping at the top level"),
        ("gateway:\n  max_retries: lots\n", "gateway.max_retries"),
        ("gatway:\n  max_retries: 1\n", "gatway"),
        ("roles:\n  chat: [nosuchmodel]\n", "unknown model 'nosuchmodel'"),
        ("models:\n  m:\n    provider: cohere\n", "models.m.provider"),
        ("models:\n  m:\n    provider: openai\n    api_key_env: sk-live-123\n", "names an environment variable"),
    ],
)
def test_bad_config_is_one_clear_error(text, message):
    Path("keel.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings()
    assert info.value.exit_code == 2 and info.value.hint


def test_empty_file_means_defaults():
    Path("keel.yaml").write_text("")
    assert load_settings().chain("chat") == ["local"]


def test_provider_model_strings_need_no_declaration():
    s = load_settings(roles={"chat": ["openai:gpt-4o-mini", "local"]})
    assert s.model("openai:gpt-4o-mini").api_key_env == "OPENAI_API_KEY"


def test_missing_key_names_the_variable_and_the_local_alternative(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    s = load_settings(roles={"chat": ["openai:gpt-4o-mini"]})
    with pytest.raises(MissingAPIKey) as info:
        build_provider("openai:gpt-4o-mini", s.model("openai:gpt-4o-mini"))
    assert "OPENAI_API_KEY" in str(info.value) and "local" in str(info.value)


def test_secret_never_appears_in_dumps_or_fingerprint(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-very-secret-value")
    s = load_settings(models={"m": {"provider": "openai", "model": "gpt-4o-mini", "api_key_env": "MY_KEY"}},
                      roles={"chat": ["m"]})
    key = s.model("m").api_key("m")
    assert key is not None and key.get_secret_value() == "sk-very-secret-value"
    assert "sk-very-secret" not in repr(key) and "sk-very-secret" not in s.model_dump_json()
    assert len(s.fingerprint()) == 16


def test_the_starter_file_loads_and_shows_every_section():
    import yaml

    from keel.cli.init import STARTER
    from keel.config import Settings

    Path("keel.yaml").write_text(STARTER)
    s = load_settings()
    assert s.chain("chat") == ["local"] and s.knowledge.chunk_tokens == 500
    sections = set(yaml.safe_load(STARTER))
    documented = sections | {"home"}  # home is shown commented out
    assert set(Settings.model_fields) - {"config_path"} <= documented


def test_unknown_sections_are_rejected_not_ignored():
    Path("keel.yaml").write_text("queues:\n  workers: 4\n")
    with pytest.raises(ConfigError, match="queues"):
        load_settings()
