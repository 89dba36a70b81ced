"""What happens around every RPC of every service, in one function per call (`CallGuard.handler`):

admission (at most `max_concurrent_calls` in flight, the rest refused at once with RESOURCE_EXHAUSTED),
authentication into the call context (tenant, principal, scopes, deadline), decoding and validating
the request (bad bytes are INVALID_ARGUMENT, never INTERNAL), a default deadline when the caller set
none, the translation of domain and database errors to gRPC status with google.rpc details, metrics
under the names gRPC dashboards expect, and an access log line for failed or slow calls.

Handlers are registered per method rather than behind grpc.aio interceptors: an interceptor chain is
entered on every call and costs more than this whole guard.
"""

import asyncio
import contextlib
import hmac
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import DecodeError
from grpc_status import rpc_status
from opentelemetry import context as otel_context, propagate

from loyalty_runtime import metrics, telemetry
from loyalty_runtime.context import (
    AUTHORIZATION_HEADER,
    PRINCIPAL_HEADER,
    SCOPES_HEADER,
    TENANT_HEADER,
    CallContext,
    bind_call,
    check_name,
    check_tenant,
    unbind_call,
)
from loyalty_runtime.db import as_domain_error
from loyalty_runtime.errors import (
    DomainError,
    InvalidArgument,
    Reason,
    ResourceExhausted,
    Unauthenticated,
    internal_status,
    to_rpc_status,
)
from loyalty_runtime.validation import validate

log = logging.getLogger("loyalty.rpc")

TRACEPARENT_HEADER = "traceparent"

# Reads invocation metadata and answers who is calling, or raises Unauthenticated. It may be a
# coroutine function (the gateway looks API keys up and counts rate limits).
Authenticator = Callable[[Sequence[tuple[str, str | bytes]]], CallContext | Awaitable[CallContext]]


def internal_token_authenticator(token: str) -> Authenticator:
    """Internal services trust tenant and principal headers only from callers holding the token."""
    expected = f"Bearer {token}".encode()

    def authenticate(metadata) -> CallContext:
        presented = tenant = principal = scopes = ""
        for key, value in metadata:
            if key == AUTHORIZATION_HEADER:
                presented = value
            elif key == TENANT_HEADER:
                tenant = value
            elif key == PRINCIPAL_HEADER:
                principal = value
            elif key == SCOPES_HEADER:
                scopes = value
        if not isinstance(presented, str) or not hmac.compare_digest(presented.encode(), expected):
            raise Unauthenticated(Reason.UNAUTHENTICATED, "missing or invalid internal credentials")
        if not tenant:
            raise Unauthenticated(Reason.UNAUTHENTICATED, f"metadata {TENANT_HEADER} is required")
        return CallContext(
            tenant_id=check_tenant(tenant),
            principal=check_name(principal, PRINCIPAL_HEADER) if principal else "internal",
            scopes=frozenset(check_name(s, SCOPES_HEADER) for s in scopes.split(",") if s),
        )

    return authenticate


def _traceparent(metadata) -> str | None:
    for key, value in metadata:
        if key == TRACEPARENT_HEADER:
            return value
    return None


def _adopt(metadata):
    """Without tracing: take on the caller's trace (for logs and onward calls), and stay untraced
    even if another server in this process has the database clients instrumented."""
    parent = _traceparent(metadata)
    context = propagate.extract({TRACEPARENT_HEADER: parent}) if parent else None
    if telemetry.instrumented():
        context = telemetry.silenced(context)
    return otel_context.attach(context) if context is not None else None


async def _abort(context: grpc.aio.ServicerContext, status) -> None:
    grpc_status = rpc_status.to_status(status)
    await context.abort(grpc_status.code, grpc_status.details, grpc_status.trailing_metadata)


