"""POST /v1/jobs and GET /v1/jobs/{id} over keel.jobs, with the server's embedded worker threads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from keel.server import KeyStore, create_app

from .test_server_api import REPLY, scripted_app


def _wait(client: TestClient, location: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(location).json()
        if job["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return job  # type: ignore[no-any-return]
        time.sleep(0.1)


def test_an_ask_job_is_accepted_with_its_location_and_runs_to_the_answer(workspace: Path, keel_home: Path) -> None:
    keys = KeyStore(f"sqlite:///{keel_home / 'keys.sqlite3'}")
    _, key = keys.create("ann")
    with TestClient(create_app(scripted_app(), keys=keys), headers={"Authorization": f"Bearer {key}"}) as client:
        r = client.post("/v1/jobs", json={"kind": "ask", "payload": {"question": "What is Python?"}})
        assert r.status_code == 202, r.text
        queued = r.json()
        assert r.headers["location"] == f"/v1/jobs/{queued['id']}"
        assert set(queued) == {"id", "kind", "status", "result", "error", "attempts", "created_at", "started_at",
                               "finished_at", "cancel"}
        assert (queued["kind"], queued["status"]) == ("ask", "queued")
        done = _wait(client, r.headers["location"])
        assert (done["status"], done["error"], done["attempts"]) == ("succeeded", None, 1), done
        answer = done["result"]
        assert (answer["status"], answer["answer"]) == ("answered", REPLY)
        root = client.get(f"/v1/traces/{answer['trace_id']}").json()["spans"][0]
    assert root["attributes"]["user.id"] == "ann"  # the key's name, as for /v1/ask


def test_job_unhappy_paths(workspace: Path) -> None:
    with TestClient(create_app(scripted_app(), workers=False)) as client:
        err = client.get("/v1/jobs/job_does_not_exist")
        assert err.status_code == 404 and err.json()["error"] == "not_found"
        for body in (
            {"kind": "sleep", "payload": {}},
            {"kind": "ask"},
            {"kind": "ask", "payload": {"question": ""}},
            {"kind": "ask", "payload": {"question": "hi", "colour": "blue"}},
            {"kind": "ingest", "payload": {"paths": []}},
        ):
            r = client.post("/v1/jobs", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["error"] == "input_error" and r.json()["message"]


def test_an_ingest_job_reads_only_inside_the_workspace(workspace: Path, tmp_path: Path) -> None:
    (workspace / "notes.md").write_text("# Notes\nkeel serves answers.\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the knowledge base")
    with TestClient(create_app(scripted_app(), workers=False)) as client:
        for outside in (str(secret), "../secret.txt", "/etc"):
            r = client.post("/v1/jobs", json={"kind": "ingest", "payload": {"paths": [outside]}})
            assert r.status_code == 422 and "workspace" in r.json()["message"], r.text
        r = client.post("/v1/jobs", json={"kind": "ingest", "payload": {"paths": ["notes.md"], "kb": "notes"}})
        assert r.status_code == 202, r.text
        assert client.get(r.headers["location"]).json()["status"] == "queued"  # no worker in this process
