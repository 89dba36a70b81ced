"""The services behind the gateway: one long-lived channel each (the runtime's internal channel: the
internal credential, the caller's tenant and principal, the remaining deadline), and the one place
their failures are translated for the gateway's callers.

A downstream refusal keeps its code and reason (INSUFFICIENT_BALANCE stays FAILED_PRECONDITION with
that reason); a downstream that does not answer is UNAVAILABLE, retryable, never INTERNAL."""

from dataclasses import dataclass

import grpc
from grpc_status import rpc_status

from loyalty.fraud.v1 import fraud_service_pb2_grpc
from loyalty.ledger.v1 import ledger_service_pb2_grpc
from loyalty.profile.v1 import profile_service_pb2_grpc
from loyalty.promotion.v1 import promotion_service_pb2_grpc
from loyalty.segmentation.v1 import segmentation_service_pb2_grpc
from loyalty_runtime import errors
from loyalty_runtime.clients import internal_channel
from loyalty_runtime.errors import DomainError, Reason

TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
_ERRORS = {cls.code: cls for cls in DomainError.__subclasses__() if cls.code is not grpc.StatusCode.UNKNOWN}


class DownstreamError(Exception):
    """A downstream call failed; `error` is what the gateway's caller is told."""

    def __init__(self, service: str, code: grpc.StatusCode, error: DomainError) -> None:
        super().__init__(f"{service}: {code.name}")
        self.service = service
        self.code = code
        self.error = error

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT


def translate(service: str, failure: grpc.aio.AioRpcError) -> DownstreamError:
    code = failure.code()
    if code in TRANSIENT:
        return DownstreamError(
            service, code, errors.Unavailable(Reason.UNAVAILABLE, f"{service} does not answer; retry")
        )
    status = rpc_status.from_call(failure)
    info = errors.error_info(status) if status else None
    reason = Reason.__members__.get(info.reason, Reason.UNAVAILABLE) if info else Reason.UNAVAILABLE
    if code is grpc.StatusCode.UNIMPLEMENTED:
        reason = Reason.UNIMPLEMENTED
    violations = errors.bad_request(status) if status else None
    fields = (
        [errors.FieldViolation(v.field, v.description) for v in violations.field_violations]
        if violations
        else []
    )
    kind = _ERRORS.get(code, errors.FailedPrecondition)
    return DownstreamError(service, code, kind(reason, failure.details() or reason.name, violations=fields))


async def call(service: str, method, request, *, cap_seconds: float | None = None):
    try:
        return await method(request, timeout=cap_seconds)
    except grpc.aio.AioRpcError as failure:
        raise translate(service, failure) from None


@dataclass
class Downstream:
    profile: profile_service_pb2_grpc.ProfileServiceStub
    segmentation: segmentation_service_pb2_grpc.SegmentationServiceStub
    promotion: promotion_service_pb2_grpc.PromotionServiceStub
    ledger: ledger_service_pb2_grpc.LedgerServiceStub
    fraud: fraud_service_pb2_grpc.FraudServiceStub
    # The channels themselves, by service name (the admin API forwards over them, notification's too).
    channels: dict[str, grpc.aio.Channel]


SERVICES = ("profile", "segmentation", "promotion", "ledger", "fraud", "notification")


def connect(settings, tracer_provider) -> Downstream:
    token = settings.internal_token.get_secret_value()
    channels = {
        name: internal_channel(
            getattr(settings, f"{name}_target"), internal_token=token, tracer_provider=tracer_provider
        )
        for name in SERVICES
    }
    return Downstream(
        profile=profile_service_pb2_grpc.ProfileServiceStub(channels["profile"]),
        segmentation=segmentation_service_pb2_grpc.SegmentationServiceStub(channels["segmentation"]),
        promotion=promotion_service_pb2_grpc.PromotionServiceStub(channels["promotion"]),
        ledger=ledger_service_pb2_grpc.LedgerServiceStub(channels["ledger"]),
        fraud=fraud_service_pb2_grpc.FraudServiceStub(channels["fraud"]),
        channels=channels,
    )
