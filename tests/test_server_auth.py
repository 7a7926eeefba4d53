"""API keys: stored hashed, checked on /v1 and /metrics, named as the user; and the CLI that manages them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from keel.cli import app as cli
from keel.errors import ConfigError, InputError, NotFound, Unauthorized
from keel.server import KeyStore, create_app, serve

from .server_fixtures import auth as _auth
from .test_server_api import scripted_app


def test_a_key_is_shown_once_and_stored_only_as_a_salted_hash(keys: KeyStore, keel_home: Path) -> None:
    record, key = keys.create("ann")
    prefix, key_id, secret = key.split("_", 2)
    assert (prefix, key_id, record.name) == ("keel", record.id, "ann") and len(secret) >= 40
    assert keys.verify(key) == record
    _, other = keys.create("bob")
    rows = sqlite3.connect(keel_home / "keys.sqlite3").execute("SELECT * FROM keel_api_keys").fetchall()
    dump = repr(rows)
    assert secret not in dump and other.split("_", 2)[2] not in dump
    salts = [r[2] for r in rows]
    assert len(set(salts)) == 2  # a salt per key


def test_verify_refuses_wrong_malformed_and_revoked_keys(keys: KeyStore) -> None:
    record, key = keys.create("ann")
    for bad in ("nope", key[:-1] + ("A" if key[-1] != "A" else "B"), f"keel_{'0' * 12}_{'x' * 43}"):
        with pytest.raises(Unauthorized):
            keys.verify(bad)
    assert [k.name for k in keys.revoke("ann")] == ["ann"]
    with pytest.raises(Unauthorized, match="revoked"):
        keys.verify(key)
    with pytest.raises(NotFound):
        keys.revoke("ann")
    assert [(k.name, k.active) for k in keys.list()] == [("ann", False)]
    assert keys.list(include_revoked=False) == [] and not keys.any_active()


def test_names_are_checked_and_one_active_key_per_name(keys: KeyStore) -> None:
    keys.create("ci-bot")
    with pytest.raises(InputError, match="already exists"):
        keys.create("ci-bot")
    with pytest.raises(InputError, match="must be"):
        keys.create("has space")
    keys.revoke("ci-bot")
    keys.create("ci-bot")  # a revoked name can be reused


def test_auto_auth_is_open_on_loopback_until_a_key_exists(workspace: Path, keys: KeyStore) -> None:
    with TestClient(create_app(scripted_app(), keys=keys)) as client:
        assert client.get("/v1/approvals").status_code == 200
        _, key = keys.create("ann")
        r = client.get("/v1/approvals")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"] == "unauthorized" and "keel keys create" in r.json()["hint"]
        assert client.get("/v1/approvals", headers=_auth(key)).status_code == 200


def test_every_v1_route_and_metrics_need_the_key_but_probes_and_ui_do_not(workspace: Path, keys: KeyStore) -> None:
    _, key = keys.create("ann")
    with TestClient(create_app(scripted_app(), keys=keys)) as client:
        protected = [
            ("POST", "/v1/ask", {"question": "What is Python?"}),
            ("POST", "/v1/chat/completions", {"model": "keel", "messages": [{"role": "user", "content": "hi"}]}),
            ("GET", "/v1/models", None),
            ("GET", "/v1/approvals", None),
            ("GET", "/v1/approvals/apr_x", None),
            ("POST", "/v1/approvals/apr_x/approve", None),
            ("POST", "/v1/approvals/apr_x/reject", None),
            ("POST", "/v1/feedback", {"trace_id": "t", "rating": "up"}),
            ("GET", "/v1/curation", None),
            ("POST", "/v1/curation/1/accept", None),
            ("GET", "/v1/traces", None),
            ("GET", "/v1/traces/t", None),
            ("POST", "/v1/jobs", {"kind": "ask", "payload": {"question": "hi"}}),
            ("GET", "/v1/jobs/job_x", None),
            ("GET", "/metrics", None),
        ]
        for method, path, body in protected:
            r = client.request(method, path, json=body)
            assert r.status_code == 401, (path, r.status_code)
            wrong = client.request(method, path, json=body, headers=_auth("keel_000000000000_" + "x" * 43))
            assert wrong.status_code == 401, path
            basic = client.request(method, path, json=body, headers={"Authorization": "Basic YW5uOnB3"})
            assert basic.status_code == 401, path
        openai_shaped = client.post("/v1/chat/completions", json={}).json()
        assert openai_shaped["error"]["code"] == "unauthorized"  # OpenAI's error shape on its route
        from keel.server._app import UI_DIR

        open_paths = ["/healthz", "/readyz"] + (["/", "/app.js"] if (UI_DIR / "app.js").is_file() else [])
        for path in open_paths:
            assert client.get(path).status_code == 200, path
        assert client.get("/metrics", headers=_auth(key)).status_code == 200


def test_the_key_name_is_the_user_and_the_approver(workspace: Path, keys: KeyStore) -> None:
    _, key = keys.create("ann")
    _, backend = keys.create("backend", act_as_any=True)  # may name its own users (tests/test_server_identity.py)
    app = scripted_app()
    with TestClient(create_app(app, keys=keys), headers=_auth(key)) as client:
        mine = client.post("/v1/ask", json={"question": "What is Python?"}).json()["trace_id"]
        theirs = client.post("/v1/ask", json={"question": "What is Python?", "user": "end-user-7"},
                             headers=_auth(backend)).json()
        assert client.get(f"/v1/traces/{mine}").json()["spans"][0]["attributes"]["user.id"] == "ann"
        their_trace = client.get(f"/v1/traces/{theirs['trace_id']}", headers=_auth(backend))  # ann's key: 404
        assert their_trace.json()["spans"][0]["attributes"]["user.id"] == "end-user-7"

        (workspace / "notes.txt").write_text("x")
        paused = client.post("/v1/ask", json={"question": "delete notes.txt in the workspace"}).json()
        approval_id = paused["approval"]["id"]
        assert client.get(f"/v1/approvals/{approval_id}").json()["requester"] == "ann"
        _, boss = keys.create("boss")
        client.post(f"/v1/approvals/{approval_id}/approve", headers=_auth(boss))
        assert client.get(f"/v1/approvals/{approval_id}").json()["decided_by"] == "boss"
    assert {row["key"] for row in app.telemetry.costs.summary("user")} >= {"ann", "end-user-7"}


def test_a_revoked_key_is_refused_at_once(workspace: Path, keys: KeyStore) -> None:
    _, key = keys.create("ann")
    keys.create("other")  # keys still exist after the revocation, so auth stays on
    with TestClient(create_app(scripted_app(), keys=keys)) as client:
        assert client.get("/v1/traces", headers=_auth(key)).status_code == 200
        keys.revoke("ann")
        r = client.get("/v1/traces", headers=_auth(key))
    assert r.status_code == 401 and "revoked" in r.json()["message"]


def test_required_and_off_modes(workspace: Path, keys: KeyStore) -> None:
    with TestClient(create_app(scripted_app(server={"auth": "required"}), keys=keys)) as client:
        assert client.get("/v1/traces").status_code == 401
    _, key = keys.create("ann")
    with TestClient(create_app(scripted_app(server={"auth": "off"}), keys=keys)) as client:
        assert client.get("/v1/traces").status_code == 200
        assert client.get("/v1/traces", headers={"Authorization": "Bearer garbage"}).status_code == 200


def test_a_network_address_always_needs_a_key_and_will_not_start_without_one(workspace: Path,
                                                                             keys: KeyStore) -> None:
    app = scripted_app()
    api = create_app(app, host="0.0.0.0", keys=keys)
    with TestClient(api) as client:
        assert client.get("/v1/traces").status_code == 401
    with pytest.raises(ConfigError) as refused:
        serve(app, host="0.0.0.0", port=1, announce=lambda _: None)
    assert "keel keys create" in (refused.value.hint or "") and "0.0.0.0" in refused.value.message
    with pytest.raises(ConfigError):
        serve(scripted_app(server={"auth": "required"}), host="127.0.0.1", port=1, announce=lambda _: None)


def test_keys_cli_create_list_revoke(keel_home: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "ann"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("keel_")
    store = KeyStore(f"sqlite:///{keel_home / 'keys.sqlite3'}")
    assert store.verify(key).name == "ann"

    listed = json.loads(runner.invoke(cli, ["keys", "list", "--json"]).stdout)
    assert [(k["name"], k["active"]) for k in listed] == [("ann", True)] and "key" not in listed[0]
    assert key not in runner.invoke(cli, ["keys", "list"]).stdout

    as_json = json.loads(runner.invoke(cli, ["keys", "create", "bob", "--json"]).stdout)
    assert as_json["name"] == "bob" and store.verify(as_json["key"]).id == as_json["id"]

    revoked = runner.invoke(cli, ["keys", "revoke", "ann"])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    with pytest.raises(Unauthorized):
        store.verify(key)
    assert [k["name"] for k in json.loads(runner.invoke(cli, ["keys", "list", "--json", "--all"]).stdout)] == [
        "ann", "bob"]


def test_keys_cli_errors_are_one_line_with_a_hint(keel_home: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "keel", "keys", "revoke", "nobody"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "no active API key" in done.stderr and "keel keys list" in done.stderr


def test_serve_on_a_network_address_without_keys_refuses_with_what_to_do(keel_home: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "keel", "serve", "--host", "0.0.0.0", "--port", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "refusing to serve on 0.0.0.0" in done.stderr and "keel keys create" in done.stderr


@pytest.mark.scale
def test_keys_live_in_the_postgresql_telemetry_database_when_configured(pg_url: str) -> None:
    from keel.config import load_settings

    store = KeyStore.for_settings(load_settings(telemetry={"database_url": pg_url}))
    try:
        record, key = store.create("replica-shared")
        again = KeyStore.for_settings(load_settings(telemetry={"database_url": pg_url}))  # another replica
        assert again.verify(key) == record and again.any_active()
        again.revoke("replica-shared")
        with pytest.raises(Unauthorized, match="revoked"):
            store.verify(key)
    finally:
        store.engine.dispose()
