"""AdjustPoints through the real gateway and services: support and admin users credit and debit a
customer's points by hand, as ledger transfers from and to the programme's adjustment account,
within the tenant's limits per adjustment and per user and day (concurrent adjustments cannot pass
the day's limit together), audited with ids only, and once per idempotency key."""

import asyncio
import uuid

import grpc
import pytest

from loyalty.gateway.v1 import admin_pb2, admin_service_pb2 as admin_api, admin_service_pb2_grpc
from loyalty.ledger.v1 import ledger_service_pb2 as ledger_api, ledger_service_pb2_grpc
from loyalty_gateway.service import DEFINITION
from loyalty_runtime.testing import internal_metadata, running_service
from tests.conftest import rpc_failure
from tests.service.gateway.conftest import bearer, provision, settings_of
from tests.service.gateway.test_gateway_checkout import enrol

REASON = "goodwill after a late delivery"


@pytest.fixture
async def tenant(shop, services):
    return await provision(shop, services)


async def set_limits(shop, tenant, per_adjustment: int, per_day: int) -> None:
    await shop.admin.UpdateTenantSettings(
        admin_api.UpdateTenantSettingsRequest(
            idempotency_key=uuid.uuid4().hex,
            settings=settings_of(
                tenant, adjustment_limit_points=per_adjustment, daily_adjustment_limit_points=per_day
            ),
        ),
        metadata=tenant.auth,
    )


def adjust(shop, auth, customer_id: str, amount: int, key: str | None = None, **fields):
    return shop.admin.AdjustPoints(
        admin_api.AdjustPointsRequest(
            idempotency_key=key or uuid.uuid4().hex,
            customer_id=customer_id,
            amount=amount,
            reason=fields.pop("reason", REASON),
            **fields,
        ),
        metadata=auth,
    )


def ledger(services, tenant):
    stub = ledger_service_pb2_grpc.LedgerServiceStub(services["ledger"].channel)
    return stub, internal_metadata(services["ledger"].server.settings, tenant.tenant_id)


async def balance(services, tenant, customer_id: str) -> int:
    stub, metadata = ledger(services, tenant)
    try:
        found = await stub.GetAccount(
            ledger_api.GetAccountRequest(program_id=tenant.program_id, customer_id=customer_id),
            metadata=metadata,
        )
    except grpc.aio.AioRpcError as error:
        assert error.code() is grpc.StatusCode.NOT_FOUND
        return 0
    return found.account.balance.available


async def audit_actions(shop, tenant) -> list:
    response = await shop.admin.ListAuditRecords(
        admin_api.ListAuditRecordsRequest(page_size=1000), metadata=tenant.auth
    )
    return [r for r in response.records if r.action == "AdjustPoints"]


async def support(tenant) -> tuple:
    return bearer(await tenant.create_user(f"support-{uuid.uuid4().hex[:6]}", [admin_pb2.ADMIN_ROLE_SUPPORT]))


