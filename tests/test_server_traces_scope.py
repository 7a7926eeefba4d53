"""Trace reads over HTTP follow the key: its own user's traces (in its tenant, if it has one); an
``--act-as-any`` key and auth off see all; another user's trace id is 404, as if unknown."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from keel.server import KeyStore, create_app

from .server_fixtures import auth
from .test_server_api import scripted_app


def _ask(client: TestClient, key: str, **body: str) -> str:
    r = client.post("/v1/ask", json={"question": "What is Python?", **body}, headers=auth(key))
    assert r.status_code == 200, r.text
    return r.json()["trace_id"]  # type: ignore[no-any-return]


def _listed(client: TestClient, key: str | None = None, **params: int) -> list[str]:
    r = client.get("/v1/traces", params=params, headers=auth(key) if key else {})
    assert r.status_code == 200, r.text
    return [row["trace_id"] for row in r.json()]


def _shown(client: TestClient, key: str | None, trace_id: str) -> int:
    return client.get(f"/v1/traces/{trace_id}", headers=auth(key) if key else {}).status_code


def test_each_key_lists_and_shows_only_its_own_users_traces(workspace: Path, keys: KeyStore) -> None:
    _, ann = keys.create("ann")
    _, bob = keys.create("bob")
    _, ops = keys.create("ops", act_as_any=True)
    app = scripted_app()
    with TestClient(create_app(app, keys=keys)) as client:
        ann_trace, bob_trace = _ask(client, ann), _ask(client, bob)
        for_ann = _ask(client, ops, user="ann")  # an act-as-any key ran it as ann: it is ann's

        assert _listed(client, ann) == [for_ann, ann_trace]
        assert _listed(client, bob) == [bob_trace]
        assert (_shown(client, ann, ann_trace), _shown(client, ann, for_ann), _shown(client, bob, bob_trace)) == (
            200, 200, 200)

        other = client.get(f"/v1/traces/{bob_trace}", headers=auth(ann))
        unknown = client.get("/v1/traces/" + "f" * 32, headers=auth(ann))
        assert other.status_code == unknown.status_code == 404  # not 403: nothing says bob's trace exists
        assert other.json()["error"] == "not_found" and bob_trace in other.json()["message"]
        assert _shown(client, bob, ann_trace) == 404

        assert set(_listed(client, ops)) == {ann_trace, bob_trace, for_ann}  # act-as-any sees every trace
        assert _shown(client, ops, bob_trace) == 200
    # the CLI's store reads stay unfiltered (local admin use)
    assert {s.trace_id for s in app.telemetry.traces.list()} == {ann_trace, bob_trace, for_ann}


def test_a_tenant_key_sees_only_its_tenants_traces(workspace: Path, keys: KeyStore) -> None:
    _, acme = keys.create("ann", tenant="acme")
    _, ops = keys.create("ops", act_as_any=True)
    with TestClient(create_app(scripted_app(), keys=keys)) as client:
        own = _ask(client, acme)
        elsewhere = _ask(client, ops, user="ann", tenant="globex")  # ann, but another tenant's
        untenanted = _ask(client, ops, user="ann")
        root = client.get(f"/v1/traces/{own}", headers=auth(acme)).json()["spans"][0]["attributes"]
        assert (root["user.id"], root["keel.tenant_id"]) == ("ann", "acme")
        assert _listed(client, acme) == [own]
        assert (_shown(client, acme, elsewhere), _shown(client, acme, untenanted)) == (404, 404)


def test_with_auth_off_every_trace_is_visible(workspace: Path, keys: KeyStore) -> None:
    app = scripted_app(server={"auth": "off"})
    with TestClient(create_app(app, keys=keys)) as client:
        for user in ("ann", "bob"):
            client.post("/v1/ask", json={"question": "What is Python?", "user": user})
        _, key = keys.create("ann")  # ignored: auth is off
        listed = _listed(client)
        assert len(listed) == 2 and _listed(client, key) == listed
        assert all(_shown(client, None, t) == 200 for t in listed)


def test_the_limit_counts_matching_traces_behind_newer_ones_of_others(workspace: Path, keys: KeyStore) -> None:
    _, ann = keys.create("ann")
    _, bob = keys.create("bob")
    app = scripted_app()
    with TestClient(create_app(app, keys=keys)) as client:
        older = [_ask(client, ann) for _ in range(3)]
        newer = [_ask(client, bob) for _ in range(5)]  # filtering after the limit would leave ann none
        assert _listed(client, ann, limit=2) == older[::-1][:2]
        assert _listed(client, bob, limit=5) == newer[::-1]

        store = app.telemetry.traces
        store.scan_page = 2  # force several pages of non-matching traces before ann's
        assert [s.trace_id for s in store.list(limit=3, user="ann")] == older[::-1]
        assert [s.trace_id for s in store.list(limit=10, user="ann")] == older[::-1]  # fewer than limit exist
        assert store.list(limit=3, user="nobody") == []
        assert [s.trace_id for s in store.list(limit=3)] == newer[::-1][:3]  # unfiltered: as before


def test_the_resumed_half_of_a_paused_run_is_the_askers_trace_too(workspace: Path, keys: KeyStore) -> None:
    _, ann = keys.create("ann")
    _, bob = keys.create("bob")
    _, ops = keys.create("ops", act_as_any=True)
    (workspace / "notes.txt").write_text("x")
    with TestClient(create_app(scripted_app(), keys=keys)) as client:
        paused = client.post("/v1/ask", json={"question": "delete notes.txt in the workspace"}, headers=auth(ann))
        assert paused.status_code == 202, paused.text
        resumed = client.post(f"/v1/approvals/{paused.json()['approval']['id']}/approve", headers=auth(ops))
        assert resumed.status_code == 200, resumed.text
        trace_id = resumed.json()["trace_id"]
        assert (_shown(client, ann, trace_id), _shown(client, bob, trace_id)) == (200, 404)
        assert trace_id in _listed(client, ann)
