"""The README's promises stay true: its first commands are what CI runs, and the CLI it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _blocks(text: str) -> list[str]:
    return re.findall(r"```(?:sh|bash)\n(.*?)```", text, flags=re.S)


def test_readme_opens_with_the_setup_and_test_commands_that_ci_runs():
    readme = (ROOT / "README.md").read_text()
    first = [line.split("#")[0].strip() for line in _blocks(readme)[0].splitlines()]
    assert first[:2] == ["make setup", "make test"]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "make setup" in ci and "make test" in ci


def test_every_keel_command_in_the_readme_exists():
    from typer.main import get_command

    from keel.cli import app

    known = set(get_command(app).commands)  # type: ignore[attr-defined]
    readme = (ROOT / "README.md").read_text()
    used = set(re.findall(r"(?:\.venv/bin/keel|`keel) ([a-z][a-z-]+)", readme))
    assert used and used <= known, used - known


def test_docs_cli_md_is_generated_from_the_commands():
    from keel.cli._docs import render

    committed = (ROOT / "docs" / "cli.md").read_text()
    assert committed == render(), "docs/cli.md is stale: .venv/bin/python -m keel.cli._docs > docs/cli.md"
