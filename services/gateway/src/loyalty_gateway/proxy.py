"""The admin API over the platform's services: the RPCs of domain/admin_api.py's table, served under
their own names (`loyalty.promotion.v1.PromotionService/CreateCampaign`), so a client generated from
the services' protos works against the gateway unchanged.

Each call is forwarded as bytes: the request is not decoded here (the service that answers decodes
and validates it, and bad bytes are its INVALID_ARGUMENT), the answer not re-encoded; streams
(exports) are passed on message by message. The runtime's call guard authenticates the caller, so
the tenant is the one of their credential, never of the request; the internal channel carries the
internal credential, that tenant, the principal and the remaining deadline. A change, once it
succeeded, is written to the audit log (admin.record_forwarded): only then are request and answer
decoded, for their ids. A downstream refusal keeps its code and reason (downstream.translate).
"""

from collections.abc import Mapping

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from loyalty.fraud.v1 import fraud_service_pb2
from loyalty.ledger.v1 import ledger_service_pb2
from loyalty.notification.v1 import notification_service_pb2
from loyalty.profile.v1 import profile_service_pb2
from loyalty.promotion.v1 import promotion_service_pb2
from loyalty.segmentation.v1 import segmentation_service_pb2
from loyalty_gateway import admin
from loyalty_gateway.auth import refuse
from loyalty_gateway.domain import admin_api
from loyalty_gateway.downstream import translate
from loyalty_runtime.context import current_call
from loyalty_runtime.uow import UnitsOfWork

# The services forwarded to, with the name of the downstream channel each is reached by.
TARGETS: dict[ServiceDescriptor, str] = {
    promotion_service_pb2.DESCRIPTOR.services_by_name["PromotionService"]: "promotion",
    segmentation_service_pb2.DESCRIPTOR.services_by_name["SegmentationService"]: "segmentation",
    notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"]: "notification",
    fraud_service_pb2.DESCRIPTOR.services_by_name["FraudService"]: "fraud",
    profile_service_pb2.DESCRIPTOR.services_by_name["ProfileService"]: "profile",
    ledger_service_pb2.DESCRIPTOR.services_by_name["LedgerService"]: "ledger",
}
SERVICES = tuple(TARGETS)


def _allow(rule: admin_api.Rule, method: str) -> None:
    call = current_call()
    if not admin_api.permitted(rule, call.scopes):
        refuse(call, method)


class AdminProxy:
    def __init__(self, units: UnitsOfWork, channels: Mapping[str, grpc.aio.Channel]) -> None:
        self.units = units
        self.channels = channels

    def methods(self, service: ServiceDescriptor) -> dict:
        """The behavior of each of `service`'s methods in the table, for the runtime's forwarder."""
        target = TARGETS[service]
        channel = self.channels[target]
        behaviors = {}
        for name, rule in admin_api.TABLE[service.full_name].items():
            method = service.methods_by_name[name]
            path = f"/{service.full_name}/{name}"
            if method.server_streaming:
                behaviors[name] = self._stream(target, rule, path, channel.unary_stream(path))
            else:
                behaviors[name] = self._unary(target, rule, method, channel.unary_unary(path))
        return behaviors

    def _unary(self, target: str, rule: admin_api.Rule, method: MethodDescriptor, forward):
        action = f"{method.containing_service.full_name}/{method.name}"
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)

        async def behavior(raw: bytes, context) -> bytes:
            _allow(rule, method.name)
            try:
                answer = await forward(raw)
            except grpc.aio.AioRpcError as failure:
                raise translate(target, failure).error from None
            if rule.mutates:
                async with self.units.change() as uow:
                    await admin.record_forwarded(
                        uow, action, request_type.FromString(raw), response_type.FromString(answer)
                    )
            return answer

        return behavior

    def _stream(self, target: str, rule: admin_api.Rule, path: str, forward):
        name = path.rsplit("/", 1)[-1]

        async def behavior(raw: bytes, context):
            _allow(rule, name)
            try:
                async for chunk in forward(raw):
                    yield chunk
            except grpc.aio.AioRpcError as failure:
                raise translate(target, failure).error from None

        return behavior
