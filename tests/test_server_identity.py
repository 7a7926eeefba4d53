"""Who a request runs as: the API key's name wins over a body's `user`, unless the key may act as any user."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from keel.cli import app as cli
from keel.server import KeyStore, create_app

from .server_fixtures import auth as _auth
from .test_server_api import scripted_app


def _user_of(client: TestClient, trace_id: str, key: str) -> str:
    return client.get(f"/v1/traces/{trace_id}", headers=_auth(key)).json()["spans"][0]["attributes"]["user.id"]


ASK = {"question": "What is Python?"}
CHAT = {"model": "keel", "messages": [{"role": "user", "content": "What is Python?"}]}


def test_a_plain_key_cannot_spend_as_another_user_anywhere(workspace: Path, keys: KeyStore) -> None:
    _, key = keys.create("ann")
    app = scripted_app(budgets={"limits": [{"scope": "user", "usd": 1.0, "per": "day"}]})
    with TestClient(create_app(app, keys=keys, workers=False), headers=_auth(key)) as client:
        refused = [
            client.post("/v1/ask", json={**ASK, "user": "bob"}),
            client.post("/v1/jobs", json={"kind": "ask", "payload": {**ASK, "user": "bob"}}),
            client.post("/v1/chat/completions", json={**CHAT, "user": "bob"}),
            client.post("/v1/chat/completions", json={**CHAT, "user": "bob", "stream": True}),
        ]
        assert [r.status_code for r in refused] == [403, 403, 403, 403]
        keel_body, *_, openai_body = [r.json() for r in refused]
        assert keel_body["error"] == "forbidden" and "'ann'" in keel_body["message"] and "'bob'" in keel_body["message"]
        assert "--act-as-any" in keel_body["hint"]
        assert openai_body["error"]["code"] == "forbidden"  # OpenAI's shape on its route: clients raise 403 errors
        assert client.get("/v1/jobs/none").status_code == 404 and app.jobs.list() == []  # no job was queued

        # naming yourself is fine, and leaving user out runs as the key's name
        own = client.post("/v1/ask", json={**ASK, "user": "ann"}).json()["trace_id"]
        plain = client.post("/v1/chat/completions", json=CHAT).json()["keel"]["trace_id"]
        assert (_user_of(client, own, key), _user_of(client, plain, key)) == ("ann", "ann")
    spenders = {row["key"] for row in app.telemetry.costs.summary("user")}
    assert spenders == {"ann"}  # bob's budget was never touched
    assert app.budget.usage({"user_id": "bob"})[0]["spent_usd"] == 0  # type: ignore[attr-defined]


def test_a_key_made_to_act_as_any_user_names_them_everywhere(workspace: Path, keys: KeyStore) -> None:
    record, key = keys.create("backend", act_as_any=True)
    assert record.act_as_any and keys.verify(key).act_as_any
    app = scripted_app()
    with TestClient(create_app(app, keys=keys), headers=_auth(key)) as client:
        asked = client.post("/v1/ask", json={**ASK, "user": "end-user-7"}).json()["trace_id"]
        chatted = client.post("/v1/chat/completions", json={**CHAT, "user": "end-user-8"}).json()["keel"]["trace_id"]
        job = client.post("/v1/jobs", json={"kind": "ask", "payload": {**ASK, "user": "end-user-9"}}).json()
        done = app.jobs.wait(job["id"], timeout=60)
        assert done.status == "succeeded", done.error
        users = [_user_of(client, t, key) for t in (asked, chatted, done.result["trace_id"])]  # type: ignore[index]
    assert users == ["end-user-7", "end-user-8", "end-user-9"]


def test_without_keys_the_body_names_the_user(workspace: Path) -> None:
    for server in ({}, {"auth": "off"}):  # open on loopback until a key exists; or auth off
        with TestClient(create_app(scripted_app(server=server), workers=False)) as client:
            trace_id = client.post("/v1/ask", json={**ASK, "user": "zoe"}).json()["trace_id"]
            root = client.get(f"/v1/traces/{trace_id}").json()["spans"][0]
        assert root["attributes"]["user.id"] == "zoe", server


def test_approvals_requested_through_a_plain_key_carry_its_name(workspace: Path, keys: KeyStore) -> None:
    _, key = keys.create("ann")
    (workspace / "notes.txt").write_text("x")
    with TestClient(create_app(scripted_app(), keys=keys, workers=False), headers=_auth(key)) as client:
        denied = client.post("/v1/ask", json={"question": "delete notes.txt in the workspace", "user": "boss"})
        assert denied.status_code == 403
        paused = client.post("/v1/ask", json={"question": "delete notes.txt in the workspace"}).json()
        assert client.get(f"/v1/approvals/{paused['approval']['id']}").json()["requester"] == "ann"
    assert (workspace / "notes.txt").exists()


def test_an_old_key_table_gains_the_column_and_its_keys_act_only_as_themselves(keel_home: Path) -> None:
    keel_home.mkdir(parents=True, exist_ok=True)
    path = keel_home / "old-keys.sqlite3"
    with sqlite3.connect(path) as conn:  # the table as keel made it before act_as_any
        conn.execute("CREATE TABLE keel_api_keys (id VARCHAR(12) PRIMARY KEY, name VARCHAR(64) NOT NULL, "
                     "salt VARCHAR(32) NOT NULL, key_hash VARCHAR(64) NOT NULL, created_at FLOAT NOT NULL, "
                     "revoked_at FLOAT)")
        conn.execute("INSERT INTO keel_api_keys VALUES ('0123456789ab', 'old', '00', 'x', 1.0, NULL)")
    store = KeyStore(f"sqlite:///{path}")
    assert [(k.name, k.act_as_any) for k in store.list()] == [("old", False)]
    record, _ = store.create("new", act_as_any=True)
    assert [(k.name, k.act_as_any) for k in store.list()] == [("old", False), ("new", True)]


@pytest.mark.scale
def test_act_as_any_is_stored_in_postgresql(pg_url: str) -> None:
    store = KeyStore(pg_url)
    _, key = store.create("backend", act_as_any=True)
    _, plain = store.create("ann")
    assert (store.verify(key).act_as_any, store.verify(plain).act_as_any) == (True, False)
    store.revoke("backend")
    assert [(k.name, k.act_as_any, k.active) for k in store.list()] == [("backend", True, False), ("ann", False, True)]


def test_keys_cli_creates_a_key_that_acts_as_any_user_and_lists_it(keel_home: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "backend", "--act-as-any", "--json"])
    made: dict[str, Any] = json.loads(created.stdout)
    plain = runner.invoke(cli, ["keys", "create", "ann"])
    assert plain.exit_code == 0 and "act as any user" not in plain.stderr
    assert made["act_as_any"] is True
    listed = json.loads(runner.invoke(cli, ["keys", "list", "--json"]).stdout)
    assert [(k["name"], k["act_as_any"]) for k in listed] == [("backend", True), ("ann", False)]
    table = runner.invoke(cli, ["keys", "list"], env={"COLUMNS": "200"}).stdout
    rows = {line.split("│")[2].strip(): line.split("│")[3].strip() for line in table.splitlines()
            if line.count("│") >= 5 and ("backend" in line or " ann " in line)}
    assert rows == {"backend": "any user", "ann": "itself"}
