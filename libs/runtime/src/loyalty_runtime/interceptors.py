"""The one interceptor stack every service runs: authentication into the call context, a default
deadline, domain-error mapping, access logs and metrics. Health and reflection stay open."""

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Mapping

import grpc
from grpc_status import rpc_status

from loyalty_runtime.context import (
    AUTHORIZATION_HEADER,
    PRINCIPAL_HEADER,
    SCOPES_HEADER,
    TENANT_HEADER,
    CallContext,
    bind_call,
    unbind_call,
)
from loyalty_runtime.errors import DomainError, Unauthenticated, internal_status, to_rpc_status
from loyalty_runtime.metrics import RPC_HANDLED, RPC_LATENCY

log = logging.getLogger("loyalty.rpc")

OPEN_SERVICE_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# Reads invocation metadata and answers who is calling, or raises Unauthenticated.
Authenticator = Callable[[Mapping[str, str]], CallContext]


def internal_token_authenticator(token: str) -> Authenticator:
    """Internal services trust tenant and principal headers only from callers holding the token."""
    expected = f"Bearer {token}".encode()

    def authenticate(metadata: Mapping[str, str]) -> CallContext:
        presented = metadata.get(AUTHORIZATION_HEADER, "").encode()
        if not hmac.compare_digest(presented, expected):
            raise Unauthenticated("UNAUTHENTICATED", "missing or invalid internal credentials")
        tenant = metadata.get(TENANT_HEADER, "")
        if not tenant:
            raise Unauthenticated("UNAUTHENTICATED", f"metadata {TENANT_HEADER} is required")
        scopes = frozenset(s for s in metadata.get(SCOPES_HEADER, "").split(",") if s)
        return CallContext(
            tenant_id=tenant, principal=metadata.get(PRINCIPAL_HEADER, "internal"), scopes=scopes
        )

    return authenticate


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


async def _abort(context: grpc.aio.ServicerContext, status) -> None:
    grpc_status = rpc_status.to_status(status)
    await context.abort(grpc_status.code, grpc_status.details, grpc_status.trailing_metadata)


class CallInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, default_deadline_seconds: float) -> None:
        self._authenticate = authenticator
        self._default_deadline = default_deadline_seconds

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICE_PREFIXES):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # streaming RPCs are not part of any contract yet

    def _wrap(self, method: str, behavior):
        async def guarded(request, context: grpc.aio.ServicerContext):
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            token = None
            try:
                call = self._authenticate(_metadata(context))
                budget = context.time_remaining() or self._default_deadline
                token = bind_call(
                    CallContext(call.tenant_id, call.principal, call.scopes, time.monotonic() + budget)
                )
                async with asyncio.timeout(budget):
                    return await behavior(request, context)
            except DomainError as error:
                code = error.code
                await _abort(context, to_rpc_status(error))
            except NotImplementedError:
                # The generated servicer base answers every RPC not built yet this way.
                code = grpc.StatusCode.UNIMPLEMENTED
                await context.abort(code, f"{method} is not implemented yet")
            except TimeoutError:
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                await context.abort(code, "deadline exceeded")
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as error:
                if isinstance(error, grpc.aio.AbortError):
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error", extra={"fields": {"method": method}})
                await _abort(context, internal_status())
            finally:
                if token is not None:
                    unbind_call(token)
                elapsed = time.perf_counter() - started
                RPC_HANDLED.labels(method, code.name).inc()
                RPC_LATENCY.labels(method).observe(elapsed)
                log.info(
                    "rpc",
                    extra={"fields": {"method": method, "code": code.name, "ms": round(elapsed * 1000, 2)}},
                )

        return guarded
