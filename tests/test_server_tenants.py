"""API keys that carry a tenant: each customer's keys spend against that customer's budget and costs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from keel.cli import app as cli
from keel.errors import InputError
from keel.server import KeyStore, create_app

from .server_fixtures import auth as _auth
from .test_server_api import scripted_app

ASK = {"question": "What is Python?"}
CHAT = {"model": "keel", "messages": [{"role": "user", "content": "What is Python?"}]}
#: a day's budget for each tenant: a handful of the scripted answers ($0.000125 each)
TENANT_USD = 0.001




def _tenants_asked(app: Any) -> list[tuple[str, str]]:
    """(user, tenant) of each request, from the first audit record of each."""
    app.telemetry.flush()
    return [(r.data["user_id"], r.data["tenant_id"]) for r in app.telemetry.audit.records() if r.event == "input_guard"]


def test_a_tenant_budget_stops_one_customers_keys_while_the_other_customer_is_answered(
    workspace: Path, keys: KeyStore
) -> None:
    _, acme = keys.create("acme-app", tenant="acme")
    _, globex = keys.create("globex-app", tenant="globex")
    app = scripted_app(budgets={"limits": [{"scope": "tenant", "usd": TENANT_USD, "per": "day"}]})
    with TestClient(create_app(app, keys=keys, workers=False)) as client:
        first = client.post("/v1/ask", json=ASK, headers=_auth(acme))
        assert first.status_code == 200 and first.json()["status"] == "answered", first.text
        per_answer = first.json()["usage"]["cost_usd"]
        assert per_answer > 0

        # acme keeps asking until its tenant budget refuses it
        for _ in range(int(TENANT_USD / per_answer) + 2):
            refused = client.post("/v1/ask", json=ASK, headers=_auth(acme))
            if refused.status_code != 200:
                break
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "budget_exceeded" and "tenant:acme" in refused.json()["message"]
        chat_refused = client.post("/v1/chat/completions", json=CHAT, headers=_auth(acme))
        assert chat_refused.status_code == 429, chat_refused.text
        error = chat_refused.json()["error"]  # OpenAI's shape on its route
        assert error["code"] == "budget_exceeded" and "tenant:acme" in error["message"]

        # globex's keys are untouched by acme's spend
        answered = client.post("/v1/ask", json=ASK, headers=_auth(globex))
        assert answered.status_code == 200 and answered.json()["status"] == "answered", answered.text
        chatted = client.post("/v1/chat/completions", json=CHAT, headers=_auth(globex))
        assert chatted.status_code == 200 and chatted.json()["keel"]["status"] == "answered", chatted.text

    app.telemetry.flush()
    by_tenant = {row["key"]: row["cost_usd"] for row in app.telemetry.costs.summary("tenant")}
    assert set(by_tenant) == {"acme", "globex"}
    assert per_answer <= by_tenant["acme"] <= TENANT_USD
    assert by_tenant["globex"] == pytest.approx(2 * per_answer)
    assert app.budget.usage({"tenant_id": "globex"})[0]["spent_usd"] == pytest.approx(2 * per_answer)  # type: ignore[attr-defined]

    # the CLI reads the same telemetry: spend by tenant
    report = CliRunner().invoke(cli, ["costs", "--by", "tenant", "--json"])
    assert report.exit_code == 0, report.output
    rows = {row["key"]: row["cost_usd"] for row in json.loads(report.stdout)["rows"]}
    assert rows == pytest.approx(by_tenant)

    # every request's first audit record names the key's user and tenant
    asked = _tenants_asked(app)
    assert set(asked) == {("acme-app", "acme"), ("globex-app", "globex")}
    assert asked.count(("globex-app", "globex")) == 2


def test_an_ask_job_runs_as_its_keys_tenant(workspace: Path, keys: KeyStore) -> None:
    _, acme = keys.create("acme-app", tenant="acme")
    app = scripted_app()
    with TestClient(create_app(app, keys=keys), headers=_auth(acme)) as client:
        job = client.post("/v1/jobs", json={"kind": "ask", "payload": ASK})
        assert job.status_code == 202, job.text
        done = app.jobs.wait(job.json()["id"], timeout=60)
        assert done.status == "succeeded", done.error
    assert done.payload["tenant"] == "acme"  # type: ignore[attr-defined]
    assert _tenants_asked(app) == [("acme-app", "acme")]
    assert [row["key"] for row in app.telemetry.costs.summary("tenant")] == ["acme"]


def test_a_plain_key_cannot_name_another_tenant_anywhere(workspace: Path, keys: KeyStore) -> None:
    _, acme = keys.create("acme-app", tenant="acme")
    _, untenanted = keys.create("ann")
    app = scripted_app()
    with TestClient(create_app(app, keys=keys, workers=False)) as client:
        refused = [
            client.post("/v1/ask", json={**ASK, "tenant": "globex"}, headers=_auth(acme)),
            client.post("/v1/jobs", json={"kind": "ask", "payload": {**ASK, "tenant": "globex"}}, headers=_auth(acme)),
            client.post("/v1/chat/completions", json={**CHAT, "metadata": {"tenant": "globex"}}, headers=_auth(acme)),
            client.post("/v1/ask", json={**ASK, "tenant": "globex"}, headers=_auth(untenanted)),
        ]
        assert [r.status_code for r in refused] == [403, 403, 403, 403]
        keel_body = refused[0].json()
        assert keel_body["error"] == "forbidden"
        assert "'acme-app'" in keel_body["message"] and "'globex'" in keel_body["message"]
        assert "--act-as-any" in keel_body["hint"]
        assert refused[2].json()["error"]["code"] == "forbidden"
        assert "no tenant" in refused[3].json()["message"]
        assert app.jobs.list() == []  # no job was queued

        # naming its own tenant is fine; a key without a tenant runs without one
        own = client.post("/v1/ask", json={**ASK, "tenant": "acme"}, headers=_auth(acme))
        plain = client.post("/v1/ask", json=ASK, headers=_auth(untenanted))
        assert (own.status_code, plain.status_code) == (200, 200)
    assert _tenants_asked(app) == [("acme-app", "acme"), ("ann", "")]
    assert {row["key"] for row in app.telemetry.costs.summary("tenant")} == {"acme", ""}  # "": no tenant


def test_a_key_that_acts_as_any_names_the_tenant_everywhere(workspace: Path, keys: KeyStore) -> None:
    _, backend = keys.create("saas-backend", act_as_any=True, tenant="house")
    app = scripted_app()
    with TestClient(create_app(app, keys=keys), headers=_auth(backend)) as client:
        asked = client.post("/v1/ask", json={**ASK, "user": "u1", "tenant": "acme"})
        chatted = client.post("/v1/chat/completions", json={**CHAT, "user": "u2", "metadata": {"tenant": "globex"}})
        job = client.post("/v1/jobs", json={"kind": "ask", "payload": {**ASK, "user": "u3", "tenant": "initech"}})
        unnamed = client.post("/v1/ask", json=ASK)  # no tenant in the body: the key's own
        assert [r.status_code for r in (asked, chatted, job, unnamed)] == [200, 200, 202, 200]
        done = app.jobs.wait(job.json()["id"], timeout=60)
        assert done.status == "succeeded", done.error
    asked_as = _tenants_asked(app)
    assert set(asked_as) == {("u1", "acme"), ("u2", "globex"), ("u3", "initech"), ("saas-backend", "house")}
    costed = {row["key"] for row in app.telemetry.costs.summary("tenant")}
    assert costed == {"acme", "globex", "initech", "house"}


def test_without_keys_the_body_names_the_tenant(workspace: Path) -> None:
    app = scripted_app(server={"auth": "off"})
    with TestClient(create_app(app, workers=False)) as client:
        answered = client.post("/v1/ask", json={**ASK, "user": "zoe", "tenant": "acme"})
        assert answered.status_code == 200, answered.text
    assert _tenants_asked(app) == [("zoe", "acme")]


def test_keys_cli_stores_lists_and_shows_the_tenant(keel_home: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "create", "acme-app", "--tenant", "acme", "--json"])
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["tenant"] == "acme"
    plain = runner.invoke(cli, ["keys", "create", "ann"])
    assert plain.exit_code == 0 and "tenant" not in plain.stderr
    tenanted = runner.invoke(cli, ["keys", "create", "globex-app", "--tenant", "globex"])
    assert tenanted.exit_code == 0 and "(tenant 'globex')" in tenanted.stderr

    listed = json.loads(runner.invoke(cli, ["keys", "list", "--json"]).stdout)
    assert [(k["name"], k["tenant"]) for k in listed] == [("acme-app", "acme"), ("ann", None), ("globex-app", "globex")]
    table = runner.invoke(cli, ["keys", "list"], env={"COLUMNS": "200"}).stdout
    rows = {cells[2]: cells[4] for cells in ([c.strip() for c in line.split("│")] for line in table.splitlines())
            if len(cells) >= 7 and cells[2] in ("acme-app", "ann", "globex-app")}
    assert rows == {"acme-app": "acme", "ann": "-", "globex-app": "globex"}

    bad = runner.invoke(cli, ["keys", "create", "x", "--tenant", "no spaces"])
    assert isinstance(bad.exception, InputError) and "tenant 'no spaces'" in bad.exception.message
    assert [k.name for k in KeyStore(f"sqlite:///{keel_home / 'keys.sqlite3'}").list()] == [
        "acme-app", "ann", "globex-app"]


def test_a_bad_tenant_is_refused_before_any_key_is_made(keys: KeyStore) -> None:
    with pytest.raises(InputError, match="tenant"):
        keys.create("acme-app", tenant="")
    with pytest.raises(InputError, match="tenant"):
        keys.create("acme-app", tenant="x" * 129)
    assert keys.list() == []


def test_an_old_key_table_gains_the_tenant_column_and_its_keys_have_none(keel_home: Path) -> None:
    keel_home.mkdir(parents=True, exist_ok=True)
    path = keel_home / "old-keys.sqlite3"
    with sqlite3.connect(path) as conn:  # the table as keel made it before tenants (act_as_any already there)
        conn.execute("CREATE TABLE keel_api_keys (id VARCHAR(12) PRIMARY KEY, name VARCHAR(64) NOT NULL, "
                     "salt VARCHAR(32) NOT NULL, key_hash VARCHAR(64) NOT NULL, created_at FLOAT NOT NULL, "
                     "revoked_at FLOAT, act_as_any BOOLEAN NOT NULL DEFAULT FALSE)")
        conn.execute("INSERT INTO keel_api_keys VALUES ('0123456789ab', 'old', '00', 'x', 1.0, NULL, 1)")
    store = KeyStore(f"sqlite:///{path}")
    assert [(k.name, k.act_as_any, k.tenant) for k in store.list()] == [("old", True, None)]
    _, key = store.create("new", tenant="acme")
    assert store.verify(key).tenant == "acme"
    assert [(k.name, k.tenant) for k in store.list()] == [("old", None), ("new", "acme")]


@pytest.mark.scale
def test_the_tenant_is_stored_in_postgresql_and_added_to_an_old_table(pg_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:  # the table as keel made it before tenants
        conn.execute(sa.text("CREATE TABLE keel_api_keys (id VARCHAR(12) PRIMARY KEY, name VARCHAR(64) NOT NULL, "
                             "salt VARCHAR(32) NOT NULL, key_hash VARCHAR(64) NOT NULL, created_at FLOAT NOT NULL, "
                             "revoked_at FLOAT, act_as_any BOOLEAN NOT NULL DEFAULT FALSE)"))
        conn.execute(sa.text("INSERT INTO keel_api_keys VALUES ('0123456789ab', 'old', '00', 'x', 1.0, NULL, false)"))
    engine.dispose()
    store = KeyStore(pg_url)
    _, key = store.create("acme-app", tenant="acme")
    assert store.verify(key).tenant == "acme"
    store.revoke("acme-app")
    assert [(k.name, k.tenant, k.active) for k in store.list()] == [("old", None, True), ("acme-app", "acme", False)]
