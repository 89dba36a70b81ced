"""Domain errors and their one translation to gRPC status with google.rpc details.

Services raise these with a `Reason`, the `ErrorReason` enum of `loyalty/common/v1/errors.proto`
without its prefix (`Reason.CUSTOMER_NOT_FOUND`). A reason the contract does not define does not
exist as a constant, so it cannot be raised. The server turns an error into a status carrying
ErrorInfo (the reason's name, domain "loyalty.dev") and, for bad input, BadRequest field violations.
"""

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from loyalty.common.v1 import errors_pb2

ERROR_DOMAIN = "loyalty.dev"
_PREFIX = "ERROR_REASON_"

Reason = enum.IntEnum(
    "Reason",
    {
        value.name.removeprefix(_PREFIX): value.number
        for value in errors_pb2.DESCRIPTOR.enum_types_by_name["ErrorReason"].values
        if value.number
    },
)
Reason.__doc__ = "ErrorReason values without their prefix: Reason.CUSTOMER_NOT_FOUND."


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """A refusal the caller can act on."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        reason: Reason,
        description: str = "",
        *,
        field: str | None = None,
        violations: Sequence[FieldViolation] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(reason, Reason):
            raise TypeError(f"reasons are Reason constants, not {reason!r}")
        super().__init__(description or reason.name)
        self.reason = reason
        self.description = description or reason.name
        self.violations = tuple(violations) or ((FieldViolation(field, self.description),) if field else ())
        self.metadata = dict(metadata or {})


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(DomainError):
    code = grpc.StatusCode.ABORTED


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(DomainError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Unavailable(DomainError):
    """Retryable: the same call, with the same idempotency key, may succeed later."""

    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(DomainError):
    """Overload: the caller should back off for `retry_after_seconds` (sent as RetryInfo)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, reason: Reason, description: str = "", *, retry_after_seconds: float = 0.1, **kw):
        super().__init__(reason, description, **kw)
        self.retry_after_seconds = retry_after_seconds


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_rpc_status(error: DomainError) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=error.reason.name, domain=ERROR_DOMAIN, metadata=error.metadata)
    details = [_pack(info)]
    if error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in error.violations
                    ]
                )
            )
        )
    if isinstance(error, ResourceExhausted):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_seconds * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=error.code.value[0], message=error.description, details=details)


def internal_status(message: str = "internal error") -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=Reason.INTERNAL.name, domain=ERROR_DOMAIN)
    return status_pb2.Status(code=code_pb2.INTERNAL, message=message, details=[_pack(info)])


def _detail(status: status_pb2.Status, kind):
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            found = kind()
            detail.Unpack(found)
            return found
    return None


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo inside a status, for clients and tests."""
    return _detail(status, error_details_pb2.ErrorInfo)


def bad_request(status: status_pb2.Status) -> error_details_pb2.BadRequest | None:
    return _detail(status, error_details_pb2.BadRequest)


def retry_info(status: status_pb2.Status) -> error_details_pb2.RetryInfo | None:
    return _detail(status, error_details_pb2.RetryInfo)
