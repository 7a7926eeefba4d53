"""Budgets: worst case reserved atomically before each call, settled after; no overspend under load."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from keel.app import App
from keel.config import BudgetLimit
from keel.errors import BudgetExceeded
from keel.models import ChatRequest, FakeProvider, Message
from keel.models.gateway import NoBudget
from keel.telemetry.budgets import NANO, Budgets, RedisCounters, SQLiteCounters, window

PRICE = {"provider": "fake", "input_price_per_mtok": 1.0, "output_price_per_mtok": 0.0}


def _request(user: str = "alice", **metadata: str) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content="how many?")], metadata={"user_id": user, **metadata})


def _call_cost() -> float:
    """Input-only pricing: the worst case equals the real cost, so a budget fits an exact number of calls."""
    from keel.models.base import estimate_request_tokens

    return estimate_request_tokens(_request()) / 1_000_000


def _app(budgets: dict, reply=None) -> App:
    provider = FakeProvider([reply or "twelve"], repeat_last=True, name="fake:m")
    return App(
        models={"m": PRICE},
        roles={"chat": ["m"]},
        providers={"m": provider},
        gateway={"cache": {"enabled": False}},
        budgets=budgets,
    )


def _slow(request: ChatRequest) -> str:
    time.sleep(0.02)  # keep the calls in flight together
    return "twelve"


def _hammer(app: App, n: int = 50) -> tuple[list[str], list[BudgetExceeded]]:
    def one(_: int) -> str | BudgetExceeded:
        try:
            return app.gateway.chat(_request()).text
        except BudgetExceeded as exc:
            return exc

    _ = app.gateway  # build once, outside the race
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    return [r for r in results if isinstance(r, str)], [r for r in results if isinstance(r, BudgetExceeded)]


def test_fifty_concurrent_requests_against_a_budget_for_ten_sqlite():
    limit = 10 * _call_cost()
    app = _app({"limits": [{"scope": "user", "usd": limit, "per": "day"}]}, reply=_slow)

    answered, refused = _hammer(app)

    assert (len(answered), len(refused)) == (10, 40)
    usage = app.budget.usage({"user_id": "alice"})[0]
    assert usage["spent_usd"] == pytest.approx(limit) and usage["reserved_usd"] == 0
    assert usage["spent_usd"] <= limit
    err = refused[0]
    tomorrow = window("day", datetime.now(UTC))[1].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (err.budget, err.resets_at) == ("user:alice per day", tomorrow)
    assert "user:alice per day" in str(err) and f"resets at {tomorrow}" in str(err)
    assert err.http_status == 429 and err.exit_code == 4


@pytest.mark.scale
def test_fifty_concurrent_requests_against_a_budget_for_ten_redis():
    user = f"u-{uuid.uuid4().hex[:8]}"
    cost = _call_cost()
    counters = RedisCounters("redis://127.0.0.1:6379/0", prefix=f"test:{uuid.uuid4().hex}:")
    budgets = Budgets([BudgetLimit(scope="user", usd=10 * cost, per="hour")], counters)
    app = _app({})
    app.budget = budgets  # type: ignore[misc]  # the cached property, replaced before the gateway is built
    app.providers["m"].fn = _slow  # type: ignore[attr-defined]

    def one(_: int) -> str | BudgetExceeded:
        try:
            return app.gateway.chat(_request(user)).text
        except BudgetExceeded as exc:
            return exc

    _ = app.gateway
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    answered = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    try:
        assert (len(answered), len(refused)) == (10, 40)
        usage = budgets.usage({"user_id": user})[0]
        assert usage["spent_usd"] == pytest.approx(10 * cost) and usage["reserved_usd"] == 0
        assert refused[0].budget == f"user:{user} per hour" and refused[0].resets_at.endswith(":00:00Z")
        ttl = counters.client.ttl(counters.prefix + budgets.checks({"user_id": user}, datetime.now(UTC))[0].key)
        assert 86400 < ttl <= 86400 + 3600  # the counter expires a day after its window ends
    finally:
        for key in counters.client.scan_iter(counters.prefix + "*"):
            counters.client.delete(key)


def test_a_runaway_loop_stops_within_one_call_of_its_request_budget():
    cost = _call_cost()
    app = _app({"request_usd": 7.5 * cost})
    calls = 0
    with pytest.raises(BudgetExceeded) as info:
        while calls < 1000:
            app.gateway.chat(_request(request_id="r-1"))
            calls += 1
    spent = app.budget.usage({"request_id": "r-1"})[0]["spent_usd"]
    assert calls == 7 and spent <= 7.5 * cost and 7.5 * cost - spent < cost
    assert info.value.budget == "request:r-1" and info.value.resets_at is None
    # another request has its own budget
    assert app.gateway.chat(_request(request_id="r-2")).text == "twelve"


def test_every_applicable_budget_must_have_room_and_a_refusal_reserves_nothing():
    cost = _call_cost()
    app = _app(
        {
            "limits": [
                {"scope": "global", "usd": 3 * cost, "per": "hour"},
                {"scope": "tenant", "usd": 100 * cost},
            ]
        }
    )
    for user in ("a", "b", "c"):
        app.gateway.chat(_request(user, tenant_id="acme"))
    with pytest.raises(BudgetExceeded, match="global:all per hour"):
        app.gateway.chat(_request("d", tenant_id="acme"))
    tenant = [u for u in app.budget.usage({"tenant_id": "acme"}) if u["budget"].startswith("tenant")][0]
    assert tenant["spent_usd"] == pytest.approx(3 * cost) and tenant["reserved_usd"] == 0


def test_a_failed_call_releases_its_reservation():
    from keel.errors import ModelRefused

    cost = _call_cost()
    app = _app({"user_usd": 1 * cost}, reply=ModelRefused("no"))
    with pytest.raises(ModelRefused):
        app.gateway.chat(_request())
    assert app.budget.usage({"user_id": "alice"})[0] == {
        "budget": "user:alice",
        "limit_usd": pytest.approx(cost),
        "spent_usd": 0.0,
        "reserved_usd": 0.0,
        "left_usd": pytest.approx(cost),
        "resets_at": None,
    }


def test_no_limits_means_no_counter_io_and_missing_ids_skip_their_budget(tmp_path):
    assert isinstance(_app({}).budget, NoBudget)
    app = _app({"session_usd": 0.0})
    assert app.gateway.chat(_request()).text == "twelve"  # no session id: the session budget does not apply
    with pytest.raises(BudgetExceeded, match="session:s1"):
        app.gateway.chat(_request(session_id="s1"))


def test_rejections_are_counted_in_the_metrics():
    app = _app({"user_usd": 0.0})
    with pytest.raises(BudgetExceeded):
        app.gateway.chat(_request())
    assert b'keel_budget_rejections_total{scope="user"} 1.0' in app.telemetry.metrics.render()


@pytest.mark.parametrize(
    ("per", "label", "resets"),
    [
        ("minute", "20261130T0547", "2026-11-30T05:48:00"),
        ("hour", "20261130T05", "2026-11-30T06:00:00"),
        ("day", "20261130", "2026-12-01T00:00:00"),
        ("week", "2026W49", "2026-12-07T00:00:00"),
        ("month", "202611", "2026-12-01T00:00:00"),
        (None, "total", None),
    ],
)
def test_windows_are_utc_aligned(per, label, resets):
    got_label, end = window(per, datetime(2026, 11, 30, 5, 47, 13, tzinfo=UTC))
    assert (got_label, end.strftime("%Y-%m-%dT%H:%M:%S") if end else None) == (label, resets)


def test_sqlite_counters_are_shared_across_instances_on_one_file(tmp_path):
    """Two processes (here: two counter objects) on one file see and respect each other's spend."""
    limits = [BudgetLimit(scope="user", usd=2e-6)]
    a = Budgets(limits, SQLiteCounters(tmp_path / "b.sqlite3"))
    b = Budgets(limits, SQLiteCounters(tmp_path / "b.sqlite3"))
    r = a.reserve(model="m", max_cost_usd=1.5e-6, metadata={"user_id": "u"})
    with pytest.raises(BudgetExceeded):
        b.reserve(model="m", max_cost_usd=1e-6, metadata={"user_id": "u"})
    a.settle(r, 0.5e-6)
    b.settle(b.reserve(model="m", max_cost_usd=1e-6, metadata={"user_id": "u"}), 1e-6)
    assert b.counters.used(b.checks({"user_id": "u"}, datetime.now(UTC))[0].key) == (int(1.5e-6 * NANO), 0)


