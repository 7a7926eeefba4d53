"""Alert rules shared by API replicas (``telemetry.alerts_backend: redis``): the windows sum every
replica's calls, and one breach is one "firing" and one "resolved" notice across all of them.

Two (or more) AlertManagers on one real Redis stand for the replicas (``scale`` marker); a shared
injectable clock moves the windows; the webhook receiver is the alert tests' local one.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel.app import App
from keel.config import AlertRule, load_settings
from keel.errors import ConfigError
from keel.models import ChatRequest, FakeProvider, Message
from keel.telemetry.alerts import AlertManager, build_alerts
from keel.telemetry.alerts_redis import BUCKETS, RedisAlertStore, SharedAlertManager
from keel.telemetry.metrics import Metrics

from .test_telemetry_alerts import _record, closing, wait_for, webhook  # noqa: F401  (fixtures)

REDIS = "redis://127.0.0.1:6379/13"  # the tests' own database; each test's keys under its own prefix
UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SPEND = AlertRule(name="spend", metric="cost_usd", threshold=10, window_s=3600)


@pytest.fixture
def prefix() -> Iterator[str]:
    import redis

    prefix = f"keel-test:{uuid.uuid4().hex[:10]}:alerts:"
    yield prefix
    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


class Clock:
    """One clock for every replica, moved by the test."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def replicas(
    rules: list[AlertRule],
    prefix: str,
    clock: Callable[[], float],
    url: str | None = None,
    n: int = 2,
    recheck_s: float = 60.0,  # the tests that want re-checks ask for them
) -> list[SharedAlertManager]:
    """``n`` replicas' alert managers, each with its own Redis client and metrics."""
    return [
        SharedAlertManager(
            rules,
            RedisAlertStore(REDIS, prefix=prefix),
            webhook_url=url,
            metrics=Metrics(),
            clock=clock,
            recheck_s=recheck_s,
        )
        for _ in range(n)
    ]


def wait_all(managers: list[Any]) -> None:
    for manager in managers:
        manager.wait()


def series(managers: list[Any], line: str) -> list[str]:
    """The value of one exposition line in each replica's metrics."""
    out = []
    for manager in managers:
        found = [s for s in manager.metrics.render().decode().splitlines() if s.startswith(line + " ")]
        out.append(found[0].split()[-1] if found else "absent")
    return out


# -- two replicas, one breach -----------------------------------------------------------------------


@pytest.mark.scale
def test_replicas_each_below_the_threshold_fire_once_together_and_resolve_once(webhook, prefix):  # noqa: F811
    url, received = webhook
    clock = Clock()
    # each replica alone: 7 calls of $0.75 = $5.25 in the hour, under $10 (in memory, nothing fires)
    alone = [AlertManager([SPEND], webhook_url=url, clock=clock) for _ in range(2)]
    for i in range(14):
        clock.now += 1
        alone[i % 2].observe(_record(0.75))
    wait_all(alone)
    assert received == [] and [a.firing for a in alone] == [{"spend": False}] * 2

    # shared: together they spend $10.50; the 14th call, on replica b, crosses $10
    a, b = shared = replicas([SPEND], prefix, clock, url)
    for i in range(14):
        clock.now += 1
        shared[i % 2].observe(_record(0.75))
    wait_all(shared)
    assert [(r["alert"], r["state"], r["value"]) for r in received] == [("spend", "firing", 10.5)]
    assert "spend firing: cost_usd=10.5 over 3600s" in received[0]["text"]
    assert (a.firing, b.firing) == ({"spend": False}, {"spend": True})  # a learns it with its next call

    for _ in range(5):  # more spend while firing: no more notices from either
        clock.now += 1
        a.observe(_record(0.75))
        b.observe(_record(0.75))
    wait_all(shared)
    assert len(received) == 1
    assert a.firing == b.firing == {"spend": True}
    assert series(shared, 'keel_alerts_fired_total{rule="spend"}') == ["absent", "1.0"]  # b notified
    assert series(shared, 'keel_alerts_firing{rule="spend"}') == ["1.0", "1.0"]  # a follows the shared state

    clock.now += 3600 + 3600 / BUCKETS + 1  # the window has cleared
    a.observe(_record(0.01))
    b.observe(_record(0.01))
    wait_all(shared)
    assert [r["state"] for r in received] == ["firing", "resolved"]
    assert received[1]["value"] == pytest.approx(0.01)  # a's call, alone in the new window
    assert a.firing == b.firing == {"spend": False}
    assert series(shared, 'keel_alerts_firing{rule="spend"}') == ["0.0", "0.0"]
    assert series(shared, 'keel_alerts_fired_total{rule="spend"}') == ["absent", "1.0"]  # "resolved" is no firing


