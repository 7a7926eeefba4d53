"""Curation over HTTP: list the up-voted candidates, accept or reject them; only a key that may act
for anyone does it, since candidates quote other users' questions and answers."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from keel.server import KeyStore, create_app

from .server_fixtures import auth
from .test_server_api import assert_error, scripted_app


def _voted_up(client: TestClient, key: str | None) -> int:
    headers = auth(key) if key else {}
    r = client.post("/v1/ask", json={"question": "What is Python?"}, headers=headers)
    assert r.status_code == 200, r.text
    vote = client.post("/v1/feedback", json={"trace_id": r.json()["trace_id"], "rating": "up"}, headers=headers)
    assert vote.status_code == 201, vote.text
    return vote.json()["curation_id"]  # type: ignore[no-any-return]


def test_a_curator_lists_accepts_and_rejects_candidates(workspace: Path) -> None:
    app = scripted_app()
    with TestClient(create_app(app)) as client:  # no keys: a loopback server, every caller may curate
        first, second = _voted_up(client, None), _voted_up(client, None)
        pending = client.get("/v1/curation")
        assert pending.status_code == 200
        assert [(c["id"], c["status"], c["question"]) for c in pending.json()] == [
            (first, "pending", "What is Python?"), (second, "pending", "What is Python?")]

        accepted = client.post(f"/v1/curation/{first}/accept")
        assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
        assert client.post(f"/v1/curation/{second}/reject").json()["status"] == "rejected"
        assert client.get("/v1/curation").json() == []
        assert [c["id"] for c in client.get("/v1/curation", params={"status": "accepted"}).json()] == [first]
        assert [e["id"] for e in app.telemetry.feedback.few_shot_examples()] == [first]  # what the prompts read

        assert_error(client.post("/v1/curation/999/accept"), 404, "not_found")
        assert_error(client.post(f"/v1/curation/{first}/approve"), 422, "input_error")
        assert_error(client.get("/v1/curation", params={"status": "done"}), 422, "input_error")


def test_only_a_key_that_may_act_for_anyone_curates(workspace: Path, keys: KeyStore) -> None:
    _, ann = keys.create("ann")
    _, ops = keys.create("ops", act_as_any=True)
    app = scripted_app()
    with TestClient(create_app(app, keys=keys)) as client:
        candidate = _voted_up(client, ann)
        for call in (client.get("/v1/curation", headers=auth(ann)),
                     client.post(f"/v1/curation/{candidate}/accept", headers=auth(ann))):
            err = assert_error(call, 403, "forbidden")
            assert "may not curate" in err["message"] and "--act-as-any" in err["hint"]
        assert_error(client.get("/v1/curation"), 401, "unauthorized")
        assert app.telemetry.feedback.curation_queue()[0]["status"] == "pending"  # the refused accept did nothing

        assert [c["id"] for c in client.get("/v1/curation", headers=auth(ops)).json()] == [candidate]
        assert client.post(f"/v1/curation/{candidate}/accept", headers=auth(ops)).json()["status"] == "accepted"
