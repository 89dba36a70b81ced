"""The profile service as this service needs it: who the customer is, how to reach them, what
they agreed to; and withdrawing a marketing consent (one-click unsubscribe). Over gRPC with the
runtime's internal channel (tenant, principal and deadline carried along)."""

from dataclasses import dataclass

import grpc

from loyalty.common.v1 import customer_pb2
from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as profile_api, profile_service_pb2_grpc
from loyalty_notification.domain.model import Channel, Purpose
from loyalty_notification.domain.policy import ConsentAnswer
from loyalty_runtime.errors import Reason, Unavailable

PUSH_NAMESPACE = "push"  # an EXTERNAL identifier in this namespace is a device's push token

CONSENT_CHANNELS = {
    profile_pb2.CONSENT_CHANNEL_EMAIL: Channel.EMAIL,
    profile_pb2.CONSENT_CHANNEL_SMS: Channel.SMS,
    profile_pb2.CONSENT_CHANNEL_PUSH: Channel.PUSH,
    # A webhook hands the message to a messenger or marketing tool that reaches the customer.
    profile_pb2.CONSENT_CHANNEL_MESSENGER: Channel.WEBHOOK,
}
CONSENT_CHANNEL_OF = {channel: number for number, channel in CONSENT_CHANNELS.items()}
PURPOSES = {
    profile_pb2.CONSENT_PURPOSE_MARKETING: Purpose.MARKETING,
    profile_pb2.CONSENT_PURPOSE_TRANSACTIONAL: Purpose.TRANSACTIONAL,
}


@dataclass(frozen=True)
class Customer:
    customer_id: str
    given_name: str
    family_name: str
    locale: str
    # IANA zone; "" when the profile has none (the quiet-hours policy's default zone applies).
    time_zone: str
    contacts: dict[Channel, str]
    consents: tuple[ConsentAnswer, ...]


def _contacts(customer: profile_pb2.Customer) -> dict[Channel, str]:
    contacts: dict[Channel, str] = {}
    for identifier in customer.identifiers:
        if identifier.type == customer_pb2.IDENTIFIER_TYPE_EMAIL:
            contacts.setdefault(Channel.EMAIL, identifier.value)
        elif identifier.type == customer_pb2.IDENTIFIER_TYPE_PHONE:
            contacts.setdefault(Channel.SMS, identifier.value)
        elif (
            identifier.type == customer_pb2.IDENTIFIER_TYPE_EXTERNAL
            and identifier.namespace == PUSH_NAMESPACE
        ):
            contacts.setdefault(Channel.PUSH, identifier.value)
    return contacts


def _customer(customer: profile_pb2.Customer) -> Customer | None:
    if customer.status != profile_pb2.CUSTOMER_STATUS_ACTIVE:
        return None
    return Customer(
        customer_id=customer.customer_id,
        given_name=customer.given_name,
        family_name=customer.family_name,
        locale=customer.locale,
        time_zone=customer.time_zone,
        contacts=_contacts(customer),
        consents=tuple(
            ConsentAnswer(CONSENT_CHANNELS[c.channel], PURPOSES[c.purpose], c.granted)
            for c in customer.consents
            if c.channel in CONSENT_CHANNELS and c.purpose in PURPOSES
        ),
    )


def _unavailable(error: grpc.aio.AioRpcError) -> Unavailable:
    return Unavailable(Reason.UNAVAILABLE, f"the profile service did not answer ({error.code().name})")


class Directory:
    def __init__(self, channel: grpc.aio.Channel, timeout_seconds: float = 2.0) -> None:
        self.stub = profile_service_pb2_grpc.ProfileServiceStub(channel)
        self.timeout = timeout_seconds

    async def customer(self, ref: customer_pb2.CustomerRef) -> Customer | None:
        """The active customer `ref` points at; None when unknown, erased or another tenant's."""
        try:
            if ref.HasField("identifier"):
                answer = await self.stub.LookupCustomer(
                    profile_api.LookupCustomerRequest(identifier=ref.identifier), timeout=self.timeout
                )
            else:
                answer = await self.stub.GetCustomer(
                    profile_api.GetCustomerRequest(customer_id=ref.customer_id), timeout=self.timeout
                )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise _unavailable(error) from None
        return _customer(answer.customer)

    async def withdraw_marketing(self, customer_id: str, channel: Channel, idempotency_key: str) -> bool:
        """False when the tenant has no such customer; an erased one counts as withdrawn (erasure
        withdrew every consent)."""
        consent = profile_pb2.Consent(
            channel=CONSENT_CHANNEL_OF[channel],
            purpose=profile_pb2.CONSENT_PURPOSE_MARKETING,
            granted=False,
            source="notification:unsubscribe-link",
        )
        try:
            await self.stub.SetConsents(
                profile_api.SetConsentsRequest(
                    idempotency_key=idempotency_key, customer_id=customer_id, consents=[consent]
                ),
                timeout=self.timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return False
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return True
            raise _unavailable(error) from None
        return True
