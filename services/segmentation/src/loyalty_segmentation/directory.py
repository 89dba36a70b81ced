"""The profile service as segmentation reads it: one customer after an event, the attribute schema,
and the streamed bulk export for a backfill. Calls run inside a bound call (the job's tenant)."""

from collections.abc import AsyncIterator

import grpc

from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as api, profile_service_pb2_grpc
from loyalty_segmentation.domain.profiles import DEFINITION_KINDS

EXPORT_TIMEOUT_SECONDS = 20.0


class ProfileDirectory:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = profile_service_pb2_grpc.ProfileServiceStub(channel)

    async def customer(self, customer_id: str) -> profile_pb2.Customer | None:
        """The active profile, or None when profile does not know it (erased, merged away, or
        not a profile id at all)."""
        try:
            response = await self.stub.GetCustomer(api.GetCustomerRequest(customer_id=customer_id))
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise
        customer = response.customer
        if customer.customer_id != customer_id or customer.status != profile_pb2.CUSTOMER_STATUS_ACTIVE:
            return None
        return customer

    async def attribute_kinds(self) -> dict[str, str]:
        kinds, token = {}, ""
        while True:
            page = await self.stub.ListAttributeDefinitions(
                api.ListAttributeDefinitionsRequest(page_size=200, page_token=token)
            )
            kinds |= {
                d.name: DEFINITION_KINDS[d.type] for d in page.definitions if d.type in DEFINITION_KINDS
            }
            token = page.next_page_token
            if not token:
                return kinds

    async def export(self, after: str, page_size: int) -> AsyncIterator[api.ExportCustomersResponse]:
        call = self.stub.ExportCustomers(
            api.ExportCustomersRequest(page_size=page_size, start_after_customer_id=after),
            timeout=EXPORT_TIMEOUT_SECONDS,
        )
        try:
            async for page in call:
                yield page
        finally:
            call.cancel()