def test_an_unreachable_redis_refuses_the_call_with_a_typed_error():
    from keel.errors import BudgetStoreUnavailable, ConfigError

    app = _app({"backend": "redis", "redis_url": "redis://127.0.0.1:1/0", "user_usd": 1.0})
    with pytest.raises(BudgetStoreUnavailable, match="budget store at redis://127.0.0.1:1/0 cannot be reached") as info:
        app.gateway.chat(_request())
    assert "start Redis" in info.value.hint
    assert (info.value.http_status, info.value.code) == (503, "budget_store_unavailable")  # down for now
    assert app.providers["m"].requests == []  # fail closed: the model was never called
    with pytest.raises(ConfigError, match="not a Redis URL"):
        _ = _app({"backend": "redis", "redis_url": "http://nope", "user_usd": 1.0}).budget


@pytest.mark.scale
def test_the_redis_backend_from_settings():
    user = f"u-{uuid.uuid4().hex[:8]}"
    app = _app({"backend": "redis", "limits": [{"scope": "user", "usd": 2 * _call_cost(), "per": "minute"}]})
    assert isinstance(app.budget.counters, RedisCounters)
    app.gateway.chat(_request(user))
    app.gateway.chat(_request(user))
    with pytest.raises(BudgetExceeded, match=f"user:{user} per minute"):
        app.gateway.chat(_request(user))
    for key in app.budget.counters.client.scan_iter(f"keel:budget:user:{user}:*"):
        app.budget.counters.client.delete(key)


