"""Who is calling: ``Authorization: Bearer <key>`` checked against the key store.

``server.auth``: ``required`` always wants a key; ``off`` never looks; ``auto``
wants one once any key exists, and always when the server listens beyond
loopback (``keel serve`` refuses to start that way with no key at all).

Who a request runs as (budgets, costs, traces, approvals requested) is the
key's name. A body may name another ``user`` only when no key identifies the
caller (auth off, or open on loopback) or when the key was created with
``act_as_any``; otherwise it is 403. The tenant (budgets and costs per customer)
is the key's tenant, by the same rule: a body may name another ``tenant`` only
without a key or with an ``act_as_any`` key. The same dependency counts the request
against ``server.rate_limit`` (per key id, or per client address without one).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import ConfigError, Forbidden, Unauthorized
from ._keys import KeyStore
from ._ratelimit import RateLimiter

__all__ = ["AuthPolicy", "Caller", "CallerDep", "caller", "is_loopback"]

bearer = HTTPBearer(auto_error=False, description="an API key made with `keel keys create NAME`")


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Caller:
    """The authenticated key's name, or None when the server runs without keys."""

    name: str | None = None
    key_id: str | None = None
    #: the key may name another user (and tenant) in a request body
    act_as_any: bool = False
    #: the key's tenant: budgets and costs of its requests are the tenant's
    tenant: str | None = None

    @property
    def approver(self) -> str:
        return self.name or "anonymous"

    def user_for(self, requested: str | None) -> str | None:
        """The user a request runs as: the key's name, or ``requested`` when this caller may name one."""
        if requested is None or requested == self.name:
            return self.name
        if self.name is None or self.act_as_any:
            return requested
        raise Forbidden(
            f"the API key of {self.name!r} may not act as user {requested!r}",
            hint="leave `user` out (requests run as the key's name), or use a key made with "
            "`keel keys create NAME --act-as-any`",
        )

    def tenant_for(self, requested: str | None) -> str | None:
        """The tenant a request runs as: the key's tenant, or ``requested`` when this caller may name one."""
        if requested is None or requested == self.tenant:
            return self.tenant
        if self.name is None or self.act_as_any:
            return requested
        whose = f"tenant {self.tenant!r}" if self.tenant is not None else "no tenant"
        raise Forbidden(
            f"the API key of {self.name!r} ({whose}) may not act for tenant {requested!r}",
            hint="leave `tenant` out (requests run as the key's tenant), or use a key made with "
            "`keel keys create NAME --act-as-any`",
        )


class AuthPolicy:
    def __init__(self, mode: Literal["auto", "required", "off"], host: str, keys: KeyStore,
                 limiter: RateLimiter | None = None) -> None:
        self.mode = mode
        self.host = host
        self.keys = keys
        self.limiter = limiter

    def required(self) -> bool:
        """Whether a request must carry a valid key right now."""
        if self.mode == "off":
            return False
        if self.mode == "required" or not is_loopback(self.host):
            return True
        return self.keys.any_active()

    def check_startable(self) -> None:
        """Refuse a server that would turn every request away, or serve a network without keys."""
        if self.required() and not self.keys.any_active():
            where = f"on {self.host}" if not is_loopback(self.host) else "with server.auth: required"
            raise ConfigError(
                f"refusing to serve {where} without an API key: every request would be refused, "
                "or anyone who can reach the port could use your models and data",
                hint="run `keel keys create NAME` first and send `Authorization: Bearer <key>`, "
                "or serve on 127.0.0.1",
            )

    def identify(self, token: str | None) -> Caller:
        if self.mode == "off":
            return Caller()
        if token:
            key = self.keys.verify(token)
            return Caller(key.name, key.id, key.act_as_any, key.tenant)
        if self.required():
            raise Unauthorized("this endpoint needs an API key",
                               hint="send `Authorization: Bearer <key>`; make one with keel keys create NAME")
        return Caller()


def caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Caller:
    """FastAPI dependency: the caller, or 401; on ``/v1`` routes, 429 over the rate limit."""
    policy: AuthPolicy = request.app.state.auth
    who = _identify(policy, request, credentials)
    if policy.limiter is not None and request.url.path.startswith("/v1/"):
        if who.key_id is not None:
            policy.limiter.hit("key", who.key_id)
        else:
            policy.limiter.hit("ip", request.client.host if request.client else "unknown")
    return who


def _identify(policy: AuthPolicy, request: Request, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    if policy.mode == "off":
        return Caller()
    token = credentials.credentials if credentials is not None else None
    if token is None and request.headers.get("authorization"):
        raise Unauthorized("the Authorization header is not a Bearer token", hint="send `Authorization: Bearer <key>`")
    return policy.identify(token)


CallerDep = Annotated[Caller, Depends(caller)]
