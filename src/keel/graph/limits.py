"""The run's bounds: steps, tokens, cost and wall time, checked before spending.

A model call is checked *before* it is made, against its worst case (the
prompt's estimated tokens plus the most it may generate, priced by the
gateway's pricer): the run stops with ``LimitExceeded`` rather than overspend.
Wall time excludes the time a run waits for a person's approval.
"""

from __future__ import annotations

import time
from typing import Any

from ..config import LimitSettings
from ..errors import LimitExceeded
from ..models.base import ChatRequest, estimate_request_tokens
from ..models.gateway import Gateway

__all__ = ["check_call", "check_steps", "check_wall"]


def check_wall(state: dict[str, Any], limits: LimitSettings) -> None:
    elapsed = time.time() - state.get("clock_start", time.time())
    if elapsed > limits.max_wall_s:
        raise LimitExceeded("max_wall_s", round(elapsed, 2), limits.max_wall_s)


def check_steps(state: dict[str, Any], limits: LimitSettings) -> None:
    check_wall(state, limits)
    if state.get("steps", 0) >= limits.max_steps:
        raise LimitExceeded("max_steps", state.get("steps", 0), limits.max_steps)


def check_call(state: dict[str, Any], limits: LimitSettings, gateway: Gateway, request: ChatRequest, role: str) -> None:
    """Refuse a model call whose worst case would break the token or cost limit."""
    check_wall(state, limits)
    usage = state["usage"]
    handle = gateway.chain(role)[0]
    max_out = request.max_tokens or handle.max_output_tokens
    prompt = estimate_request_tokens(request)
    tokens = usage["input_tokens"] + usage["output_tokens"] + prompt + max_out
    if tokens > limits.max_tokens:
        raise LimitExceeded("max_tokens", tokens, limits.max_tokens)
    worst = max(h.pricer.worst_case(prompt, max_out) for h in gateway.chain(role))
    if usage["cost_usd"] + worst > limits.max_cost_usd:
        raise LimitExceeded("max_cost_usd", round(usage["cost_usd"] + worst, 6), limits.max_cost_usd)
