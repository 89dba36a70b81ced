"""The streamed bulk export: every active customer of the caller's tenant, in id order, in pages,
resumable after any id; another tenant's customers never appear; bad input is refused."""

import grpc

from loyalty.profile.v1 import profile_service_pb2 as api
from tests.conftest import rpc_failure
from tests.service.profile.conftest import enrol, tenant_of


async def exported(stub, tenant, **request) -> list[api.ExportCustomersResponse]:
    return [
        page async for page in stub.ExportCustomers(api.ExportCustomersRequest(**request), metadata=tenant)
    ]


async def test_the_export_streams_every_customer_of_the_tenant_in_pages_and_resumes(stub, tenant, profile):
    ids = sorted([(await enrol(stub, tenant, locale="de-AT")).customer_id for _ in range(7)])
    other = profile.metadata(f"other-{tenant_of(tenant)}")
    await enrol(stub, other)
    pages = await exported(stub, tenant, page_size=3)
    assert [len(p.customers) for p in pages] == [3, 3, 1]
    assert [c.customer_id for p in pages for c in p.customers] == ids
    assert [p.last_customer_id for p in pages] == [ids[2], ids[5], ids[6]]
    assert pages[0].customers[0].locale == "de-AT"
    resumed = await exported(stub, tenant, page_size=3, start_after_customer_id=ids[4])
    assert [c.customer_id for p in resumed for c in p.customers] == ids[5:]
    assert await exported(stub, tenant, start_after_customer_id=ids[-1]) == []


async def test_an_export_refuses_a_bad_start_and_page_size(stub, tenant):
    failure = await rpc_failure(exported(stub, tenant, start_after_customer_id="not-a-uuid"))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["start_after_customer_id"])
    failure = await rpc_failure(exported(stub, tenant, page_size=-1))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_size"])
