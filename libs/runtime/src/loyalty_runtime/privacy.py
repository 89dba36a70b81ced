"""How a service that keeps customer data takes part in GDPR export, erasure and merges.

A definition with `customer_data=CustomerData(export, erase, merge)` gets from the runtime (wiring.py):
- `loyalty.common.v1.CustomerDataService/ExportCustomerData`: `export(uow, customer_id)` in a read
  unit of work of the caller's tenant; its records are answered packed as google.protobuf.Any, with
  the service's name. A customer the service does not know (or another tenant's) has no records.
- with `erase`: a subscription to the profile service's `customer.erased` events; `erase(uow,
  customer_id)` forgets the customer's personal data, and in the same transaction the runtime
  forgets the stored idempotent answers about them (uow.concerns), so no replay returns them.
- with `merge`: a subscription to `customer.merged`; `merge(uow, survivor_id, merged_id)` moves the
  duplicate's data to the survivor.
Both arrive once per event and in order per customer (consumers.py). The profile service is where
those events come from, so it gives only `export`.
"""

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from loyalty.common.v1 import customer_data_pb2
from loyalty.profile.v1 import events_pb2 as profile_events
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_runtime.events import Subscription
from loyalty_runtime.uow import UnitOfWork, UnitsOfWork

PROFILE_EVENTS = "profile.events"
CUSTOMER_DATA_SERVICE = customer_data_pb2.DESCRIPTOR.services_by_name["CustomerDataService"]


@dataclass(frozen=True)
class CustomerData:
    """`export(uow, customer_id)` returns the service's records about the customer (protobuf
    messages); `erase(uow, customer_id)` forgets their personal data; `merge(uow, survivor_id,
    merged_id)` moves a duplicate's data to the survivor."""

    export: Callable[..., Awaitable[Sequence[Message]]]
    erase: Callable[..., Awaitable[None]] | None = None
    merge: Callable[..., Awaitable[None]] | None = None

    def subscriptions(self) -> list[Subscription]:
        """The profile events this service handles through its hooks."""
        subscriptions = []
        if self.erase is not None:
            subscriptions.append(Subscription(PROFILE_EVENTS, profile_events.CustomerErased, self._erased))
        if self.merge is not None:
            subscriptions.append(Subscription(PROFILE_EVENTS, profile_events.CustomerMerged, self._merged))
        return subscriptions

    async def _erased(self, uow: UnitOfWork, event: profile_events.CustomerErased) -> None:
        await self.erase(uow, event.customer_id)
        await uow.erase_answers(event.customer_id)

    async def _merged(self, uow: UnitOfWork, event: profile_events.CustomerMerged) -> None:
        await self.merge(uow, event.survivor_customer_id, event.merged_customer_id)


class CustomerDataServicer:
    """ExportCustomerData for one service (the runtime's, not the service's own servicer)."""

    def __init__(
        self, service: str, units: UnitsOfWork, export: Callable[..., Awaitable[Sequence[Message]]]
    ) -> None:
        self.service = service
        self.units = units
        self.export = export

    async def ExportCustomerData(
        self, request: customer_data_pb2.ExportCustomerDataRequest, context
    ) -> customer_data_pb2.ExportCustomerDataResponse:
        if not request.customer_id.strip():
            raise InvalidArgument(Reason.INVALID_ARGUMENT, "customer_id is required", field="customer_id")
        async with self.units.read() as uow:
            records = await self.export(uow, request.customer_id)
        response = customer_data_pb2.ExportCustomerDataResponse(service=self.service)
        for record in records:
            response.records.add().Pack(record)
        return response
