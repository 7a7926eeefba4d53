"""The request graph on the real embedded model (SmolLM2-135M on llama.cpp): the approval flow from the
CLI, a knowledge-base question and a private-data refusal. Slow-ish: opt in with ``-m local_model``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from keel import App
from keel.graph import FakeRetriever
from keel.graph.factory import build_runtime

pytestmark = pytest.mark.local_model

PASSAGES = [
    {
        "id": "with",
        "title": "The with statement",
        "text": "The with statement is used to wrap the execution of a block with methods defined by a context "
        "manager. This allows common try, except, finally usage patterns to be encapsulated.",
    },
    {
        "id": "pass",
        "title": "The pass statement",
        "text": "pass is a null operation: when it is executed, nothing happens. It is useful as a placeholder.",
    },
]


def test_approval_flow_from_the_cli_on_the_embedded_model(tmp_path: Path, keel_home: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "notes.txt").write_text("my notes")
    env = {
        "KEEL_HOME": str(keel_home),
        "KEEL_WORKSPACE": str(workspace),
        "PATH": "/usr/bin:/bin",
        "KEEL_GATEWAY__CACHE__ENABLED": "false",
    }
    exe = Path(sys.executable).with_name("keel")
    asked = subprocess.run(
        [exe, "ask", "delete notes.txt in the workspace", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    paused = json.loads(asked.stdout)
    assert asked.returncode == 10 and paused["approval"]["args"] == {"path": "notes.txt"}
    assert (workspace / "notes.txt").exists()
    approved = subprocess.run(
        [exe, "approvals", "approve", paused["approval"]["id"], "--by", "boss", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    done = json.loads(approved.stdout)
    assert approved.returncode == 0, approved.stderr
    assert not (workspace / "notes.txt").exists()
    # the embedded model wrote the closing answer under constrained decoding; the guard judged it
    assert done["status"] == "answered" and done["models"] == ["local"] and done["usage"]["model_calls"] >= 1
    assert done["guardrail"]["verdict"] in {"pass", "revised", "fallback", "refused"}
    replay = subprocess.run(
        [exe, "approvals", "approve", paused["approval"]["id"], "--by", "boss"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert replay.returncode == 2 and "already used" in replay.stderr


def test_kb_question_and_private_refusal_on_the_embedded_model(keel_home: Path) -> None:
    app = App(gateway={"cache": {"enabled": False}}, guardrails={"max_reasks": 0})
    runtime = build_runtime(app.settings, app.gateway, retriever=FakeRetriever(PASSAGES))
    answer = runtime.ask("what does the with statement do?")
    assert answer.status == "answered" and answer.route == "fast" and answer.models == ["local"]
    assert answer.sources[0]["id"] == "with"
    g = answer.guardrail
    assert g["verdict"] in {"pass", "fallback"}
    if g["verdict"] == "pass":  # passed only when the scorer found it grounded
        assert g["groundedness"] >= app.settings.guardrails.min_groundedness
    else:
        assert "wrap the execution of a block" in answer.answer
    refused = runtime.ask("how many vacation days do new employees get?")
    # at most the judge was asked (when the router was unsure); no answer was drafted
    assert refused.guardrail["verdict"] == "refused" and "nothing relevant" in refused.answer
    assert refused.usage["model_calls"] <= 1 and refused.sources == []


def test_the_embedded_model_itself_picks_the_risky_tool_and_it_still_waits(
    tmp_path: Path, keel_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No rule fires on "get rid of": the model chooses delete_file under constrained decoding (from
    the tools its nearest examples use), and the call pauses for a person like any other."""
    monkeypatch.setenv("KEEL_WORKSPACE", str(tmp_path / "ws"))
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "notes.txt").write_text("my notes")
    app = App(gateway={"cache": {"enabled": False}})
    runtime = build_runtime(app.settings, app.gateway)  # no knowledge base: this is about the tool
    paused = runtime.ask("get rid of my notes file, notes.txt, then tell me")
    assert paused.route == "agent" and paused.route_reason == "rule: multi-part request"
    assert paused.status == "pending_approval" and paused.approval is not None
    assert (paused.approval["tool"], paused.approval["args"]) == ("delete_file", {"path": "notes.txt"})
    assert paused.usage["model_calls"] == 1 and (tmp_path / "ws" / "notes.txt").exists()
    rejected = runtime.resume(paused.approval["id"], approve=False, approver="boss")
    assert "rejected by boss" in rejected.answer and (tmp_path / "ws" / "notes.txt").exists()
