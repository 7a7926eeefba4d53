"""docs/prompts.md stays true: its template table names every template with exactly the variables
the template reads, the versions it prints are the real ones, its commands parse with the real CLI
(and the read-only ones run), and its YAML and settings are keel's."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from jinja2 import meta
from typer.testing import CliRunner

from keel.cli import app as cli
from keel.config import PromptSettings, load_settings
from keel.prompts import PromptLibrary

from .test_monitoring_docs import _parse

DOC = (Path(__file__).resolve().parent.parent / "docs" / "prompts.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)


def _keel_lines() -> list[str]:
    return [shlex.join(shlex.split(line.split(" > ")[0], comments=True))
            for block in _blocks("sh") for line in block.splitlines() if line.startswith("keel ")]


def _table() -> dict[str, set[str]]:
    """template -> the variables its row names (nested fields in parentheses left out)."""
    rows = re.findall(r"^\| `([a-z_]+)` \| [^|]+ \| ([^|]+) \|$", DOC, flags=re.M)
    return {name: set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", cell))) for name, cell in rows}


def test_the_table_names_every_template_and_exactly_the_variables_it_reads() -> None:
    library = PromptLibrary()
    table = _table()
    assert set(table) == set(library.names())
    for name, documented in table.items():
        read = meta.find_undeclared_variables(library.env.parse(library.get(name).source))
        assert documented == read, (name, sorted(documented ^ read))


def test_the_listed_versions_are_the_real_ones() -> None:
    [listing] = [b for b in _blocks("text") if "route_judge" in b]
    shown = {line.split()[0]: line.split()[1] for line in listing.strip().splitlines()}
    assert shown == PromptLibrary().versions()


@pytest.mark.parametrize("line", _keel_lines())
def test_every_keel_command_line_parses(line: str) -> None:
    path, _ = _parse(line)
    assert len(path) >= 2


def test_the_prompt_commands_on_the_page_run(keel_home: Path) -> None:
    runner = CliRunner()
    for line in _keel_lines():
        path, _ = _parse(line)
        if path[1] == "prompts":
            result = runner.invoke(cli, shlex.split(line)[1:])
            assert result.exit_code == 0, (line, result.output)
    shown = runner.invoke(cli, ["prompts", "show", "answer_sources"])
    assert shown.stdout == PromptLibrary().get("answer_sources").source  # redirectable as it is


def test_the_yaml_loads_and_every_setting_named_exists(tmp_path: Path) -> None:
    [block] = _blocks("yaml")
    (tmp_path / "keel.yaml").write_text(block)
    settings = load_settings(tmp_path / "keel.yaml")
    assert settings.prompts_dir == tmp_path / "prompts"
    named = set(re.findall(r"`prompts\.([a-z_]+)`", DOC))
    assert named and named <= set(PromptSettings.model_fields)
    assert set(yaml.safe_load(block)["prompts"]) == set(PromptSettings.model_fields)
