"""The history fraud keeps about a customer: exported, moved to the survivor of a merge, erased."""

from loyalty.common.v1 import customer_data_pb2, customer_data_pb2_grpc
from loyalty.fraud.v1 import assessment_pb2 as apb, fraud_service_pb2 as api, rule_pb2 as rpb
from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty_fraud import app
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from tests.service.fraud.helpers import earn, hashed, pattern

ALLOW, REVIEW = apb.DECISION_ALLOW, apb.DECISION_REVIEW
DEVICE = hashed("their-phone")


async def in_tenant(fraud, tenant: str, handler, *args):
    """Run a hook the way the consumer does: one unit of work of the event's tenant."""
    token = bind_call(CallContext(tenant_id=tenant, principal="test-consumer"))
    try:
        async with fraud.server.resources.units.change() as uow:
            return await handler(uow, *args)
    finally:
        unbind_call(token)


async def usual_fires(tenant, customer: str) -> bool:
    answer = await tenant.AssessEarn(earn(1000, customer=customer, dry_run=True))
    return answer.assessment.decision == REVIEW


async def test_history_is_exported_merged_and_erased(fraud, tenant, other_tenant):
    for client in (tenant, other_tenant):
        await client.rule(pattern(rpb.PATTERN_KIND_EARN_ABOVE_CUSTOMER_USUAL, max_value=500, min_value=4))
    signals = apb.RiskSignals(device_hash=DEVICE)
    for customer in ("survivor", "survivor", "dup", "dup"):
        await tenant.earn(100, customer=customer, signals=signals if customer == "dup" else None)
    await other_tenant.earn(100, customer="dup")
    assert not await usual_fires(tenant, "survivor")  # two earns each: no usual yet

    await in_tenant(fraud, tenant.tenant, app.merge_customers, "survivor", "dup")
    assert await usual_fires(tenant, "survivor")  # four earns of 100 together
    assert not await usual_fires(tenant, "dup")

    stub = customer_data_pb2_grpc.CustomerDataServiceStub(fraud.channel)
    export = await stub.ExportCustomerData(
        customer_data_pb2.ExportCustomerDataRequest(customer_id="survivor"), metadata=tenant.md
    )
    assessments, prints = [], []
    for record in export.records:
        if record.Is(apb.Assessment.DESCRIPTOR):
            found = apb.Assessment()
            record.Unpack(found)
            assessments.append(found)
        else:
            found = apb.PartyFingerprints()
            record.Unpack(found)
            prints.append(found)
    assert len(assessments) == 2 and {a.customer_id for a in assessments} == {"survivor"}
    assert [list(p.device_hashes) for p in prints] == [[DEVICE]]  # the duplicate's device moved

    await in_tenant(fraud, tenant.tenant, app.erase_customer, "survivor")
    assert not await usual_fires(tenant, "survivor")
    export = await stub.ExportCustomerData(
        customer_data_pb2.ExportCustomerDataRequest(customer_id="survivor"), metadata=tenant.md
    )
    assert all(r.Is(apb.Assessment.DESCRIPTOR) for r in export.records)  # decisions stay, history went
    # Nothing of another tenant moved or went.
    assert len(await in_tenant(fraud, other_tenant.tenant, app.export_customer_data, "dup")) == 1


async def test_a_customers_code_lockouts_follow_the_merge_and_go_with_the_erasure(fraud, tenant):
    for key, value in (
        (gateway_events.CODE_ATTEMPT_KEY_CUSTOMER, "dup"),
        (gateway_events.CODE_ATTEMPT_KEY_TERMINAL, "till-1"),
    ):
        locked = gateway_events.CodeAttemptsLocked(
            key=key, value=value, invalid_attempts=11, max_invalid_attempts=10
        )
        await in_tenant(fraud, tenant.tenant, app.code_attempts_locked, locked)
    await in_tenant(fraud, tenant.tenant, app.merge_customers, "survivor", "dup")
    customers = await tenant.ListCodeLockouts(api.ListCodeLockoutsRequest(key=rpb.VELOCITY_KEY_CUSTOMER))
    assert [(lockout.value, lockout.invalid_attempts) for lockout in customers.lockouts] == [("survivor", 11)]
    await in_tenant(fraud, tenant.tenant, app.erase_customer, "survivor")
    left = await tenant.ListCodeLockouts(api.ListCodeLockoutsRequest())
    assert [(lockout.key, lockout.value) for lockout in left.lockouts] == [
        (rpb.VELOCITY_KEY_TERMINAL, "till-1")
    ]


async def test_history_older_than_the_longest_window_is_forgotten(fraud, tenant, fraud_settings):
    import asyncpg

    from loyalty_runtime.db import asyncpg_dsn

    await tenant.earn(100, customer="old")
    fraud.clock.advance(days=89)
    await tenant.earn(100, customer="recent")
    fraud.clock.advance(days=1, seconds=1)  # "old" is now 90 days and a second ago
    assert await app.forget_old_history(fraud.server.resources.units) >= 1
    connection = await asyncpg.connect(asyncpg_dsn(fraud_settings.database_url))
    try:
        left = await connection.fetch(
            "SELECT customer_id FROM fraud.activity WHERE tenant_id = $1", tenant.tenant
        )
    finally:
        await connection.close()
    assert [row["customer_id"] for row in left] == ["recent"]
