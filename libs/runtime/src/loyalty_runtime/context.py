"""Who is calling: tenant, principal and scopes of the current call, and its deadline.

The server interceptor sets them from authenticated metadata; domain and repository code read them
and never take a tenant from a request field.
"""

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from loyalty_runtime.errors import Unauthenticated

TENANT_HEADER = "x-loyalty-tenant"
PRINCIPAL_HEADER = "x-loyalty-principal"
SCOPES_HEADER = "x-loyalty-scopes"
AUTHORIZATION_HEADER = "authorization"


@dataclass(frozen=True)
class CallContext:
    tenant_id: str
    principal: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    # time.monotonic() value after which the caller no longer waits; None when unknown.
    deadline: float | None = None

    def remaining_seconds(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


_current: ContextVar[CallContext | None] = ContextVar("loyalty_call_context", default=None)


def current_call() -> CallContext:
    call = _current.get()
    if call is None:
        raise Unauthenticated("UNAUTHENTICATED", "no authenticated caller")
    return call


def current_tenant() -> str:
    return current_call().tenant_id


def bind_call(call: CallContext | None):
    """Set the current call; returns a token for `unbind_call`."""
    return _current.set(call)


def unbind_call(token) -> None:
    _current.reset(token)