async def test_credit_and_debit_move_points_through_the_adjustment_account_once_per_key(
    shop, services, tenant
):
    customer_id = await enrol(shop, tenant)
    agent = await support(tenant)
    key = uuid.uuid4().hex
    credited = await adjust(shop, agent, customer_id, 300, key)
    assert await balance(services, tenant, customer_id) == 300
    assert credited.adjusted_today_points == 300 and credited.daily_limit_points == 20_000
    assert await adjust(shop, agent, customer_id, 300, key) == credited  # a retry: the first answer
    assert await balance(services, tenant, customer_id) == 300
    reused = await rpc_failure(adjust(shop, agent, customer_id, 301, key))
    assert (reused.code, reused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")

    debited = await adjust(shop, agent, customer_id, -120)
    assert await balance(services, tenant, customer_id) == 180
    assert debited.account_id == credited.account_id
    assert debited.adjusted_today_points == 420  # both directions count

    stub, metadata = ledger(services, tenant)
    lines = await stub.ListStatementLines(
        ledger_api.ListStatementLinesRequest(account_id=credited.account_id), metadata=metadata
    )
    assert sorted(line.amount for line in lines.lines) == [-120, 300]
    assert {line.reason for line in lines.lines} == {REASON}
    program = await stub.GetProgram(
        ledger_api.GetProgramRequest(program_id=tenant.program_id), metadata=metadata
    )
    adjustment = await stub.GetAccount(
        ledger_api.GetAccountRequest(account_id=program.program.system_accounts.adjustment_account_id),
        metadata=metadata,
    )
    assert adjustment.account.balance.posted == -180  # the books balance

    records = await audit_actions(shop, tenant)
    assert len(records) == 2
    for record in records:
        assert REASON not in record.resource and f"customer_id={customer_id}" in record.resource
        assert {"amount", "customer_id", "reason"} <= set(record.fields)
    assert f"entry_id={credited.entry_id}" in " ".join(r.resource for r in records)
    verified = await shop.admin.VerifyAuditLog(admin_api.VerifyAuditLogRequest(), metadata=tenant.auth)
    assert verified.intact


async def test_only_support_and_admin_may_adjust(shop, services, tenant):
    customer_id = await enrol(shop, tenant)
    for role in (admin_pb2.ADMIN_ROLE_MARKETER, admin_pb2.ADMIN_ROLE_ANALYST, admin_pb2.ADMIN_ROLE_AUDITOR):
        token = await tenant.create_user(f"u-{uuid.uuid4().hex[:6]}", [role])
        denied = await rpc_failure(adjust(shop, bearer(token), customer_id, 10))
        assert denied.code is grpc.StatusCode.PERMISSION_DENIED
    denied = await rpc_failure(adjust(shop, tenant.till_auth, customer_id, 10))
    assert denied.code is grpc.StatusCode.PERMISSION_DENIED
    await adjust(shop, tenant.auth, customer_id, 10)
    assert await balance(services, tenant, customer_id) == 10


async def test_beyond_a_limit_nothing_is_posted(shop, services, tenant):
    customer_id = await enrol(shop, tenant)
    await set_limits(shop, tenant, per_adjustment=100, per_day=250)
    agent = await support(tenant)
    too_big = await rpc_failure(adjust(shop, agent, customer_id, -101))
    assert (too_big.code, too_big.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ADJUSTMENT_LIMIT_EXCEEDED",
    )
    await adjust(shop, agent, customer_id, 100)
    await adjust(shop, agent, customer_id, 100)
    over_day = await rpc_failure(adjust(shop, agent, customer_id, 51))
    assert (over_day.code, over_day.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "ADJUSTMENT_LIMIT_EXCEEDED",
    )
    last = await adjust(shop, agent, customer_id, 50)
    assert last.adjusted_today_points == 250
    assert await balance(services, tenant, customer_id) == 250
    assert len(await audit_actions(shop, tenant)) == 2 + 1
    # Another user has a day of their own.
    await adjust(shop, await support(tenant), customer_id, 100)
    assert await balance(services, tenant, customer_id) == 350


async def test_a_refused_adjustment_gives_its_points_back_to_the_day(shop, services, tenant):
    customer_id = await enrol(shop, tenant)
    await set_limits(shop, tenant, per_adjustment=100, per_day=100)
    agent = await support(tenant)
    short = await rpc_failure(adjust(shop, agent, customer_id, -100))
    assert (short.code, short.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_BALANCE")
    foreign = await enrol(shop, await provision(shop, services))
    for unknown in (foreign, str(uuid.uuid4()), "not-a-customer"):
        missing = await rpc_failure(adjust(shop, agent, unknown, 10))
        assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, "CUSTOMER_NOT_FOUND")
    assert (await adjust(shop, agent, customer_id, 100)).adjusted_today_points == 100
    assert len(await audit_actions(shop, tenant)) == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"reason": "  "}, "reason"),
        ({"customer_id": ""}, "customer_id"),
        ({"idempotency_key": ""}, "idempotency_key"),
    ],
)
async def test_bad_input_is_refused(shop, services, tenant, fields, field):
    request = admin_api.AdjustPointsRequest(
        idempotency_key=uuid.uuid4().hex, customer_id="c", amount=5, reason=REASON
    )
    for name, value in fields.items():
        setattr(request, name, value)
    refused = await rpc_failure(shop.admin.AdjustPoints(request, metadata=tenant.auth))
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.fields == [field]


async def test_concurrent_adjustments_never_pass_a_users_day(shop, services, tenant):
    customer_id = await enrol(shop, tenant)
    await set_limits(shop, tenant, per_adjustment=100, per_day=1_000)
    agents = [await support(tenant), await support(tenant)]
    calls = [adjust(shop, agent, customer_id, 100) for agent in agents for _ in range(14)]
    answers = await asyncio.gather(*calls, return_exceptions=True)
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert all(a.code() is grpc.StatusCode.RESOURCE_EXHAUSTED for a in refused), refused
    assert len(refused) == 2 * 4
    assert await balance(services, tenant, customer_id) == 2 * 1_000
    done = [a for a in answers if not isinstance(a, BaseException)]
    assert sorted(a.adjusted_today_points for a in done) == sorted([100 * n for n in range(1, 11)] * 2)


async def test_tenant_limits_are_checked(shop, tenant):
    refused = await rpc_failure(
        shop.admin.UpdateTenantSettings(
            admin_api.UpdateTenantSettingsRequest(
                idempotency_key=uuid.uuid4().hex,
                settings={
                    "default_program_id": "p",
                    "currency_code": "EUR",
                    "time_zone": "Europe/Vienna",
                    "daily_adjustment_limit_points": -1,
                },
            ),
            metadata=tenant.auth,
        )
    )
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.fields == ["settings.daily_adjustment_limit_points"]


async def test_an_adjustment_the_ledger_did_not_answer_is_finished_by_its_retry(
    shop, shop_settings, services, tenant
):
    customer_id = await enrol(shop, tenant)
    agent = await support(tenant)
    key = uuid.uuid4().hex
    no_ledger = shop_settings.model_copy(update={"ledger_target": "127.0.0.1:1"})
    async with running_service(DEFINITION, no_ledger) as cut_off:
        stub = admin_service_pb2_grpc.AdminServiceStub(cut_off.channel)
        failed = await rpc_failure(
            stub.AdjustPoints(
                admin_api.AdjustPointsRequest(
                    idempotency_key=key, customer_id=customer_id, amount=70, reason=REASON
                ),
                metadata=agent,
            )
        )
    assert failed.code is grpc.StatusCode.UNAVAILABLE
    assert await balance(services, tenant, customer_id) == 0
    finished = await adjust(shop, agent, customer_id, 70, key)
    assert finished.adjusted_today_points == 70  # counted once, not again by the retry
    assert await balance(services, tenant, customer_id) == 70
    assert await adjust(shop, agent, customer_id, 70, key) == finished
    assert len(await audit_actions(shop, tenant)) == 1
