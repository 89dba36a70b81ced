"""Who is calling: tenant, principal and scopes of the current call, and its deadline.

The server sets them from authenticated metadata; use cases and repositories read them and never take
a tenant from a request field.

A tenant id is 1 to 63 characters of lower-case letters, digits, '-', '_' and '.', starting with a
letter or digit (`demo`, `acme-de`, `brand_2`). Anything else is refused before any query runs.
"""

import re
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime

from loyalty_runtime.errors import InvalidArgument, Reason, Unauthenticated

TENANT_HEADER = "x-loyalty-tenant"
PRINCIPAL_HEADER = "x-loyalty-principal"
SCOPES_HEADER = "x-loyalty-scopes"
AUTHORIZATION_HEADER = "authorization"

TENANT_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# Principals and scopes are names, never personal data: printable ASCII without spaces.
NAME_PATTERN = re.compile(r"[!-~]{1,200}")


def check_tenant(tenant: str) -> str:
    if not TENANT_PATTERN.fullmatch(tenant):
        raise InvalidArgument(
            Reason.INVALID_TENANT,
            "the tenant is 1-63 lower-case letters, digits, '-', '_' or '.'",
            field=TENANT_HEADER,
        )
    return tenant


def check_name(value: str, header: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, f"{header} is 1-200 printable ASCII characters", field=header
        )
    return value


@dataclass(frozen=True, slots=True)
class CallContext:
    tenant_id: str
    principal: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    # time.monotonic() value after which the caller no longer waits; None when unknown.
    deadline: float | None = None
    # For a consumer handling an event: its id and when it happened (handlers key their effects on
    # the id and count time from the occurrence, not from when a backlog got round to it).
    event_id: str | None = None
    event_time: datetime | None = None

    def remaining_seconds(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


_current: ContextVar[CallContext | None] = ContextVar("loyalty_call_context", default=None)


def current_call() -> CallContext:
    call = _current.get()
    if call is None:
        raise Unauthenticated(Reason.UNAUTHENTICATED, "no authenticated caller")
    return call


def current_tenant() -> str:
    return current_call().tenant_id


def bind_call(call: CallContext | None):
    """Set the current call; returns a token for `unbind_call`."""
    return _current.set(call)


def unbind_call(token) -> None:
    _current.reset(token)
