"""Alerts: a breach notifies the webhook and the log once, exposes a metric, and resolves once."""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from keel.app import App
from keel.config import AlertRule, load_settings
from keel.errors import ConfigError, ModelUnavailable
from keel.models import ChatRequest, FakeProvider, Message
from keel.models.gateway import CallRecord
from keel.telemetry.alerts import RECHECK_S, AlertManager, build_alerts
from keel.telemetry.metrics import Metrics


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        return None


@pytest.fixture
def webhook(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    _Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/keel", _Receiver.received
    server.shutdown()
    server.server_close()


@pytest.fixture
def closing() -> Iterator[list[AlertManager]]:
    """Alert managers closed (re-check thread stopped, webhooks sent) when the test ends, passed or failed."""
    made: list[AlertManager] = []
    yield made
    for manager in made:
        manager.close()


def _record(cost: float = 0.0, ok: bool = True) -> CallRecord:
    return CallRecord("m", ok, 1, 1.0, cost_usd=cost, error=None if ok else "model_unavailable")


def wait_for(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Poll until ``condition()`` holds (a background thread's work), failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the re-check thread"
        time.sleep(0.01)


def recheck_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "keel-alert-recheck"]


def test_a_cost_rate_breach_fires_the_webhook_once_not_once_per_request(webhook, caplog):
    url, received = webhook
    # $10/hour, with calls of $0.75 (5 input tokens): the 14th call crosses it
    app = App(
        models={"m": {"provider": "fake", "input_price_per_mtok": 150_000, "output_price_per_mtok": 0}},
        roles={"chat": ["m"]},
        providers={"m": FakeProvider(["ok"], repeat_last=True)},
        gateway={"cache": {"enabled": False}},
        telemetry={
            "webhook_url": url,
            "alerts": [{"name": "spend", "metric": "cost_usd", "threshold": 10, "window_s": 3600}],
        },
    )
    request = ChatRequest(messages=[Message(role="user", content="hi")])
    caplog.set_level(logging.WARNING, logger="keel.alerts")
    costs = [app.gateway.chat(request).cost_usd for _ in range(40)]
    app.telemetry.flush()

    assert costs[0] == pytest.approx(0.75)
    assert len(received) == 1
    alert = received[0]
    assert {k: alert[k] for k in ("alert", "state", "metric", "threshold", "window_s")} == {
        "alert": "spend",
        "state": "firing",
        "metric": "cost_usd",
        "threshold": 10,
        "window_s": 3600,
    }
    assert alert["value"] == pytest.approx(10.5) and "spend firing" in alert["text"]
    assert [r.message for r in caplog.records if "spend" in r.message] == [alert["text"]]
    metrics = app.telemetry.metrics.render().decode()
    assert 'keel_alerts_firing{rule="spend"} 1.0' in metrics
    assert 'keel_alerts_fired_total{rule="spend"} 1.0' in metrics


def test_it_resolves_once_the_window_clears_and_can_fire_again(webhook):
    url, received = webhook
    now = [1000.0]
    metrics = Metrics()
    alerts = AlertManager(
        [AlertRule(name="errors", metric="error_rate", threshold=0.05, window_s=300, min_calls=20)],
        webhook_url=url,
        metrics=metrics,
        clock=lambda: now[0],
    )
    for i in range(40):
        now[0] += 1
        alerts.observe(_record(ok=i % 10 != 0))  # 10% errors
    alerts.wait()
    assert [(r["alert"], r["state"]) for r in received] == [("errors", "firing")]
    now[0] += 301
    for _ in range(30):
        now[0] += 1
        alerts.observe(_record())
    alerts.wait()
    assert [r["state"] for r in received] == ["firing", "resolved"]
    assert 'keel_alerts_firing{rule="errors"} 0.0' in metrics.render().decode()
    for _ in range(10):
        now[0] += 1
        alerts.observe(_record(ok=False))
    alerts.wait()
    assert [r["state"] for r in received] == ["firing", "resolved", "firing"]


def test_error_rate_waits_for_enough_calls():
    alerts = AlertManager([AlertRule(name="e", metric="error_rate", threshold=0.05, min_calls=20)])
    for _ in range(5):
        alerts.observe(_record(ok=False))
    assert alerts.firing == {"e": False}
    for _ in range(15):
        alerts.observe(_record())
    assert alerts.firing == {"e": True}


def test_failed_model_calls_count_as_errors_through_the_gateway():
    app = App(
        models={"m": {"provider": "fake"}},
        roles={"chat": ["m"]},
        providers={"m": FakeProvider([ModelUnavailable("down")], repeat_last=True)},
        gateway={"cache": {"enabled": False}, "max_retries": 0},
        telemetry={"alerts": [{"name": "errs", "metric": "errors", "threshold": 2, "window_s": 60}]},
    )
    for _ in range(3):
        with pytest.raises(ModelUnavailable):
            app.gateway.chat(ChatRequest(messages=[Message(role="user", content="hi")]))
    assert app.telemetry.alerts.firing == {"errs": True}


def test_an_unreachable_webhook_is_logged_not_raised(caplog):
    alerts = AlertManager(
        [AlertRule(name="c", metric="calls", threshold=0)], webhook_url="http://127.0.0.1:9/x", timeout_s=1
    )
    alerts.observe(_record())
    alerts.wait()
    assert any("webhook http://127.0.0.1:9/x failed" in r.message for r in caplog.records)


def test_a_bad_rule_is_a_config_error():
    from keel.config import load_settings
    from keel.errors import ConfigError

    with pytest.raises(ConfigError, match="telemetry.alerts.0.metric"):
        load_settings(telemetry={"alerts": [{"name": "x", "metric": "vibes", "threshold": 1}]})


# -- re-checks: a rule resolves when its calls stop ----------------------------------------------------


SPEND = AlertRule(name="spend", metric="cost_usd", threshold=10, window_s=3600)
OUTAGE = AlertRule(name="errs", metric="error_rate", threshold=0.5, window_s=60, min_calls=5)


@pytest.mark.parametrize(
    ("rule", "calls", "fired_at"),
    [
        (SPEND, [_record(0.75)] * 14, 10.5),  # a cost-rate spike, then silence
        (OUTAGE, [_record(ok=False)] * 5, 1.0),  # an outage that stopped every call
    ],
    ids=["cost-rate", "outage"],
)
def test_a_firing_rule_resolves_once_with_no_further_calls(webhook, closing, rule, calls, fired_at):
    url, received = webhook
    now = [1000.0]
    metrics = Metrics()
    alerts = AlertManager([rule], webhook_url=url, metrics=metrics, clock=lambda: now[0], recheck_s=0.02)
    closing.append(alerts)
    for record in calls:
        now[0] += 1
        alerts.observe(record)
    alerts.wait()
    assert [(r["state"], r["value"]) for r in received] == [("firing", fired_at)]
    time.sleep(0.1)  # re-checks inside the window change nothing
    assert len(received) == 1 and alerts.firing == {rule.name: True}

    now[0] += rule.window_s + 1  # no call since: the window has cleared
    wait_for(lambda: len(received) == 2)
    time.sleep(0.1)  # later re-checks send nothing more
    alerts.wait()
    assert [(r["alert"], r["state"], r["value"]) for r in received] == [
        (rule.name, "firing", fired_at),
        (rule.name, "resolved", 0.0),
    ]
    assert alerts.firing == {rule.name: False}
    rendered = metrics.render().decode()
    assert f'keel_alerts_firing{{rule="{rule.name}"}} 0.0' in rendered
    assert f'keel_alerts_fired_total{{rule="{rule.name}"}} 1.0' in rendered

    thread = alerts._rechecks
    assert thread is not None and thread.is_alive()
    alerts.close()
    assert not thread.is_alive()


def test_a_resolve_is_sent_once_when_calls_and_re_checks_race(webhook, closing):
    url, received = webhook
    now = [1000.0]
    alerts = AlertManager([SPEND], webhook_url=url, clock=lambda: now[0], recheck_s=0.001)
    closing.append(alerts)
    alerts.observe(_record(11.0))
    alerts.wait()  # each notice is posted by a thread of its own: two close together may arrive in either order
    now[0] += 3601

    def calls() -> None:
        for _ in range(200):
            alerts.observe(_record(0.01))

    racers = [threading.Thread(target=calls) for _ in range(4)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    time.sleep(0.05)
    alerts.wait()
    assert [r["state"] for r in received] == ["firing", "resolved"]


def test_no_re_check_thread_without_rules():
    before = recheck_threads()
    for alerts in (AlertManager([]), build_alerts(load_settings()), build_alerts(load_settings(
        telemetry={"alerts_backend": "redis"}))):
        assert alerts._rechecks is None
        alerts.recheck()  # nothing to do
        alerts.close()
    assert set(recheck_threads()) <= set(before)  # none started (earlier tests' may have ended meanwhile)


def test_the_re_check_interval_is_a_setting():
    rule = {"name": "spend", "metric": "cost_usd", "threshold": 10}
    assert load_settings().telemetry.alerts_recheck_s == RECHECK_S == 5.0
    alerts = build_alerts(load_settings(telemetry={"alerts": [rule], "alerts_recheck_s": 0.5}))
    assert alerts.recheck_s == 0.5
    alerts.close()
    with pytest.raises(ConfigError, match="telemetry.alerts_recheck_s"):
        load_settings(telemetry={"alerts_recheck_s": 0})


def test_the_re_check_thread_ends_with_its_manager():
    alerts = AlertManager([SPEND], recheck_s=0.01)
    thread = alerts._rechecks
    assert thread is not None and thread.daemon and thread.is_alive()  # daemon: never keeps a process alive
    del alerts
    gc.collect()
    thread.join(2)
    assert not thread.is_alive()


def test_a_failing_re_check_is_logged_once_and_the_thread_carries_on(closing, caplog, monkeypatch):
    now = [1000.0]
    alerts = AlertManager([SPEND], clock=lambda: now[0], recheck_s=0.01)
    closing.append(alerts)
    alerts.observe(_record(11.0))
    failures = []

    def broken() -> None:
        failures.append(1)
        raise RuntimeError("boom")

    monkeypatch.setattr(alerts, "recheck", broken)
    wait_for(lambda: len(failures) >= 5)
    monkeypatch.delattr(alerts, "recheck")  # the real one again
    logged = [r for r in caplog.records if "re-checking the firing rules failed" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    now[0] += 3601
    wait_for(lambda: alerts.firing == {"spend": False})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_re_checks_on_a_thread_of_its_own(closing):
    now = [1000.0]
    alerts = AlertManager([SPEND], clock=lambda: now[0], recheck_s=0.01)
    closing.append(alerts)
    alerts.observe(_record(11.0))
    pid = os.fork()
    if pid == 0:  # the child: its own clock moves past the window; only its own thread can resolve
        code = 1
        try:
            now[0] += 3601
            deadline = time.monotonic() + 5
            while alerts.firing["spend"] and time.monotonic() < deadline:
                time.sleep(0.01)
            code = 0 if alerts.firing == {"spend": False} else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert alerts.firing == {"spend": True}  # the parent's clock did not move
