"""The public names of the graph, router, tools, guardrails and prompts packages exist and are unique."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["keel.graph", "keel.router", "keel.tools", "keel.guardrails", "keel.prompts"])
def test_every_exported_name_exists_once(package: str) -> None:
    module = importlib.import_module(package)
    assert len(module.__all__) == len(set(module.__all__))
    assert [name for name in module.__all__ if not hasattr(module, name)] == []


def test_the_seams_users_need_are_public() -> None:
    import keel.graph as graph
    import keel.tools as tools

    assert {"Answer", "GraphRuntime", "build_runtime", "FakeRetriever", "by_purpose", "no_audit"} <= set(graph.__all__)
    assert {"Tool", "ToolRegistry", "ApprovalStore", "Workspace"} <= set(tools.__all__)
