"""App.ask / approve / reject / approvals: the graph wired to the App's gateway, audit ledger and tracing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from keel import App
from keel.errors import ApprovalRequired
from keel.graph import by_purpose
from keel.models.fake import FunctionProvider
from keel.tools import ApprovalInvalid


@pytest.fixture
def app(tmp_path: Path, keel_home: Path, monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.setenv("KEEL_WORKSPACE", str(tmp_path / "ws"))
    (tmp_path / "ws").mkdir()
    provider = FunctionProvider(
        by_purpose(
            {
                "answer": ["Hello!"],
                "agent_step": ["Done: deleted notes.txt."],
                "route_judge": ['{"label": "chat", "why": "small talk"}'],
            }
        ),
        name="scripted",
    )
    return App(
        providers={"scripted": provider},
        models={"scripted": {"provider": "fake"}},
        roles={"chat": ["scripted"], "fast": ["scripted"]},
        gateway={"cache": {"enabled": False}},
    )


def test_ask_answers_and_records_the_decisions_in_the_audit_ledger(app: App) -> None:
    answer = app.ask("hello", user="ann", session="s1")
    assert (answer.status, answer.answer, answer.models) == ("answered", "Hello!", ["scripted"])
    app.telemetry.flush()
    out = io.StringIO()
    app.telemetry.audit.export(out)
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events[:2] == ["input_guard", "route"] and events[-1] == "answer"


def test_approve_and_reject_through_the_app(app: App, tmp_path: Path) -> None:
    notes = tmp_path / "ws" / "notes.txt"
    notes.write_text("x")
    paused = app.ask("delete notes.txt in the workspace", user="ann")
    assert isinstance(paused.exception, ApprovalRequired)
    assert [a.id for a in app.approvals("pending")] == [paused.approval["id"]]  # type: ignore[index]
    done = app.approve(paused.approval["id"], by="boss")  # type: ignore[index]
    assert done.answer == "Done: deleted notes.txt." and not notes.exists()
    with pytest.raises(ApprovalInvalid):
        app.reject(paused.approval["id"], by="boss")  # type: ignore[index]
    notes.write_text("y")
    again = app.ask("delete notes.txt in the workspace")
    assert "rejected by boss" in app.reject(again.approval["id"], by="boss").answer  # type: ignore[index]
    assert notes.exists()