class CallGuard:
    """Shared by every handler of one server: the limits, the authenticator, the log policy."""

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        default_deadline_seconds: float,
        max_concurrent_calls: int,
        slow_call_seconds: float,
        log_every_call: bool,
        tracing: bool,
    ) -> None:
        self.authenticate = authenticator
        self.authenticate_async = inspect.iscoroutinefunction(authenticator)
        self.default_deadline = default_deadline_seconds
        self.max_concurrent_calls = max_concurrent_calls
        self.slow_call_seconds = slow_call_seconds
        self.log_every_call = log_every_call
        # With a tracer provider, OpenTelemetry's server interceptor makes the spans; without one,
        # an incoming traceparent is still adopted so logs and outgoing calls carry it.
        self.adopt_traceparent = not tracing
        self.in_flight = 0

    def handler(self, service: str, method: MethodDescriptor, behavior) -> grpc.RpcMethodHandler:
        """The method handler for one RPC; `behavior(request, context)` is the servicer's method (an
        async generator for a server-streaming RPC), or None for an RPC that is not built yet."""
        decode = message_factory.GetMessageClass(method.input_type).FromString
        full_method = f"/{service}/{method.name}"
        measure = metrics.for_method(service, method.name)

        if method.server_streaming:

            async def handle_stream(raw: bytes, context: grpc.aio.ServicerContext):
                async with self._guarded(context, full_method, measure):
                    request = await _request(decode, raw, behavior, context, full_method)
                    async for response in behavior(request, context):
                        yield response

            return grpc.unary_stream_rpc_method_handler(handle_stream, response_serializer=_serialize)

        async def handle(raw: bytes, context: grpc.aio.ServicerContext):
            async with self._guarded(context, full_method, measure):
                request = await _request(decode, raw, behavior, context, full_method)
                return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(handle, response_serializer=_serialize)

    def forwarder(self, service: str, method: MethodDescriptor, behavior) -> grpc.RpcMethodHandler:
        """The method handler for an RPC this server forwards to another service: the same guard,
        but the request's bytes reach `behavior(raw, context)` undecoded and the answer's bytes (an
        async generator of them for a server-streaming RPC) go back as they are; whoever answers in
        the end decodes and validates."""
        full_method = f"/{service}/{method.name}"
        measure = metrics.for_method(service, method.name)

        if method.server_streaming:

            async def forward_stream(raw: bytes, context: grpc.aio.ServicerContext):
                async with self._guarded(context, full_method, measure):
                    async for response in behavior(raw, context):
                        yield response

            return grpc.unary_stream_rpc_method_handler(forward_stream)

        async def forward(raw: bytes, context: grpc.aio.ServicerContext):
            async with self._guarded(context, full_method, measure):
                return await behavior(raw, context)

        return grpc.unary_unary_rpc_method_handler(forward)

    @contextlib.asynccontextmanager
    async def _guarded(self, context: grpc.aio.ServicerContext, full_method: str, measure):
        """Everything around one call's body: admission, authentication, deadline, error mapping,
        metrics and the access log (a streaming call's body is the whole stream)."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        measure.started()
        if self.in_flight >= self.max_concurrent_calls:
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
            measure.handled(code, time.perf_counter() - started)
            await _abort(context, to_rpc_status(_overloaded()))
        self.in_flight += 1
        bound = attached = budget = None
        try:
            metadata = context.invocation_metadata() or ()
            if self.adopt_traceparent:
                attached = _adopt(metadata)
            call = self.authenticate(metadata)
            if self.authenticate_async:
                call = await call
            remaining = context.time_remaining()
            budget = self.default_deadline if remaining is None else remaining
            bound = bind_call(
                CallContext(call.tenant_id, call.principal, call.scopes, time.monotonic() + budget)
            )
            # gRPC cancels the call at the caller's own deadline; without one, the default applies.
            async with asyncio.timeout(None if remaining is not None else budget):
                yield
        except DomainError as error:
            code = error.code
            await _abort(context, to_rpc_status(error))
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            await context.abort(code, "deadline exceeded")
        except asyncio.CancelledError:
            # gRPC cancels the handler when the caller gives up or its deadline passes.
            timed_out = budget is not None and time.perf_counter() - started >= budget
            code = grpc.StatusCode.DEADLINE_EXCEEDED if timed_out else grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            code = context.code() or code
            raise
        except Exception as error:
            mapped = as_domain_error(error)  # a lost connection, a lock timeout, ...
            if mapped is None:
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error", extra={"fields": {"method": full_method}})
                await _abort(context, internal_status())
            code = mapped.code
            await _abort(context, to_rpc_status(mapped))
        finally:
            self.in_flight -= 1
            if bound is not None:
                unbind_call(bound)
            elapsed = time.perf_counter() - started
            measure.handled(code, elapsed)
            if code is not grpc.StatusCode.OK or self.log_every_call or elapsed > self.slow_call_seconds:
                _access_log(full_method, code, elapsed)
            if attached is not None:
                otel_context.detach(attached)


async def _request(decode, raw: bytes, behavior, context: grpc.aio.ServicerContext, full_method: str):
    request = _decode(decode, raw)
    validate(request)
    if behavior is None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{full_method} is not implemented yet")
    return request


def _serialize(response) -> bytes:
    return response.SerializeToString()


def _decode(decode, raw: bytes):
    try:
        return decode(raw)
    except (DecodeError, RuntimeError, ValueError):
        # Not a message of this RPC's request type: wrong bytes, invalid UTF-8, too deeply nested.
        raise InvalidArgument(Reason.INVALID_ARGUMENT, "the request is not a valid message") from None


def _overloaded() -> ResourceExhausted:
    return ResourceExhausted(
        Reason.OVERLOADED, "too many calls in flight; retry shortly", retry_after_seconds=0.05
    )


def _access_log(method: str, code: grpc.StatusCode, elapsed: float) -> None:
    log.info("rpc", extra={"fields": {"method": method, "code": code.name, "ms": round(elapsed * 1000, 2)}})
