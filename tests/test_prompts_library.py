"""Prompt templates: content-hash versions, sandboxed rendering, overrides, per-query few-shot examples."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import pytest

from keel.errors import ConfigError
from keel.prompts import FewShotSelector, PromptLibrary, load_examples


def test_version_is_the_content_hash() -> None:
    lib = PromptLibrary()
    source = resources.files("keel.prompts").joinpath("templates/reask.j2").read_text(encoding="utf-8")
    assert lib.get("reask").version == hashlib.sha256(source.encode()).hexdigest()[:12]
    assert set(lib.versions()) == {"agent_step", "answer_chat", "answer_sources", "reask", "route_judge"}


def test_render_fills_variables_and_reports_missing_ones() -> None:
    rendered = PromptLibrary().render("reask", problems=["number 7 not in the sources"])
    assert rendered.name == "reask" and "- number 7 not in the sources" in rendered.text
    with pytest.raises(ConfigError, match="needs a variable"):
        PromptLibrary().render("reask")


def test_override_folder_replaces_a_template_and_changes_its_version(tmp_path: Path) -> None:
    (tmp_path / "answer_chat.j2").write_text("Be terse.{{ '' if history else '' }}")
    lib = PromptLibrary(tmp_path)
    assert lib.render("answer_chat", history=False).text == "Be terse."
    assert lib.get("answer_chat").version != PromptLibrary().get("answer_chat").version


def test_sandbox_blocks_python_internals(tmp_path: Path) -> None:
    (tmp_path / "evil.j2").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ConfigError, match="sandbox forbids"):
        PromptLibrary(tmp_path).render("evil")


def test_unknown_and_broken_templates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no prompt template named 'nope'"):
        PromptLibrary().get("nope")
    (tmp_path / "broken.j2").write_text("{% for x in %}")
    with pytest.raises(ConfigError, match="line 1"):
        PromptLibrary(tmp_path).get("broken")


def test_few_shot_picks_the_most_similar_examples_last() -> None:
    selector = FewShotSelector(load_examples("agent"))
    picked = selector.select("please delete old.txt from the workspace", k=2)
    assert len(picked) == 2 and picked[-1]["action"]["tool"] == "delete_file"
    maths = selector.select("what is 3 * 4 + 1?", k=1)
    assert maths[0]["action"]["tool"] == "calculator"
    only_final = selector.select("delete x", k=2, where=lambda e: e["action"]["tool"] == "final_answer")
    assert {e["action"]["tool"] for e in only_final} == {"final_answer"}
    assert FewShotSelector([]).select("x") == []


def test_prompts_dir_is_read_relative_to_the_config_and_must_exist(tmp_path: Path, keel_home: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.config import load_settings
    from keel.graph import build_runtime
    from keel.models.gateway import Gateway

    config = tmp_path / "keel.yaml"
    config.write_text("prompts:\n  dir: shared-prompts\n")
    settings = load_settings(config)
    assert settings.prompts_dir == tmp_path / "shared-prompts"
    gateway = Gateway.__new__(Gateway)  # build_runtime only stores it; no model is called here
    gateway.chains = {}
    with pytest.raises(ConfigError, match="prompts.dir .*shared-prompts is not a folder"):
        build_runtime(settings, gateway)
    (tmp_path / "shared-prompts").mkdir()
    (tmp_path / "shared-prompts" / "answer_chat.j2").write_text("Be terse.")
    runtime = build_runtime(settings, gateway)
    assert runtime.deps.prompts.render("answer_chat").text == "Be terse."


def test_a_template_that_replaces_no_built_in_is_named_in_a_warning(tmp_path: Path, caplog) -> None:
    (tmp_path / "answer_sources.j2").write_text("Quote.")
    (tmp_path / "anwser_chat.j2").write_text("Be terse.")  # misspelt: keel would never read it
    with caplog.at_level("WARNING", logger="keel.prompts"):
        PromptLibrary(tmp_path)
    [record] = caplog.records
    assert "replace no built-in: anwser_chat (built-ins: agent_step, answer_chat" in record.getMessage()
    assert PromptLibrary(tmp_path / "missing").render("reask", problems=[]).name == "reask"  # default: optional


def test_keel_prompts_lists_the_versions_in_use_and_shows_a_source(keel_home: Path) -> None:
    import json

    from typer.testing import CliRunner

    from keel.cli import app as cli

    runner = CliRunner()
    built_in = {row["name"]: row for row in json.loads(runner.invoke(cli, ["prompts", "list", "--json"]).stdout)}
    assert {n: r["version"] for n, r in built_in.items()} == PromptLibrary().versions()
    (keel_home / "prompts").mkdir(parents=True)
    (keel_home / "prompts" / "answer_chat.j2").write_text("Be terse.")
    listed = {row["name"]: row for row in json.loads(runner.invoke(cli, ["prompts", "list", "--json"]).stdout)}
    assert listed["answer_chat"]["origin"] == str(keel_home / "prompts" / "answer_chat.j2")
    assert listed["answer_chat"]["version"] == hashlib.sha256(b"Be terse.").hexdigest()[:12]
    assert listed["reask"] == built_in["reask"]
    shown = runner.invoke(cli, ["prompts", "show", "answer_chat"])
    assert shown.exit_code == 0 and shown.stdout == "Be terse.\n"  # the text alone: redirect it to start an override
    assert shown.stderr.startswith(f"# answer_chat {listed['answer_chat']['version']} (")
    # `show --built-in > <folder>/answer_chat.j2`: the shell makes the empty file before keel reads the folder
    (keel_home / "prompts" / "answer_chat.j2").write_text("")
    assert runner.invoke(cli, ["prompts", "show", "answer_chat"]).stdout == "\n"
    own = runner.invoke(cli, ["prompts", "show", "answer_chat", "--built-in"])
    assert own.stdout == PromptLibrary().get("answer_chat").source
    missing = runner.invoke(cli, ["prompts", "show", "nope"])
    assert isinstance(missing.exception, ConfigError) and "no prompt template named 'nope'" in str(missing.exception)
