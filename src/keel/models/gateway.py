"""The one door every model call goes through.

For each call, in order: the response cache (temperature 0 only), then each
model of the chain in turn: its circuit breaker, a budget reservation for the
worst-case cost, the call with a timeout, retries with exponential backoff and
full jitter that honour ``retry-after``, cost accounting from the usage the
provider reported, settlement of the reservation. A model that still fails
hands over to the next one (for streams: only before the first token).

A call is charged once: only a response that arrived is priced; failed
attempts carry no usage. Observers see one :class:`CallRecord` per attempt.
A cancelled run (:mod:`keel._cancel`) makes no further attempt: no retry, no
fallback, and so no reservation.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import _cancel
from .._cancel import check_cancelled
from ..config import GatewaySettings, Settings
from ..errors import AllModelsFailed, CircuitOpen, ModelError, RateLimited
from ..telemetry.spans import mark_error, model_span, set_model_response
from .base import ChatRequest, ChatResponse, Provider, StreamChunk, Usage, estimate_request_tokens
from .breaker import CircuitBreaker
from .cache import ResponseCache
from .pricing import Pricer

__all__ = ["BudgetHook", "CallRecord", "Gateway", "ModelHandle", "NoBudget"]


class BudgetHook(Protocol):
    """Called around every model call. ``reserve`` raises BudgetExceeded to refuse."""

    def reserve(self, *, model: str, max_cost_usd: float, metadata: dict[str, str]) -> Any: ...

    def settle(self, reservation: Any, cost_usd: float) -> None: ...


class NoBudget:
    def reserve(self, *, model: str, max_cost_usd: float, metadata: dict[str, str]) -> None:
        return None

    def settle(self, reservation: Any, cost_usd: float) -> None:
        return None


@dataclass
class CallRecord:
    """One attempt at one model, as observers (tracing, costs, metrics) see it."""

    model: str
    ok: bool
    attempt: int
    latency_ms: float
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    cached: bool = False
    error: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelHandle:
    """A provider with its breaker and pricer."""

    name: str
    provider: Provider
    pricer: Pricer
    breaker: CircuitBreaker
    max_output_tokens: int = 512
    timeout_s: float | None = None


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        handles: dict[str, ModelHandle],
        chains: dict[str, list[str]],
        *,
        cache: ResponseCache | None = None,
        budget: BudgetHook | None = None,
        sleep: Callable[[float], None] = _cancel.sleep,  # a cancelled run stops waiting to retry
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.handles = handles
        self.chains = chains
        self.cache = cache if settings.cache.enabled else None
        self.budget: BudgetHook = budget or NoBudget()
        self.observers: list[Callable[[CallRecord], None]] = []
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, providers: dict[str, Provider], **kwargs: Any) -> Gateway:
        b = settings.gateway.breaker
        handles = {
            name: ModelHandle(
                name=name,
                provider=provider,
                pricer=Pricer(settings.model(name)),
                breaker=CircuitBreaker(b.failure_threshold, b.reset_timeout_s),
                max_output_tokens=settings.model(name).max_output_tokens,
                timeout_s=settings.model(name).timeout_s,
            )
            for name, provider in providers.items()
        }
        return cls(settings.gateway, handles, dict(settings.roles), **kwargs)

    # -- public -------------------------------------------------------------------

    def chain(self, role_or_model: str) -> list[ModelHandle]:
        names = self.chains.get(role_or_model) or [role_or_model]
        missing = [n for n in names if n not in self.handles]
        if missing:
            raise KeyError(f"no provider built for {missing}")
        return [self.handles[n] for n in names]

    def chat(self, request: ChatRequest, *, role: str = "chat") -> ChatResponse:
        """One answer from the first model of the role's chain that gives one."""
        errors: list[ModelError] = []
        for handle in self.chain(role):
            cached = self._from_cache(handle, request)
            if cached is not None:
                return cached
            try:
                return self._call_with_retries(handle, request)
            except ModelError as exc:
                exc.model = exc.model or handle.name
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else AllModelsFailed(errors)

    def stream(self, request: ChatRequest, *, role: str = "chat") -> Iterator[StreamChunk]:
        """Stream from the first model that starts; fallback only before the first token."""
        errors: list[ModelError] = []
        for handle in self.chain(role):
            cached = self._from_cache(handle, request)
            if cached is not None:
                yield StreamChunk(text=cached.text)
                yield StreamChunk(usage=Usage(), finish_reason=cached.finish_reason)
                return
            started = False
            try:
                for chunk in self._stream_with_retries(handle, request):
                    started = started or bool(chunk.text)
                    yield chunk
                return
            except ModelError as exc:
                if started:
                    raise
                exc.model = exc.model or handle.name
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else AllModelsFailed(errors)

    def count_tokens(self, text: str, *, role: str = "chat") -> int:
        return self.chain(role)[0].provider.count_tokens(text)

    # -- internals ----------------------------------------------------------------

    def _from_cache(self, handle: ModelHandle, request: ChatRequest) -> ChatResponse | None:
        if self.cache is None or request.temperature != 0:
            return None
        hit = self.cache.get(request.cache_key(handle.name))
        if hit is None:
            return None
        hit.cached, hit.cost_usd, hit.usage, hit.attempts = True, 0.0, Usage(), 0
        with model_span(handle.name, handle.provider.name, request, 0) as span:  # a hit shows in the trace
            set_model_response(span, hit)
            self._emit(CallRecord(handle.name, True, 0, 0.0, cached=True, metadata=request.metadata))
        return hit

    def _backoff(self, attempt: int, error: ModelError) -> float | None:
        """Seconds to wait before the next attempt, or None to give up on this model."""
        s = self.settings
        if not error.retryable or attempt > s.max_retries:
            return None
        delay = self._rng.uniform(0, min(s.backoff_max_s, s.backoff_base_s * 2 ** (attempt - 1)))
        if isinstance(error, RateLimited) and error.retry_after is not None:
            if error.retry_after > s.backoff_max_s:
                return None  # the server asks for longer than we will wait: fall back now
            delay = max(delay, error.retry_after)
        return delay

    def _reserve(self, handle: ModelHandle, request: ChatRequest) -> Any:
        if not handle.pricer.is_priced:  # what it could cost is unknown: a budget must not trust it
            return self.budget.reserve(model=handle.name, max_cost_usd=math.inf, metadata=request.metadata)
        max_out = request.max_tokens or handle.max_output_tokens
        worst = handle.pricer.worst_case(estimate_request_tokens(request), max_out)
        return self.budget.reserve(model=handle.name, max_cost_usd=worst, metadata=request.metadata)

    def _call_with_retries(self, handle: ModelHandle, request: ChatRequest) -> ChatResponse:
        timeout = handle.timeout_s or self.settings.timeout_s
        attempt = 0
        while True:
            attempt += 1
            check_cancelled()
            if not handle.breaker.allow():
                raise CircuitOpen(handle.name, handle.breaker.retry_in())
            with model_span(handle.name, handle.provider.name, request, attempt) as span:
                reservation = self._reserve(handle, request)
                started = time.perf_counter()
                try:
                    response = handle.provider.chat(request, timeout=timeout)
                except ModelError as exc:
                    delay = self._failed(handle, request, reservation, started, attempt, exc)
                    if delay is None:
                        raise
                    mark_error(span, exc)
                except BaseException:
                    self.budget.settle(reservation, 0.0)
                    raise
                else:
                    handle.breaker.record_success()
                    response = self._account(handle, request, response, reservation, started, attempt)
                    set_model_response(span, response, handle.pricer)
                    return response
            self._sleep(delay)

    def _failed(self, handle: ModelHandle, request: ChatRequest, reservation: Any, started: float,
                attempt: int, exc: ModelError, *, retry: bool = True) -> float | None:
        """Book a failed attempt (nothing charged, breaker told, observers told); the delay
        before the next attempt, or None to give up on this model."""
        self.budget.settle(reservation, 0.0)
        handle.breaker.record_failure()
        self._emit(CallRecord(handle.name, False, attempt, _ms(started), error=exc.code, metadata=request.metadata))
        return self._backoff(attempt, exc) if retry else None

    def _account(self, handle: ModelHandle, request: ChatRequest, response: ChatResponse, reservation: Any,
                 started: float, attempt: int) -> ChatResponse:
        response.cost_usd = handle.pricer.cost(response.usage)
        response.latency_ms = _ms(started)
        response.attempts = attempt
        response.model = handle.name
        self.budget.settle(reservation, response.cost_usd)
        self._emit(CallRecord(handle.name, True, attempt, response.latency_ms, response.usage,
                              response.cost_usd, metadata=request.metadata))
        if self.cache is not None and request.temperature == 0:
            self.cache.put(request.cache_key(handle.name), response)
        return response

    def _stream_with_retries(self, handle: ModelHandle, request: ChatRequest) -> Iterator[StreamChunk]:
        timeout = handle.timeout_s or self.settings.timeout_s
        attempt = 0
        while True:
            attempt += 1
            check_cancelled()
            if not handle.breaker.allow():
                raise CircuitOpen(handle.name, handle.breaker.retry_in())
            with model_span(handle.name, handle.provider.name, request, attempt, current=False) as span:
                reservation = self._reserve(handle, request)
                started = time.perf_counter()
                parts: list[str] = []
                usage = Usage()
                finish = "stop"
                try:
                    for chunk in handle.provider.stream(request, timeout=timeout):
                        if chunk.text:
                            parts.append(chunk.text)
                        if chunk.usage is not None:
                            usage = chunk.usage
                        finish = chunk.finish_reason or finish
                        yield chunk
                except ModelError as exc:
                    # once text has reached the caller, a retry would repeat it: never retry then
                    delay = self._failed(handle, request, reservation, started, attempt, exc, retry=not parts)
                    if delay is None:
                        raise
                    mark_error(span, exc)
                except BaseException:
                    self.budget.settle(reservation, 0.0)
                    raise
                else:
                    handle.breaker.record_success()
                    response = ChatResponse(text="".join(parts), model=handle.name, usage=usage,
                                            finish_reason=finish)
                    self._account(handle, request, response, reservation, started, attempt)
                    set_model_response(span, response, handle.pricer)
                    return
            self._sleep(delay)

    def _emit(self, record: CallRecord) -> None:
        for observer in list(self.observers):
            observer(record)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