def test_cli_shows_what_is_left(tmp_path):
    import json

    from typer.testing import CliRunner

    from keel.cli import app as cli

    (tmp_path / "keel.yaml").write_text(
        "budgets:\n  limits:\n    - {scope: user, usd: 2.5, per: day}\n    - {scope: global, usd: 100}\n"
    )
    runner = CliRunner()
    rows = json.loads(runner.invoke(cli, ["budgets", "--user", "ann", "--json"]).stdout)
    assert [(r["budget"], r["limit_usd"], r["spent_usd"], r["left_usd"]) for r in rows] == [
        ("user:ann per day", 2.5, 0.0, 2.5),
        ("global:all", 100.0, 0.0, 100.0),
    ]
    assert "user:ann per day" in runner.invoke(cli, ["budgets", "--user", "ann"]).stdout
    (tmp_path / "keel.yaml").write_text("budgets: {}\n")
    assert "no budgets configured" in runner.invoke(cli, ["budgets"]).stdout


def _dead_caller_scenario(counters, user: str) -> dict:
    """A call reserves and its process dies (no settle); the lease runs out; budget comes back."""
    from datetime import timedelta

    now = [datetime(2026, 11, 30, 6, 0, tzinfo=UTC)]
    budgets = Budgets([BudgetLimit(scope="user", usd=3e-6)], counters, clock=lambda: now[0], lease_s=60)
    meta = {"user_id": user}
    orphan = budgets.reserve(model="m", max_cost_usd=2e-6, metadata=meta)
    with pytest.raises(BudgetExceeded):
        budgets.reserve(model="m", max_cost_usd=2e-6, metadata=meta)
    now[0] += timedelta(seconds=61)
    fresh = budgets.reserve(model="m", max_cost_usd=2e-6, metadata=meta)  # the orphan's lease was released
    budgets.settle(orphan, 1e-6)  # a late settle charges its cost but does not release twice
    budgets.settle(fresh, 2e-6)
    return budgets.usage(meta)[0]


def test_a_reservation_whose_caller_died_is_released_after_its_lease_sqlite(tmp_path):
    usage = _dead_caller_scenario(SQLiteCounters(tmp_path / "b.sqlite3"), "u")
    assert (usage["spent_usd"], usage["reserved_usd"]) == (pytest.approx(3e-6), 0.0)


@pytest.mark.scale
def test_a_reservation_whose_caller_died_is_released_after_its_lease_redis():
    counters = RedisCounters("redis://127.0.0.1:6379/0", prefix=f"test:{uuid.uuid4().hex}:")
    try:
        usage = _dead_caller_scenario(counters, "u")
        assert (usage["spent_usd"], usage["reserved_usd"]) == (pytest.approx(3e-6), 0.0)
    finally:
        for key in counters.client.scan_iter(counters.prefix + "*"):
            counters.client.delete(key)


def test_a_model_with_no_known_price_is_refused_by_a_budget_that_applies_not_trusted():
    """pricing.py's promise: an unpriced remote model (a self-hosted one, say) costs 0 on the books, so
    a budget cannot bound it; it is refused with what to set, unless no budget applies to the call."""
    from keel.errors import ConfigError

    def app(**model: object) -> App:
        return App(models={"m": {"provider": "openai", "model": "my-own-llama", **model}}, roles={"chat": ["m"]},
                   providers={"m": FakeProvider(["twelve"], repeat_last=True, name="fake:m")},
                   gateway={"cache": {"enabled": False}}, budgets={"user_usd": 1.0})

    unpriced = app()
    with pytest.raises(ConfigError, match="'m' has no known price") as info:
        unpriced.gateway.chat(_request())
    assert "input_price_per_mtok" in info.value.hint and unpriced.providers["m"].requests == []
    assert unpriced.gateway.chat(_request(user="")).text == "twelve"  # no user: the user budget does not apply
    priced_free = app(input_price_per_mtok=0, output_price_per_mtok=0)  # "I run it myself": opted in
    assert priced_free.gateway.chat(_request()).text == "twelve"
