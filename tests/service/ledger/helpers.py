"""What the ledger's service tests share: a tenant's client and the journal's invariants in SQL."""

import asyncio
import uuid

import asyncpg
from redis.asyncio import Redis

from loyalty.ledger.v1 import ledger_pb2 as pb, ledger_service_pb2 as api
from loyalty_runtime.db import asyncpg_dsn


def key() -> str:
    return uuid.uuid4().hex


class Client:
    """A tenant's view of the ledger."""

    def __init__(self, ledger, tenant: str) -> None:
        self.stub = ledger.stub
        self.tenant = tenant
        self.md = ledger.metadata(tenant)

    def __getattr__(self, name):
        method = getattr(self.stub, name)
        return lambda request: method(request, metadata=self.md)

    async def program(self, **fields) -> pb.Program:
        fields.setdefault("asset_kind", pb.ASSET_KIND_POINTS)
        response = await self.CreateProgram(
            api.CreateProgramRequest(program=pb.Program(display_name="Club", **fields), idempotency_key=key())
        )
        return response.program

    async def account(self, program: pb.Program, customer: str | None = None) -> str:
        response = await self.OpenAccount(
            api.OpenAccountRequest(
                program_id=program.program_id, customer_id=customer or key(), idempotency_key=key()
            )
        )
        return response.account.account_id

    async def earn(self, account_id: str, amount: int, **fields) -> api.EarnPointsResponse:
        return await self.EarnPoints(
            api.EarnPointsRequest(
                account_id=account_id,
                amount=amount,
                idempotency_key=fields.pop("idempotency_key", key()),
                **fields,
            )
        )

    async def balance(self, account_id: str) -> pb.Balance:
        return (await self.GetAccount(api.GetAccountRequest(account_id=account_id))).account.balance

    async def hold(self, account_id: str, amount: int, **fields) -> pb.Hold:
        return (
            await self.HoldPoints(
                api.HoldPointsRequest(account_id=account_id, amount=amount, idempotency_key=key(), **fields)
            )
        ).hold

    async def capture(self, hold_id: str, **fields) -> api.CaptureHoldResponse:
        return await self.CaptureHold(
            api.CaptureHoldRequest(hold_id=hold_id, idempotency_key=key(), **fields)
        )


async def journal_checks(database_url: str) -> None:
    """Every entry balances; every customer balance equals the sum of its postings; lots and holds
    match; nothing is reversed beyond its amount."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        unbalanced = await connection.fetch(
            "SELECT entry_id FROM ledger.postings GROUP BY entry_id HAVING sum(amount) <> 0"
        )
        drifted = await connection.fetch("""
            SELECT a.account_id FROM ledger.accounts a
            LEFT JOIN (SELECT account_id,
                              sum(amount) FILTER (WHERE bucket = 'POSTED') AS posted,
                              sum(amount) FILTER (WHERE bucket = 'PENDING') AS pending
                       FROM ledger.postings GROUP BY account_id) p USING (account_id)
            WHERE a.customer_id IS NOT NULL
              AND (a.posted <> coalesce(p.posted, 0) OR a.pending <> coalesce(p.pending, 0))""")
        lots = await connection.fetch("""
            SELECT a.account_id FROM ledger.accounts a
            LEFT JOIN (SELECT account_id, sum(remaining) FILTER (WHERE NOT pending) AS spendable
                       FROM ledger.lots GROUP BY account_id) l USING (account_id)
            WHERE a.customer_id IS NOT NULL AND greatest(a.posted, 0) <> coalesce(l.spendable, 0)""")
        held = await connection.fetch("""
            SELECT a.account_id FROM ledger.accounts a
            LEFT JOIN (SELECT account_id, sum(amount) AS held FROM ledger.holds WHERE state = 'ACTIVE'
                       GROUP BY account_id) h USING (account_id)
            WHERE a.held <> coalesce(h.held, 0)""")
        over_reversed = await connection.fetch("""
            SELECT e.entry_id FROM ledger.journal_entries e
            JOIN (SELECT reversed_entry_id, sum(amount) AS total FROM ledger.journal_entries
                  WHERE reversed_entry_id IS NOT NULL GROUP BY reversed_entry_id) r
              ON r.reversed_entry_id = e.entry_id
            WHERE r.total > e.amount""")
    finally:
        await connection.close()
    assert not (unbalanced or drifted or lots or held or over_reversed), (
        unbalanced,
        drifted,
        lots,
        held,
        over_reversed,
    )


async def events_of(
    redis_url: str, tenant: str, count: int, event_type: str | None = None
) -> list[tuple[str, bytes]]:
    """The tenant's events on ledger.events (of `event_type`, if given), once `count` of them are
    there (the relay publishes in batches)."""
    redis = Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(10):
            while True:
                found = [
                    (fields[b"type"].decode(), fields[b"payload"])
                    for _, fields in await redis.xrange("ledger.events")
                    if fields[b"tenant"].decode() == tenant and event_type in (None, fields[b"type"].decode())
                ]
                if len(found) >= count:
                    return found
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose()


def lines(*specs) -> list[pb.CheckoutLine]:
    return [
        pb.CheckoutLine(line_id=line_id, quantity=quantity, earn_points=earn, burn_points=burn)
        for line_id, quantity, earn, burn in specs
    ]


def settle(account: str, checkout: str, basket, **fields) -> api.SettleCheckoutRequest:
    return api.SettleCheckoutRequest(
        account_id=account,
        checkout_id=checkout,
        lines=basket,
        idempotency_key=fields.pop("idempotency_key", key()),
        **fields,
    )
