"""The approval flow from the command line, with a scripted model: pause, approve, reject, expire,
replay, alter. Two steps run the real ``keel`` executable; the rest call the same entry point in-process."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from keel.cli import main
from keel.router import bundled_examples

CONFIG = """\
models:
  scripted:
    provider: fake
    replies: ["I deleted notes.txt."]
roles:
  chat: [scripted]
  fast: [scripted]
"""


@pytest.fixture
def env(tmp_path: Path, keel_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    (tmp_path / "keel.yaml").write_text(CONFIG)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    monkeypatch.setenv("KEEL_WORKSPACE", str(workspace))
    monkeypatch.setenv("USER", "tester")
    return {"workspace": workspace, "home": keel_home}


def keel(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, Any]:
    """Run ``keel ARGS --json`` in-process through the real entry point; (exit code, parsed JSON or stderr)."""
    monkeypatch.setattr(sys, "argv", ["keel", *args, "--json"])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out)
    except json.JSONDecodeError:
        return code, err


def test_pause_approve_and_replay_from_the_keel_executable(env: dict[str, Any], tmp_path: Path) -> None:
    notes = env["workspace"] / "notes.txt"
    notes.write_text("my notes")
    exe = Path(sys.executable).with_name("keel")
    asked = subprocess.run(
        [exe, "ask", "delete notes.txt in the workspace", "--json", "--user", "ann"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    paused = json.loads(asked.stdout)
    assert asked.returncode == 10 and paused["status"] == "pending_approval" and notes.exists()
    assert paused["approval"]["args"] == {"path": "notes.txt"} and paused["route"] == "agent"
    approved = subprocess.run(
        [exe, "approvals", "approve", paused["approval"]["id"], "--by", "boss", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    done = json.loads(approved.stdout)
    assert approved.returncode == 0 and done["status"] == "answered" and done["answer"] == "I deleted notes.txt."
    assert not notes.exists()


def test_cli_approvals_list_approve_replay(env: dict[str, Any], capsys: Any, monkeypatch: Any) -> None:
    notes = env["workspace"] / "notes.txt"
    notes.write_text("my notes")
    code, paused = keel(capsys, monkeypatch, "ask", "delete notes.txt in the workspace")
    approval_id = paused["approval"]["id"]
    code, listed = keel(capsys, monkeypatch, "approvals", "list")
    assert [(a["id"], a["tool"], a["args"], a["requester"], a["status"]) for a in listed] == [
        (approval_id, "delete_file", {"path": "notes.txt"}, "anonymous", "pending")
    ]
    code, done = keel(capsys, monkeypatch, "approvals", "approve", approval_id)
    assert code == 0 and not notes.exists()
    notes.write_text("new notes")
    code, err = keel(capsys, monkeypatch, "approvals", "approve", approval_id)
    assert code == 2 and "already used" in err and notes.read_text() == "new notes"


def test_cli_reject_leaves_the_file(env: dict[str, Any], capsys: Any, monkeypatch: Any) -> None:
    notes = env["workspace"] / "notes.txt"
    notes.write_text("my notes")
    _, paused = keel(capsys, monkeypatch, "ask", "delete notes.txt in the workspace")
    code, done = keel(capsys, monkeypatch, "approvals", "reject", paused["approval"]["id"], "--reason", "no")
    assert code == 0 and "rejected by tester" in done["answer"] and notes.exists()
    code, listed = keel(capsys, monkeypatch, "approvals", "list", "--all")
    assert [a["status"] for a in listed] == ["rejected"] and listed[0]["decided_by"] == "tester"


def test_cli_expired_approval_leaves_the_file(env: dict[str, Any], capsys: Any, monkeypatch: Any) -> None:
    notes = env["workspace"] / "notes.txt"
    notes.write_text("my notes")
    monkeypatch.setenv("KEEL_TOOLS__APPROVAL_TTL_S", "0.5")
    _, paused = keel(capsys, monkeypatch, "ask", "delete notes.txt in the workspace")
    time.sleep(0.6)
    code, done = keel(capsys, monkeypatch, "approvals", "approve", paused["approval"]["id"])
    assert code == 2 and "expired" in done["answer"] and notes.exists()


def test_cli_altered_approval_fails(env: dict[str, Any], capsys: Any, monkeypatch: Any) -> None:
    notes = env["workspace"] / "notes.txt"
    notes.write_text("my notes")
    (env["workspace"] / "keep.txt").write_text("keep")
    _, paused = keel(capsys, monkeypatch, "ask", "delete notes.txt in the workspace")
    with sqlite3.connect(env["home"] / "approvals.sqlite3") as db:
        db.execute('UPDATE approvals SET args_json = \'{"path": "keep.txt"}\'')
    code, done = keel(capsys, monkeypatch, "approvals", "approve", paused["approval"]["id"])
    assert code == 2 and done["error"]["error"] == "approval_invalid" and "altered" in done["error"]["message"]
    assert notes.exists() and (env["workspace"] / "keep.txt").exists()


def test_cli_usage_errors(env: dict[str, Any], capsys: Any, monkeypatch: Any) -> None:
    assert keel(capsys, monkeypatch, "approvals", "approve")[0] == 2
    assert keel(capsys, monkeypatch, "approvals", "destroy", "x")[0] == 2
    code, err = keel(capsys, monkeypatch, "approvals", "approve", "apr_missing")
    assert code == 2 and "keel approvals list" in err
    assert keel(capsys, monkeypatch, "ask", "  ")[0] == 2


def test_graph_command_draws_the_configured_graph(env: dict[str, Any], capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(sys, "argv", ["keel", "graph", "--mermaid"])
    main()
    out = capsys.readouterr().out
    assert out.startswith("flowchart TD") and "router -.->|agent: tools| agent_reason" in out
    assert 'tool_delete_file["delete_file (destructive, needs approval)"]' in out
    code, data = keel(capsys, monkeypatch, "graph")
    assert {"from": "run_tools", "to": "await_approval", "conditional": True} in data["edges"]
    assert data["limits"]["max_steps"] == 8


def test_router_train_on_user_labels(env: dict[str, Any], capsys: Any, monkeypatch: Any, tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        "\n".join(json.dumps({"text": f"frobnicate the widget {i}", "label": "agent"}) for i in range(20))
    )
    code, report = keel(capsys, monkeypatch, "router", "train", "--labels", str(labels))
    assert code == 0 and report["examples"] == len(bundled_examples()) + 20 and report["holdout_accuracy"] > 0.6
    code, decision = keel(capsys, monkeypatch, "router", "explain", "frobnicate the widget")
    assert decision["label"] == "agent" and decision["stage"] == "classifier"


def test_router_model_path_is_where_training_writes_and_serving_reads(
    env: dict[str, Any], capsys: Any, monkeypatch: Any, tmp_path: Path
) -> None:
    """router.model_path (relative to keel.yaml) replaces <home>/router/model.npz: a model baked
    into an image or on a read-only mount is shared without a volume."""
    from keel.config import load_settings
    from keel.errors import ConfigError
    from keel.graph.factory import build_router

    monkeypatch.setenv("KEEL_ROUTER__MODEL_PATH", "models/router.npz")
    settings = load_settings(tmp_path / "keel.yaml")
    assert settings.router_model == tmp_path / "models" / "router.npz"
    with pytest.raises(ConfigError, match="router.model_path .*router.npz does not exist"):
        build_router(settings)
    labels = tmp_path / "labels.jsonl"
    labels.write_text("\n".join(json.dumps({"text": f"frobnicate the widget {i}", "label": "agent"})
                                for i in range(20)))
    code, report = keel(capsys, monkeypatch, "router", "train", "--labels", str(labels))
    assert code == 0 and report["path"] == str(tmp_path / "models" / "router.npz")
    assert not (env["home"] / "router" / "model.npz").exists()
    assert build_router(settings).decide("frobnicate the widget").label == "agent"
