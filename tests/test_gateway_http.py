"""The gateway against a real local HTTP server that fails on a set share of calls."""

from __future__ import annotations

import random

import pytest

from keel.config import load_settings
from keel.errors import CircuitOpen, ModelTimeout, ModelUnavailable
from keel.models import ChatRequest, Gateway, Message
from keel.models.gateway import CallRecord
from keel.models.registry import build_providers
from tests.http_fixtures import flaky_server


def _gateway(urls: dict[str, str], chain: list[str], **gateway) -> Gateway:
    models = {
        name: {"provider": "openai", "model": "test-model", "base_url": url,
               "input_price_per_mtok": 1.0, "output_price_per_mtok": 4.0}
        for name, url in urls.items()
    }
    settings = load_settings(models=models, roles={"chat": chain},
                             gateway={"timeout_s": 0.5, "backoff_base_s": 0.01, "backoff_max_s": 0.05,
                                      "cache": {"enabled": False}, **gateway})
    return Gateway.from_settings(settings, build_providers(settings), rng=random.Random(7))


def _ask(gw: Gateway, text: str):
    return gw.chat(ChatRequest(messages=[Message(role="user", content=text)]))


PATTERN = ["429", "500", "timeout", "garbled", "ok"]


def test_answers_arrive_through_every_kind_of_failure_and_each_is_charged_once():
    with flaky_server(lambda n: PATTERN[n % len(PATTERN)], stall_s=1.5) as server:
        gw = _gateway({"flaky": server.url}, ["flaky"], max_retries=5,
                      breaker={"failure_threshold": 10, "reset_timeout_s": 30})
        records: list[CallRecord] = []
        gw.observers.append(records.append)
        answers = [_ask(gw, f"question {i}") for i in range(4)]

    assert [a.text for a in answers] == [f"echo: question {i}" for i in range(4)]
    assert [a.attempts for a in answers] == [5, 5, 5, 5]
    errors = [r.error for r in records if not r.ok]
    assert sorted(set(errors)) == ["bad_model_response", "model_timeout", "model_unavailable", "rate_limited"]
    # charged exactly once per answer: 11 input and 7 output tokens at $1 / $4 per Mtok
    charged = [r for r in records if r.ok]
    assert len(charged) == 4 == server.successes
    per_call = (11 * 1.0 + 7 * 4.0) / 1e6
    assert all(a.cost_usd == pytest.approx(per_call) for a in answers)
    assert sum(r.cost_usd for r in records) == pytest.approx(4 * per_call)


def test_falls_back_to_the_next_model_when_one_is_down():
    with flaky_server(lambda n: "500") as down, flaky_server(lambda n: "ok") as up:
        gw = _gateway({"primary": down.url, "backup": up.url}, ["primary", "backup"], max_retries=2)
        answer = _ask(gw, "hello")
    assert answer.model == "backup" and answer.text == "echo: hello"
    assert len(down.calls) == 3  # first try + 2 retries, then fallback


def test_fallback_when_the_endpoint_is_unreachable():
    with flaky_server(lambda n: "ok") as up:
        gw = _gateway({"gone": "http://127.0.0.1:9/v1", "backup": up.url}, ["gone", "backup"], max_retries=1)
        assert _ask(gw, "hi").model == "backup"


def test_timeout_is_typed():
    with flaky_server(lambda n: "timeout", stall_s=1.0) as server:
        gw = _gateway({"slow": server.url}, ["slow"], max_retries=0)
        with pytest.raises(ModelTimeout):
            _ask(gw, "hi")


def test_breaker_opens_on_a_failing_server_and_closes_when_it_recovers():
    state = {"down": True}
    with flaky_server(lambda n: "503" if state["down"] else "ok") as server:
        gw = _gateway({"only": server.url}, ["only"], max_retries=0,
                      breaker={"failure_threshold": 3, "reset_timeout_s": 0.3})
        for _ in range(3):
            with pytest.raises(ModelUnavailable):
                _ask(gw, "x")
        calls_when_opened = len(server.calls)
        with pytest.raises(CircuitOpen):
            _ask(gw, "x")
        assert len(server.calls) == calls_when_opened  # open: the server is spared
        state["down"] = False
        import time

        time.sleep(0.35)
        assert _ask(gw, "back?").text == "echo: back?"
        assert gw.handles["only"].breaker.state == "closed"