@pytest.mark.scale
def test_error_rate_counts_min_calls_across_replicas(webhook, prefix):  # noqa: F811
    url, received = webhook
    clock = Clock()
    rule = AlertRule(name="errors", metric="error_rate", threshold=0.05, window_s=300, min_calls=20)
    shared = replicas([rule], prefix, clock, url)
    # 10 calls on each replica, 1 failed on each: 10% errors, but each has fewer than min_calls alone
    for i in range(19):
        clock.now += 1
        shared[i % 2].observe(_record(ok=i >= 2))
    wait_all(shared)
    assert received == [] and [m.firing for m in shared] == [{"errors": False}] * 2
    clock.now += 1
    shared[1].observe(_record())  # the 20th call across both: 2 / 20 = 10% > 5%
    wait_all(shared)
    assert [(r["state"], r["value"]) for r in received] == [("firing", 0.1)]

    # enough good calls dilute it: at 2 / 40 it is no longer above 5%, and resolves once
    for i in range(25):
        clock.now += 1
        shared[i % 2].observe(_record())
    wait_all(shared)
    assert [(r["state"], r["value"]) for r in received] == [("firing", 0.1), ("resolved", 0.05)]


@pytest.mark.scale
def test_concurrent_calls_on_both_replicas_still_notify_once_each_way(webhook, prefix):  # noqa: F811
    url, received = webhook
    clock = Clock()
    rule = AlertRule(name="calls", metric="calls", threshold=100, window_s=60)
    shared = replicas([rule], prefix, clock, url)

    def burst(calls_per_thread: int, threads: int = 8) -> None:
        start = threading.Barrier(threads)

        def run(manager: SharedAlertManager) -> None:
            start.wait()
            for _ in range(calls_per_thread):
                manager.observe(_record())

        workers = [threading.Thread(target=run, args=(shared[i % 2],)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        wait_all(shared)

    burst(40)  # 320 calls cross 100 once, with every thread racing past it
    assert [r["state"] for r in received] == ["firing"]
    assert 100 < received[0]["value"] < 320  # what the winning call saw: past 100, maybe by a few racers
    assert [m.firing for m in shared] == [{"calls": True}] * 2

    clock.now += 60 + 60 / BUCKETS + 1
    burst(10)  # 80 calls in the new window: all of them see it below 100, one resolves it
    assert [r["state"] for r in received] == ["firing", "resolved"]
    fired = [float(v) for v in series(shared, 'keel_alerts_fired_total{rule="calls"}') if v != "absent"]
    assert sum(fired) == 1.0


@pytest.mark.scale
def test_windows_drop_old_buckets_and_expire_in_redis(prefix):
    import redis

    def sums(key: str) -> dict[str, int]:
        out = {"n": 0, "e": 0, "c": 0}
        for field, value in client.hgetall(key).items():
            out[field.decode().split(":")[1]] += int(value)
        return out

    clock = Clock()
    rules = [SPEND, AlertRule(name="e", metric="errors", threshold=5, window_s=60)]
    [manager] = replicas(rules, prefix, clock, n=1)
    for _ in range(3):
        manager.observe(_record(0.5, ok=False))
        clock.now += 30
    client = redis.Redis.from_url(REDIS)
    assert sums(prefix + "window:3600.0") == {"n": 3, "e": 3, "c": 1_500_000_000}  # cost in 1e-9 USD
    assert sums(prefix + "window:60.0") == {"n": 2, "e": 2, "c": 1_000_000_000}  # the first call's bucket is gone
    assert 0 < client.pttl(prefix + "window:60.0") <= 61_000  # a quiet window expires
    assert client.get(prefix + "firing:spend") is None  # a rule that never fired has no flag
    client.close()


# -- re-checks: a breach resolves when the calls stop -------------------------------------------------


@pytest.mark.scale
def test_with_no_calls_two_replicas_send_one_resolved_once_the_window_passes(webhook, prefix, closing):  # noqa: F811
    import redis

    url, received = webhook
    clock = Clock()
    a, b = shared = replicas([SPEND], prefix, clock, url, recheck_s=0.01)
    closing.extend(shared)
    client = redis.Redis.from_url(REDIS)
    window = prefix + "window:3600.0"
    for i in range(14):  # $10.50 together, the 14th call (on b) crosses $10
        clock.now += 1
        shared[i % 2].observe(_record(0.75))
    ttl = client.pttl(window)
    wait_for(lambda: a.firing == {"spend": True})  # a follows the shared flag on a re-check, without a call
    time.sleep(0.1)  # re-checks inside the window change nothing
    wait_all(shared)
    assert [(r["state"], r["value"]) for r in received] == [("firing", 10.5)]
    assert 0 < client.pttl(window) < ttl  # re-checks read the window, never extend its life

    clock.now += 3600 + 3600 / BUCKETS + 1  # no call since: the window has cleared
    wait_for(lambda: len(received) == 2 and a.firing == b.firing == {"spend": False})
    time.sleep(0.1)  # both keep re-checking: nothing more is sent
    wait_all(shared)
    assert [(r["alert"], r["state"], r["value"]) for r in received] == [
        ("spend", "firing", 10.5),
        ("spend", "resolved", 0.0),
    ]
    assert series(shared, 'keel_alerts_firing{rule="spend"}') == ["0.0", "0.0"]
    assert client.get(prefix + "firing:spend") == b"0"
    assert not client.exists(window)  # the re-checks dropped its old buckets
    client.close()


@pytest.mark.scale
def test_a_redis_outage_during_re_checks_is_logged_once_and_they_resume(
    webhook, prefix, closing, monkeypatch, caplog  # noqa: F811
):
    import redis

    url, received = webhook
    clock = Clock()
    rule = AlertRule(name="calls", metric="calls", threshold=3, window_s=60)
    [manager] = replicas([rule], prefix, clock, url, n=1, recheck_s=0.01)
    closing.append(manager)
    manager.store.outage.retry_s = 0  # try Redis on every re-check
    for _ in range(4):
        manager.observe(_record())
    wait_all([manager])
    assert [r["state"] for r in received] == ["firing"]

    real, attempts = manager.store._observe, []

    def down(**kwargs: Any) -> Any:
        attempts.append(1)
        raise redis.ConnectionError("connection refused")

    caplog.set_level(logging.INFO, logger="keel.alerts")
    monkeypatch.setattr(manager.store, "_observe", down)
    clock.now += 60 + 60 / BUCKETS + 1  # the window clears while Redis is down
    wait_for(lambda: len(attempts) >= 5)  # several re-checks met the outage
    thread = manager._rechecks
    assert thread is not None and thread.is_alive()
    assert manager.firing == {"calls": True} and [r["state"] for r in received] == ["firing"]

    monkeypatch.setattr(manager.store, "_observe", real)
    wait_for(lambda: len(received) == 2)
    wait_all([manager])
    assert manager.firing == {"calls": False}
    assert [r["state"] for r in received] == ["firing", "resolved"]
    messages = [r.getMessage() for r in caplog.records if "alert store" in r.getMessage()]
    assert [m.split(",")[0] for m in messages] == [
        f"alert store at {REDIS} unavailable",
        f"alert store at {REDIS} is back",
    ]
    assert not [r for r in caplog.records if r.exc_info]  # the thread never failed
    assert "keel_alert_checks_skipped_total 0.0" in manager.metrics.render().decode()  # re-checks are no calls


@pytest.mark.scale
def test_re_checks_of_a_quiet_store_write_nothing(prefix, closing):  # noqa: F811
    import redis

    [manager] = replicas([SPEND], prefix, Clock(), n=1, recheck_s=0.01)
    closing.append(manager)
    checks: list[Any] = []
    real = manager.store.sums

    def counted(*args: Any) -> Any:
        checks.append(args)
        return real(*args)

    manager.store.sums = counted
    wait_for(lambda: len(checks) >= 3)
    client = redis.Redis.from_url(REDIS)
    assert list(client.scan_iter(match=prefix + "*")) == []
    client.close()


# -- through the App: settings, the gateway, an unreachable Redis ---------------------------------------


def _app(telemetry: dict[str, Any], redis_url: str = REDIS, **extra: Any) -> App:
    # $0.75 a call (5 input tokens at $150,000 per million)
    return App(
        models={"m": {"provider": "fake", "input_price_per_mtok": 150_000, "output_price_per_mtok": 0}},
        roles={"chat": ["m"]},
        providers={"m": FakeProvider(["ok"], repeat_last=True)},
        gateway={"cache": {"enabled": False}},
        telemetry=telemetry,
        budgets={"redis_url": redis_url},
        **extra,
    )


def _ask(app: App) -> float:
    return app.gateway.chat(ChatRequest(messages=[Message(role="user", content="hi")])).cost_usd


def test_the_backend_setting_chooses_the_alert_manager():
    rules = [{"name": "spend", "metric": "cost_usd", "threshold": 10}]
    default = load_settings(telemetry={"alerts": rules})
    assert default.telemetry.alerts_backend == "memory" and type(build_alerts(default)) is AlertManager
    shared = build_alerts(
        load_settings(telemetry={"alerts": rules, "alerts_backend": "redis"}, budgets={"redis_url": REDIS})
    )
    assert isinstance(shared, SharedAlertManager) and shared.store.url == REDIS  # budgets' Redis, no new URL
    assert type(build_alerts(load_settings(telemetry={"alerts_backend": "redis"}))) is AlertManager  # no rules
    with pytest.raises(ConfigError, match="budgets.redis_url 'http://x' .* is not a Redis URL"):
        build_alerts(
            load_settings(telemetry={"alerts": rules, "alerts_backend": "redis"}, budgets={"redis_url": "http://x"})
        )
    with pytest.raises(ConfigError, match="telemetry.alerts_backend"):
        load_settings(telemetry={"alerts_backend": "postgres"})


@pytest.mark.scale
def test_two_apps_on_one_redis_send_one_webhook(webhook, prefix):  # noqa: F811
    url, received = webhook
    telemetry = {
        "webhook_url": url,
        "alerts_backend": "redis",
        "alerts": [{"name": "spend", "metric": "cost_usd", "threshold": 10, "window_s": 3600}],
    }
    apps = [_app(telemetry), _app(telemetry)]
    for app in apps:
        app.telemetry.alerts.store.prefix = prefix  # this test's keys (before any call)
    costs = [_ask(apps[i % 2]) for i in range(20)]  # $7.50 each, $15 together
    for app in apps:
        app.telemetry.flush()
    assert costs[0] == pytest.approx(0.75)
    assert [(r["alert"], r["state"], r["value"]) for r in received] == [("spend", "firing", 10.5)]
    rendered = [app.telemetry.metrics.render().decode() for app in apps]
    assert all('keel_alerts_firing{rule="spend"} 1.0' in text for text in rendered)


def test_an_unreachable_redis_never_fails_a_call_and_is_logged_once(caplog):
    telemetry = {"alerts_backend": "redis", "alerts": [{"name": "errs", "metric": "errors", "threshold": 0}]}
    app = _app(telemetry, redis_url=UNREACHABLE)
    caplog.set_level(logging.INFO, logger="keel.alerts")
    started = time.perf_counter()
    costs = [_ask(app) for _ in range(20)]
    elapsed = time.perf_counter() - started
    assert costs == [pytest.approx(0.75)] * 20 and elapsed < 5
    outage = [r for r in caplog.records if r.name == "keel.alerts"]
    assert [(r.levelname, r.getMessage().split(",")[0]) for r in outage] == [
        ("ERROR", f"alert store at {UNREACHABLE} unavailable")
    ]
    assert "keel_alert_checks_skipped_total 20.0" in app.telemetry.metrics.render().decode()
    assert app.telemetry.alerts.firing == {"errs": False}


def test_a_hung_redis_slows_one_call_per_retry_interval_not_every_call(hung_redis, caplog):
    store = RedisAlertStore(hung_redis, timeout_s=0.2, retry_s=60)
    manager = SharedAlertManager([SPEND], store, metrics=Metrics())
    took = []
    for _ in range(10):
        started = time.perf_counter()
        manager.observe(_record(1.0))
        took.append(time.perf_counter() - started)
    assert 0.2 <= took[0] < 2 and max(took[1:]) < 0.05  # the first call waits out the timeout; the rest skip
    assert len([r for r in caplog.records if "alert store" in r.getMessage()]) == 1
    assert "keel_alert_checks_skipped_total 10.0" in manager.metrics.render().decode()
    store.client.close()


@pytest.mark.scale
def test_an_outage_is_logged_once_and_its_end_once_then_checks_resume(prefix, monkeypatch, caplog):
    import redis

    clock = Clock()
    [manager] = replicas([AlertRule(name="calls", metric="calls", threshold=3, window_s=60)], prefix, clock, n=1)
    manager.store.outage.retry_s = 0  # try Redis on every call, so the outage's end is seen at once
    real = manager.store._observe
    down = [True]

    def flaky(**kwargs: Any) -> Any:
        if down[0]:
            raise redis.ConnectionError("connection refused")
        return real(**kwargs)

    monkeypatch.setattr(manager.store, "_observe", flaky)
    caplog.set_level(logging.INFO, logger="keel.alerts")
    for _ in range(5):
        manager.observe(_record())
    down[0] = False
    for _ in range(4):
        manager.observe(_record())
    messages = [r.getMessage() for r in caplog.records if "alert store" in r.getMessage()]
    assert [m.split(",")[0] for m in messages] == [
        f"alert store at {REDIS} unavailable",
        f"alert store at {REDIS} is back",
    ]
    assert manager.firing == {"calls": True}  # the 4 calls since it is back count: 4 > 3
    assert "keel_alert_checks_skipped_total 5.0" in manager.metrics.render().decode()


# -- deploy: replicas share their alerts ------------------------------------------------------------


def test_deploy_sets_the_shared_alert_backend_for_the_replicas(monkeypatch):
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    helm = yaml.safe_load((DEPLOY / "helm" / "keel" / "values.yaml").read_text())
    for env in (compose["x-keel-env"], helm["env"]):
        assert env["KEEL_TELEMETRY__ALERTS_BACKEND"] == "redis"
        assert env["KEEL_BUDGETS__REDIS_URL"].startswith("redis://")  # where the shared windows live
        monkeypatch.setenv("KEEL_TELEMETRY__ALERTS_BACKEND", env["KEEL_TELEMETRY__ALERTS_BACKEND"])
        assert load_settings().telemetry.alerts_backend == "redis"
