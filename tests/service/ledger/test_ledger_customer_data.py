"""The ledger's part in GDPR export, erasure and merges: the use cases the runtime calls for
`ExportCustomerData` and profile's `customer.erased` / `customer.merged`, run in a unit of work of the
running server (and erasure end to end, from the event on profile's stream), on the real database."""

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from loyalty.ledger.v1 import ledger_pb2 as pb, ledger_service_pb2 as api
from loyalty.profile.v1 import events_pb2 as profile_events
from loyalty_ledger import app
from loyalty_ledger.service import DEFINITION
from loyalty_runtime.context import CallContext, bind_call, unbind_call
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.events import Envelope, RedisStreamsBroker
from tests.conftest import RpcFailure, rpc_failure
from tests.service.ledger.helpers import journal_checks, key


@contextlib.asynccontextmanager
async def unit_of(ledger, tenant: str):
    """A unit of work of the running server, for `tenant` (as the runtime gives its hooks)."""
    token = bind_call(CallContext(tenant_id=tenant, principal="test"))
    try:
        async with ledger.server.resources.units.change() as uow:
            yield uow
    finally:
        unbind_call(token)


def stamp(moment: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)
    return result


def test_the_ledger_declares_its_customer_data_hooks():
    hooks = DEFINITION.customer_data
    assert (hooks.export, hooks.erase, hooks.merge) == (
        app.export_customer_data,
        app.erase_customer,
        app.merge_customers,
    )


async def test_export_gives_the_customers_accounts_entries_and_holds(ledger, tenant, other_tenant):
    first, second = await tenant.program(), await tenant.program()
    mine = [await tenant.account(first, "cust-1"), await tenant.account(second, "cust-1")]
    theirs = await tenant.account(first, "cust-2")
    earned = await tenant.earn(mine[0], 70)
    await tenant.earn(theirs, 5)
    hold = await tenant.hold(mine[0], 20)
    async with unit_of(ledger, tenant.tenant) as uow:
        records = await app.export_customer_data(uow, "cust-1")
    accounts = [r for r in records if isinstance(r, pb.Account)]
    entries = [r for r in records if isinstance(r, pb.Entry)]
    holds = [r for r in records if isinstance(r, pb.Hold)]
    assert sorted(a.account_id for a in accounts) == sorted(mine)
    assert {a.customer_id for a in accounts} == {"cust-1"}
    assert [e.entry_id for e in entries] == [earned.entry.entry_id]
    assert [h.hold_id for h in holds] == [hold.hold_id]
    assert len(records) == 4
    async with unit_of(ledger, other_tenant.tenant) as uow:
        assert await app.export_customer_data(uow, "cust-1") == []


async def test_erasure_forgets_the_stored_answers_about_the_customer(ledger, tenant, ledger_settings):
    """profile's `customer.erased`, as it arrives on its stream, reaches the running ledger."""
    program = await tenant.program()
    opening = api.OpenAccountRequest(program_id=program.program_id, customer_id="gone", idempotency_key=key())
    account = (await tenant.OpenAccount(opening)).account.account_id
    earning = api.EarnPointsRequest(account_id=account, amount=10, idempotency_key=key())
    await tenant.EarnPoints(earning)
    staying = await tenant.OpenAccount(
        api.OpenAccountRequest(program_id=program.program_id, customer_id="stays", idempotency_key=key())
    )
    erased = profile_events.CustomerErased(customer_id="gone")
    await RedisStreamsBroker(ledger.server.resources.redis).publish(
        "profile.events",
        [
            Envelope(
                event_id=f"profile.events:test-{key()}",
                event_type="customer.erased",
                tenant_id=tenant.tenant,
                key="gone",
                payload=erased.SerializeToString(),
                occurred_at=datetime.now(UTC),
                trace_parent=None,
            )
        ],
    )
    async with asyncio.timeout(15):
        while (await rpc_failure_or_none(tenant.OpenAccount(opening))) != "CUSTOMER_ERASED":
            await asyncio.sleep(0.05)
    failure = await rpc_failure(tenant.EarnPoints(earning))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CUSTOMER_ERASED")
    connection = await asyncpg.connect(asyncpg_dsn(ledger_settings.database_url))
    try:
        kept = await connection.fetch(
            "SELECT subject FROM ledger.idempotency_keys WHERE tenant_id = $1 AND response IS NOT NULL",
            tenant.tenant,
        )
    finally:
        await connection.close()
    assert "gone" not in {row["subject"] for row in kept} and "stays" in {row["subject"] for row in kept}
    assert staying.account.customer_id == "stays"


async def rpc_failure_or_none(call) -> str | None:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return RpcFailure(error).reason
    return None


async def test_a_merge_moves_balances_and_lots_to_the_survivor_once(ledger, tenant, database_url):
    now = datetime.now(UTC)
    first = await tenant.program(
        expiry_policy=pb.ExpiryPolicy(rule=pb.EXPIRY_RULE_MONTHS_AFTER_EARN, months=6)
    )
    second = await tenant.program()
    duplicate = await tenant.account(first, "dup")
    survivor = await tenant.account(first, "keep")
    elsewhere = await tenant.account(second, "dup")
    await tenant.earn(duplicate, 40, expire_time=stamp(now + timedelta(days=30)))
    await tenant.earn(duplicate, 60)
    await tenant.earn(duplicate, 15, available_time=stamp(now + timedelta(days=3)))
    await tenant.earn(survivor, 5)
    await tenant.earn(elsewhere, 7)
    hold = await tenant.hold(duplicate, 25)

    async with unit_of(ledger, tenant.tenant) as uow:
        await app.merge_customers(uow, "keep", "dup")
    kept = await tenant.balance(survivor)
    assert (kept.posted, kept.pending, kept.held) == (105, 15, 0)
    gone = await tenant.balance(duplicate)
    assert (gone.posted, gone.pending, gone.held) == (0, 0, 0)
    voided = await tenant.GetHold(api.GetHoldRequest(hold_id=hold.hold_id))
    assert voided.hold.state == pb.HOLD_STATE_VOIDED
    opened = await tenant.GetAccount(api.GetAccountRequest(program_id=second.program_id, customer_id="keep"))
    assert opened.account.balance.posted == 7
    # The dates moved with the points: 40 expiring in 30 days, 60 (and the survivor's 5) in 6 months.
    assert sorted(x.amount for x in kept.expiring) == [5, 40, 60]
    statement = await tenant.ListStatementLines(api.ListStatementLinesRequest(account_id=survivor))
    assert statement.lines[0].type == pb.ENTRY_TYPE_MERGE and statement.lines[0].amount == 115

    async with unit_of(ledger, tenant.tenant) as uow:
        await app.merge_customers(uow, "keep", "dup")  # delivered again
    again = await tenant.ListStatementLines(api.ListStatementLinesRequest(account_id=survivor))
    assert len(again.lines) == len(statement.lines)
    assert (await tenant.balance(survivor)).posted == 105
    await journal_checks(database_url)


@pytest.mark.parametrize("customer", ["nobody", "keep"])
async def test_merging_nothing_or_into_oneself_changes_nothing(ledger, tenant, customer):
    program = await tenant.program()
    account = await tenant.account(program, "keep")
    await tenant.earn(account, 9)
    async with unit_of(ledger, tenant.tenant) as uow:
        await app.merge_customers(uow, "keep", customer)
    assert (await tenant.balance(account)).posted == 9
