"""Alerts: a breach notifies the webhook and the log once, exposes a metric, and resolves once."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from keel.app import App
from keel.config import AlertRule
from keel.errors import ModelUnavailable
from keel.models import ChatRequest, FakeProvider, Message
from keel.models.gateway import CallRecord
from keel.telemetry.alerts import AlertManager
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


def _record(cost: float = 0.0, ok: bool = True) -> CallRecord:
    return CallRecord("m", ok, 1, 1.0, cost_usd=cost, error=None if ok else "model_unavailable")


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
