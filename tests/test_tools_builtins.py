"""Built-in tools: safe arithmetic, workspace confinement, the registry's timeouts, retries and schemas."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from keel.config import ToolOverride, ToolSettings
from keel.errors import ConfigError, InputError
from keel.tools import Tool, ToolContext, ToolRegistry, Workspace, build_registry, evaluate


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 + 3 * 4", 14),
        ("(17 + 5) * 3", 66),
        ("2 ** 10", 1024),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-3 % 5", 2),
        ("2^3", 8),
        ("1.5 * 4", 6.0),
    ],
)
def test_calculator_evaluates_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(("expression", "shown"), [
    ("1234 * 5678", "7006652"),
    ("2 ** 70", "1180591620717411303424"),
    ("0.1 + 0.2", "0.3"),
    ("10 / 4", "2.5"),
    ("9 / 3", "3"),
    ("1 / 3", "0.333333333333"),
    ("1e20 * 3", "3e+20"),
])
def test_calculator_results_are_shown_in_full_not_rounded_to_six_digits(
        ws: Workspace, expression: str, shown: str) -> None:
    result = build_registry(ToolSettings()).run("calculator", {"expression": expression}, ToolContext(workspace=ws))
    assert result.content == f"{expression} = {shown}", result


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('ls')", "Call is not allowed"),
        ("().__class__", "Attribute is not allowed"),
        ("x + 1", "Name is not allowed"),
        ("9 ** 99999", "exponent"),
        ("1 / 0", "division by zero"),
        ("2 +", "is not an arithmetic expression"),
        ("", "empty"),
        ("'a' * 3", "Constant is not allowed"),
    ],
)
def test_calculator_refuses_everything_else_with_a_hint(expression: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        evaluate(expression)
    assert err.value.hint


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "notes.txt").write_text("hello")
    (root / "sub").mkdir()
    (tmp_path / "secret.txt").write_text("outside")
    return Workspace(root)


@pytest.mark.parametrize("path", ["/etc/passwd", "../secret.txt", "sub/../../secret.txt", "C:\\x.txt", "", "a\x00b"])
def test_workspace_rejects_escapes(ws: Workspace, path: str) -> None:
    with pytest.raises(InputError) as err:
        ws.resolve(path)
    assert err.value.hint


def test_workspace_rejects_symlinks_that_lead_out(ws: Workspace, tmp_path: Path) -> None:
    os.symlink(tmp_path / "secret.txt", ws.root / "link.txt")
    with pytest.raises(InputError, match="resolves outside"):
        ws.resolve("link.txt")


def test_file_tools_work_inside_and_report_errors_as_results(ws: Workspace) -> None:
    registry = build_registry(ToolSettings())
    ctx = ToolContext(ws)
    assert registry.run("list_files", {}, ctx).data == ["notes.txt", "sub/"]
    assert registry.run("read_file", {"path": "notes.txt"}, ctx).content == "hello"
    missing = registry.run("read_file", {"path": "nope.txt"}, ctx)
    assert (missing.ok, missing.error) == (
        False,
        "'nope.txt' is not a file in the workspace (call list_files to see the files)",
    )
    escaped = registry.run("delete_file", {"path": "../secret.txt"}, ctx)
    assert not escaped.ok and (ws.root.parent / "secret.txt").exists()
    assert registry.run("delete_file", {"path": "notes.txt"}, ctx).content == "deleted notes.txt"
    assert not (ws.root / "notes.txt").exists()


def test_bad_arguments_and_unknown_tools_come_back_as_errors(ws: Workspace) -> None:
    registry = build_registry(ToolSettings())
    bad = registry.run("calculator", {"expr": "1+1"}, ToolContext(ws))
    assert not bad.ok and bad.attempts == 0 and "expression: Field required" in (bad.error or "")
    unknown = registry.run("rm_rf", {}, ToolContext(ws))
    assert not unknown.ok and "unknown tool 'rm_rf'" in (unknown.error or "")


def test_search_without_a_knowledge_base_says_how_to_get_one(ws: Workspace) -> None:
    result = build_registry(ToolSettings()).run("search_knowledge", {"query": "x"}, ToolContext(ws))
    assert not result.ok and "keel ingest" in (result.error or "")


class _NoArgs(BaseModel):
    pass


def test_timeout_and_retries(ws: Workspace) -> None:
    calls: list[float] = []

    def slow(args: _NoArgs, ctx: ToolContext) -> str:
        calls.append(time.perf_counter())
        time.sleep(0.5)
        return "late"

    def flaky(args: _NoArgs, ctx: ToolContext) -> str:
        calls.append(time.perf_counter())
        if len(calls) < 2:
            raise ConnectionError("reset by peer")
        return "ok"

    registry = ToolRegistry(
        [
            Tool("slow", "slow", _NoArgs, slow, timeout_s=0.05, retries=1),
            Tool("flaky", "flaky", _NoArgs, flaky, retries=2),
        ]
    )
    result = registry.run("slow", {}, ToolContext(ws))
    assert (result.ok, result.attempts) == (False, 2) and "did not finish within 0.05s" in (result.error or "")
    calls.clear()
    assert registry.run("flaky", {}, ToolContext(ws)).attempts == 2


def test_schemas_shown_to_the_model_name_and_describe_each_tool() -> None:
    specs = {s.name: s for s in build_registry(ToolSettings()).specs()}
    assert specs["delete_file"].model_dump() == {
        "name": "delete_file",
        "description": "Delete a file from the workspace. Cannot be undone.",
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "required": ["path"],
            "properties": {
                "path": {
                    "type": "string",
                    "title": "Path",
                    "description": "a file path relative to the workspace, e.g. notes.txt",
                }
            },
        },
    }


def test_settings_choose_tools_and_which_need_approval() -> None:
    settings = ToolSettings(
        enabled=["calculator", "read_file", "delete_file"],
        require_approval=["read_file"],
        per_tool={
            "calculator": ToolOverride(timeout_s=2.0, retries=0),
            "delete_file": ToolOverride(require_approval=False),
        },
    )
    registry = build_registry(settings)
    assert registry.names() == ["calculator", "delete_file", "read_file"]
    assert {t.name: t.needs_approval for t in registry} == {
        "calculator": False,
        "delete_file": True,
        "read_file": True,
    }  # destructive always asks
    assert (registry.get("calculator").timeout_s, registry.get("calculator").retries) == (2.0, 0)
    with pytest.raises(ConfigError, match="unknown tools"):
        build_registry(ToolSettings(enabled=["format_disk"]))


def test_tool_names_must_be_identifiers() -> None:
    with pytest.raises(InputError, match="letters, digits and underscores"):
        ToolRegistry([Tool("rm -rf", "x", _NoArgs, lambda a, c: "")])
