"""The gateway's policies with scripted providers: retries, fallback, breaker, cache, cost."""

from __future__ import annotations

import random

import pytest

from keel.config import GatewaySettings, ModelConfig
from keel.errors import (
    AllModelsFailed,
    BudgetExceeded,
    CircuitOpen,
    ModelRefused,
    ModelUnavailable,
    RateLimited,
)
from keel.models import ChatRequest, FakeProvider, Gateway, Message
from keel.models.breaker import CircuitBreaker
from keel.models.cache import MemoryCache
from keel.models.gateway import CallRecord, ModelHandle
from keel.models.pricing import Pricer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _request(text: str = "hi", **kw) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], **kw)


def _gateway(providers: dict[str, FakeProvider], chain: list[str], *, clock: Clock | None = None,
             sleeps: list[float] | None = None, cache: MemoryCache | None = None, budget=None,
             **settings) -> Gateway:
    gs = GatewaySettings(**{"backoff_base_s": 0.5, "backoff_max_s": 8, **settings})
    clock = clock or Clock()
    handles = {
        name: ModelHandle(
            name=name, provider=p,
            pricer=Pricer(ModelConfig(provider="openai", model="x", input_price_per_mtok=1.0,
                                      output_price_per_mtok=2.0)),
            breaker=CircuitBreaker(gs.breaker.failure_threshold, gs.breaker.reset_timeout_s, clock=clock),
        )
        for name, p in providers.items()
    }
    record = sleeps if sleeps is not None else []
    gw = Gateway(gs, handles, {"chat": chain}, cache=cache, budget=budget, sleep=record.append,
                 rng=random.Random(0))
    return gw


def test_retries_transient_errors_then_answers_and_charges_once():
    p = FakeProvider([ModelUnavailable("500"), ModelUnavailable("500"), "hello there"], name="a")
    sleeps: list[float] = []
    gw = _gateway({"a": p}, ["a"], sleeps=sleeps)
    records: list[CallRecord] = []
    gw.observers.append(records.append)

    response = gw.chat(_request())

    assert (response.text, response.attempts, response.model) == ("hello there", 3, "a")
    assert len(sleeps) == 2 and all(0 <= s <= 8 for s in sleeps)
    # one successful call is priced; the two failures carry no usage and no cost
    assert [r.ok for r in records] == [False, False, True]
    assert sum(r.cost_usd for r in records) == response.cost_usd > 0
    expected = (response.usage.input_tokens * 1.0 + response.usage.output_tokens * 2.0) / 1e6
    assert response.cost_usd == pytest.approx(expected)


def test_backoff_grows_exponentially_and_is_capped():
    p = FakeProvider([ModelUnavailable("x")] * 6 + ["ok"], name="a")
    sleeps: list[float] = []
    gw = _gateway({"a": p}, ["a"], sleeps=sleeps, max_retries=6, backoff_base_s=1.0, backoff_max_s=4.0,
                  breaker={"failure_threshold": 10, "reset_timeout_s": 30})
    gw._rng = random.Random(1)
    gw.chat(_request())
    assert len(sleeps) == 6
    caps = [1, 2, 4, 4, 4, 4]
    assert all(0 <= s <= cap for s, cap in zip(sleeps, caps, strict=True))


def test_retry_after_is_honoured():
    p = FakeProvider([RateLimited("429", retry_after=3.5), "ok"], name="a")
    sleeps: list[float] = []
    _gateway({"a": p}, ["a"], sleeps=sleeps).chat(_request())
    assert sleeps == [3.5] or sleeps[0] >= 3.5


def test_retry_after_longer_than_we_wait_falls_back_at_once():
    slow = FakeProvider([RateLimited("429", retry_after=600)], name="a")
    backup = FakeProvider(["from backup"], name="b")
    sleeps: list[float] = []
    response = _gateway({"a": slow, "b": backup}, ["a", "b"], sleeps=sleeps).chat(_request())
    assert response.text == "from backup" and response.model == "b"
    assert sleeps == []


def test_non_retryable_error_goes_straight_to_fallback():
    bad = FakeProvider([ModelRefused("400 bad request")], name="a")
    good = FakeProvider(["fine"], name="b")
    sleeps: list[float] = []
    response = _gateway({"a": bad, "b": good}, ["a", "b"], sleeps=sleeps).chat(_request())
    assert response.model == "b" and sleeps == [] and len(bad.requests) == 1


def test_every_model_failing_raises_all_models_failed_naming_each():
    a = FakeProvider([ModelRefused("no")], name="a")
    b = FakeProvider([ModelRefused("nope")], name="b")
    with pytest.raises(AllModelsFailed) as info:
        _gateway({"a": a, "b": b}, ["a", "b"]).chat(_request())
    assert [e.model for e in info.value.errors] == ["a", "b"]


