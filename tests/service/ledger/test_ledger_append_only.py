"""Journal entries, postings and the checkout tables cannot be edited, whoever asks: the database
refuses UPDATE, DELETE and TRUNCATE there (issue 7: the service role could UPDATE, DELETE and
TRUNCATE postings). The ledger itself never needs to: its tests all pass with the triggers in place."""

import asyncpg
import pytest

from loyalty.ledger.v1 import ledger_pb2 as pb, ledger_service_pb2 as api
from loyalty_ledger.models import APPEND_ONLY_TABLES, SCHEMA
from loyalty_runtime import append_only
from loyalty_runtime.db import asyncpg_dsn
from tests.service.ledger.helpers import key

EDITS = [
    "UPDATE ledger.journal_entries SET amount = amount + 1 WHERE tenant_id = $1",
    "UPDATE ledger.journal_entries SET reason = 'edited' WHERE tenant_id = $1",
    "DELETE FROM ledger.journal_entries WHERE tenant_id = $1",
    "UPDATE ledger.postings SET amount = 0 WHERE tenant_id = $1",
    "DELETE FROM ledger.postings WHERE tenant_id = $1",
    "UPDATE ledger.checkouts SET account_id = account_id WHERE tenant_id = $1",
    "DELETE FROM ledger.checkout_lines WHERE tenant_id = $1",
    "UPDATE ledger.checkout_returns SET quantity = 1 WHERE tenant_id = $1",
    "DELETE FROM ledger.checkout_returns WHERE tenant_id = $1",
]
TRUNCATES = [
    "TRUNCATE ledger.postings",
    "TRUNCATE ledger.journal_entries CASCADE",
    "TRUNCATE ledger.checkout_returns",
    "TRUNCATE ledger.checkouts CASCADE",
]


@pytest.fixture(scope="module")
async def books(ledger):
    """A tenant with entries, postings, a checkout and a return to try to edit."""
    tenant = f"ao-{key()[:8]}"
    md = ledger.metadata(tenant)
    program = (
        await ledger.stub.CreateProgram(
            api.CreateProgramRequest(
                program=pb.Program(asset_kind=pb.ASSET_KIND_POINTS), idempotency_key=key()
            ),
            metadata=md,
        )
    ).program
    account = (
        await ledger.stub.OpenAccount(
            api.OpenAccountRequest(program_id=program.program_id, customer_id="c", idempotency_key=key()),
            metadata=md,
        )
    ).account.account_id
    earned = await ledger.stub.EarnPoints(
        api.EarnPointsRequest(account_id=account, amount=100, idempotency_key=key()), metadata=md
    )
    await ledger.stub.ReverseEntry(
        api.ReverseEntryRequest(entry_id=earned.entry.entry_id, amount=10, idempotency_key=key()), metadata=md
    )
    await ledger.stub.SettleCheckout(
        api.SettleCheckoutRequest(
            account_id=account,
            checkout_id="chk",
            lines=[pb.CheckoutLine(line_id="a", quantity=2, earn_points=20)],
            idempotency_key=key(),
        ),
        metadata=md,
    )
    await ledger.stub.ReturnCheckoutLines(
        api.ReturnCheckoutLinesRequest(
            checkout_id="chk", lines=[pb.CheckoutLineReturn(line_id="a", quantity=1)], idempotency_key=key()
        ),
        metadata=md,
    )
    return tenant


@pytest.fixture
async def connection(ledger_settings):
    connection = await asyncpg.connect(asyncpg_dsn(ledger_settings.database_url))
    yield connection
    await connection.close()


async def _refused(connection: asyncpg.Connection, statement: str, *args) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        async with connection.transaction():
            await connection.execute(statement, *args)


@pytest.mark.parametrize("statement", EDITS)
async def test_rows_of_append_only_tables_cannot_be_updated_or_deleted(books, connection, statement):
    await _refused(connection, statement, books)


@pytest.mark.parametrize("statement", TRUNCATES)
async def test_append_only_tables_cannot_be_truncated(books, connection, statement):
    await _refused(connection, statement)
    assert await connection.fetchval("SELECT count(*) FROM ledger.postings WHERE tenant_id = $1", books) > 0


async def test_the_grants_find_exactly_the_append_only_tables(connection):
    tables = [row["relname"] for row in await connection.fetch(append_only.PROTECTED_TABLES, SCHEMA)]
    assert tables == sorted(APPEND_ONLY_TABLES)


async def test_the_mutable_tables_stay_mutable(books, connection):
    """Balances, lots and holds change under the account lock; only the journal is append-only."""
    for table, column in (("accounts", "tier_code"), ("lots", "remaining"), ("holds", "state")):
        await connection.execute(f"UPDATE ledger.{table} SET {column} = {column} WHERE tenant_id = $1", books)