def test_single_model_breaker_opens_then_half_opens_then_closes():
    clock = Clock()
    p = FakeProvider([ModelUnavailable("down")] * 3 + ["back"], name="a")
    gw = _gateway({"a": p}, ["a"], clock=clock, max_retries=0,
                  breaker={"failure_threshold": 3, "reset_timeout_s": 30})
    for _ in range(3):
        with pytest.raises(ModelUnavailable):
            gw.chat(_request())
    # open: the provider is not called at all
    with pytest.raises(CircuitOpen) as info:
        gw.chat(_request())
    assert info.value.retry_in == pytest.approx(30)
    assert len(p.requests) == 3
    clock.now += 31  # half-open: one trial goes through and closes the breaker
    assert gw.chat(_request()).text == "back"
    assert gw.handles["a"].breaker.state == "closed"


def test_half_open_failure_reopens():
    clock = Clock()
    p = FakeProvider([ModelUnavailable("down")] * 3, name="a")
    gw = _gateway({"a": p}, ["a"], clock=clock, max_retries=0,
                  breaker={"failure_threshold": 2, "reset_timeout_s": 10})
    for _ in range(2):
        with pytest.raises(ModelUnavailable):
            gw.chat(_request())
    clock.now += 11
    with pytest.raises(ModelUnavailable):
        gw.chat(_request())
    assert gw.handles["a"].breaker.state == "open"


def test_open_breaker_skips_to_fallback():
    clock = Clock()
    a = FakeProvider([ModelUnavailable("down")] * 2, name="a")
    b = FakeProvider(["b1", "b2"], name="b")
    gw = _gateway({"a": a, "b": b}, ["a", "b"], clock=clock, max_retries=0,
                  breaker={"failure_threshold": 1, "reset_timeout_s": 60})
    assert gw.chat(_request()).model == "b"
    assert gw.chat(_request("again")).model == "b"
    assert len(a.requests) == 1


def test_cache_serves_temperature_zero_only_and_costs_nothing():
    p = FakeProvider(["first", "second", "third"], name="a")
    gw = _gateway({"a": p}, ["a"], cache=MemoryCache())
    one = gw.chat(_request("q"))
    two = gw.chat(_request("q"))
    assert (two.text, two.cached, two.cost_usd) == ("first", True, 0.0)
    assert one.cost_usd > 0
    warm = gw.chat(_request("q", temperature=0.7))
    assert warm.text == "second" and not warm.cached
    other = gw.chat(_request("q", max_tokens=5))  # a different parameter is a different key
    assert other.text == "third"


def test_stream_falls_back_only_before_first_token():
    a = FakeProvider([ModelRefused("no")], name="a")
    b = FakeProvider(["streamed answer here"], name="b")
    chunks = list(_gateway({"a": a, "b": b}, ["a", "b"]).stream(_request()))
    assert "".join(c.text for c in chunks) == "streamed answer here"
    assert chunks[-1].usage is not None


def test_stream_error_after_first_token_is_not_retried():
    class Breaks(FakeProvider):
        def stream(self, request, *, timeout):
            yield from ()
            from keel.models.base import StreamChunk

            yield StreamChunk(text="partial")
            raise ModelUnavailable("connection dropped")

    a = Breaks(["unused"], name="a")
    b = FakeProvider(["never"], name="b")
    gw = _gateway({"a": a, "b": b}, ["a", "b"])
    seen = []
    with pytest.raises(ModelUnavailable):
        for chunk in gw.stream(_request()):
            seen.append(chunk.text)
    assert seen == ["partial"] and b.requests == []


class CountingBudget:
    def __init__(self, limit: float) -> None:
        self.limit, self.reserved, self.spent = limit, 0.0, 0.0

    def reserve(self, *, model, max_cost_usd, metadata):
        if self.spent + self.reserved + max_cost_usd > self.limit:
            raise BudgetExceeded("request", self.limit)
        self.reserved += max_cost_usd
        return max_cost_usd

    def settle(self, reservation, cost_usd):
        self.reserved -= reservation
        self.spent += cost_usd


def test_budget_hook_reserves_worst_case_and_settles_actual():
    budget = CountingBudget(limit=1.0)
    p = FakeProvider(["a", "b"], name="a")
    gw = _gateway({"a": p}, ["a"], budget=budget)
    r = gw.chat(_request(max_tokens=100))
    assert budget.reserved == 0 and budget.spent == pytest.approx(r.cost_usd)


def test_budget_refusal_stops_before_the_call():
    budget = CountingBudget(limit=0.0)
    p = FakeProvider(["never"], name="a")
    with pytest.raises(BudgetExceeded):
        _gateway({"a": p}, ["a"], budget=budget).chat(_request())
    assert p.requests == []


def test_retries_also_trip_the_breaker():
    """A model failing every attempt opens its breaker within one call's retries."""
    p = FakeProvider([ModelUnavailable("x")] * 10, name="a")
    gw = _gateway({"a": p}, ["a"], max_retries=6, breaker={"failure_threshold": 3, "reset_timeout_s": 30})
    with pytest.raises(CircuitOpen):
        gw.chat(_request())
    assert len(p.requests) == 3
