"""Random short sequences against the real server and PostgreSQL, side by side with the in-memory
reference ledger: every call must be accepted or refused (for the same reason) by both, every
accepted call is replayed under its key and answers the same, after every step the customer
balances, lots and tiers in the tables must equal the reference ledger's, and at the end the tables
must hold their invariants (checked in SQL: the journal balances per entry and per asset, balances
match postings, active holds and lots) and agree with the reference ledger hold by hold, system
account by system account, entry type by entry type, and through GetAccount.

Hypothesis drives the async test directly: pytest-asyncio runs each example of an `async def`
`@given` test on the session's event loop, where the servers live.

Time is the server's injected clock (the units of work's `now`), moved by the sequence itself, so
hold timeouts, pending periods and lot expiry happen without sleeping and the reference ledger sees
the very same `now`. That is why this module runs its own server (conftest's `clocked`: the
ledger's DEFINITION on the session's migrated `ledger_settings`, with that clock) next to the
session's `ledger` fixture, whose clock is the wall clock.
"""

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from loyalty.ledger.v1 import ledger_pb2 as pb, ledger_service_pb2 as api
from loyalty_ledger.domain.memory import MemoryLedger
from loyalty_ledger.domain.model import (
    AccountKind,
    ExpiryPolicy,
    ExpiryRule,
    HoldState,
    ProgramRules,
    Tier,
)
from loyalty_runtime.errors import DomainError
from tests.conftest import RpcFailure
from tests.service.ledger.conftest import START

TIERS = (Tier("SILVER", "Silver", 100, 12_000), Tier("GOLD", "Gold", 300, 15_000))
HOLD_TTL = 600


@pytest.fixture(scope="module")
async def sql(database_url):
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


# --- the sequences --------------------------------------------------------------------------------

# Accounts 0 and 1 share a programme without overdraft, 2 and 3 a programme whose overdraft flag is
# drawn. Amounts are numbers or shares of what there is when the call is made ("all": everything
# available / held / left to reverse), so sequences keep hitting the boundaries.
account = st.integers(0, 3)
amount = st.one_of(st.integers(1, 60), st.sampled_from(["all", "all", "half", "all+1", 1]))
some = st.one_of(st.none(), amount)  # None: the whole hold / whatever is left to reverse
handle = st.integers(0, 50)  # the n-th hold / entry / call made so far (modulo how many)
destination = st.sampled_from(["peer", "peer", "pool", "other"])
hold_ttl = st.sampled_from([None, 60, 2 * 86_400])
operation = st.one_of(
    # The awkward transitions first, so that short sequences meet them.
    # Hold, then capture or release it.
    st.tuples(
        st.just("burn"), account, amount, some, hold_ttl, st.sampled_from(["capture", "capture", "release"])
    ),
    # Many small lots, expiring out of creation order (more than the repository reads at first),
    # then points leave: a burn, a transfer, or the reversal of one of the earns.
    st.tuples(
        st.just("earn many"),
        account,
        st.sampled_from([3, 17, 20]),
        st.integers(0, 10**6),
        st.sampled_from(["burn", "transfer", "reverse", "-"]),
        amount,
    ),
    st.tuples(st.just("hold, reverse"), handle, amount, some),  # hold on an entry's account, reverse it
    st.tuples(st.just("transfer, reverse"), account, destination, amount, st.one_of(st.none(), amount), some),
    st.tuples(st.just("tick"), st.just("deadline"), st.sampled_from([0, 0, 1, -1])),
    st.tuples(st.just("expire")),
    st.tuples(st.just("hold"), account, amount, hold_ttl),
    st.tuples(st.just("capture"), handle, some),
    st.tuples(st.just("release"), handle),
    st.tuples(st.just("reverse"), handle, some),
    st.tuples(st.just("transfer"), account, destination, amount),
    st.tuples(st.just("tick"), st.sampled_from([1, 59, 600, 3600, 86_400, 10 * 86_400, 40 * 86_400])),
    st.tuples(
        st.just("earn"),
        account,
        st.integers(1, 120),
        st.sampled_from([None, None, 3600, 2 * 86_400]),  # pending for
        st.sampled_from([None, None, 3600, 86_400, 10 * 86_400]),  # expires in
        st.booleans(),  # qualifying
    ),
    st.tuples(st.just("replay"), handle),
    st.tuples(st.just("reuse"), handle),
)


def key() -> str:
    return uuid.uuid4().hex


def stamp(moment: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)
    return result


@dataclass
class Call:
    method: str
    request: object
    response: object


class Run:
    """One sequence on a fresh tenant, on the server and on the reference ledger in step."""

    def __init__(self, service, overdraft: bool) -> None:
        self.stub = service.stub
        self.clock = service.clock
        self.tenant = f"prop-{uuid.uuid4().hex[:12]}"
        self.md = service.metadata(self.tenant)
        self.overdraft = overdraft
        self.memory = MemoryLedger()
        self.accounts: list[tuple[str, str]] = []  # (server id, reference id)
        self.holds: list[tuple[str, str]] = []
        self.entries: list[tuple[str, str]] = []
        self.calls: list[Call] = []
        self.programs: dict[str, pb.Program] = {}  # reference programme id -> the server's

    @property
    def now(self) -> datetime:
        return self.clock.now

    async def rpc(self, method: str, request):
        """(True, response) or (False, ErrorInfo reason)."""
        try:
            return True, await getattr(self.stub, method)(request, metadata=self.md)
        except grpc.aio.AioRpcError as error:
            return False, RpcFailure(error).reason

    def model(self, action):
        try:
            return True, action()
        except DomainError as error:
            return False, error.reason.name

    async def setup(self) -> None:
        self.clock.now = START
        strict = (
            pb.Program(
                display_name="strict",
                asset_kind=pb.ASSET_KIND_POINTS,
                expiry_policy=pb.ExpiryPolicy(rule=pb.EXPIRY_RULE_MONTHS_AFTER_EARN, months=1),
                tiers=[
                    pb.Tier(
                        code=t.code,
                        qualifying_points=t.qualifying_points,
                        earn_multiplier_bps=t.earn_multiplier_bps,
                    )
                    for t in TIERS
                ],
                tier_window_days=30,
                default_hold_ttl=Duration(seconds=HOLD_TTL),
            ),
            ProgramRules(
                expiry_policy=ExpiryPolicy(ExpiryRule.MONTHS_AFTER_EARN, 1),
                tiers=TIERS,
                tier_window_days=30,
                default_hold_ttl_seconds=HOLD_TTL,
            ),
        )
        loose = (
            pb.Program(
                display_name="loose",
                asset_kind=pb.ASSET_KIND_POINTS,
                allow_overdraft=self.overdraft,
                expiry_policy=pb.ExpiryPolicy(rule=pb.EXPIRY_RULE_END_OF_NEXT_CALENDAR_YEAR),
                default_hold_ttl=Duration(seconds=HOLD_TTL),
            ),
            ProgramRules(
                allow_overdraft=self.overdraft,
                expiry_policy=ExpiryPolicy(ExpiryRule.END_OF_NEXT_CALENDAR_YEAR),
                default_hold_ttl_seconds=HOLD_TTL,
            ),
        )
        programs = []
        for program, rules in (strict, loose):
            ok, response = await self.rpc(
                "CreateProgram", api.CreateProgramRequest(program=program, idempotency_key=key())
            )
            assert ok, response
            reference = self.memory.create_program(rules)
            self.programs[reference] = response.program
            programs.append((response.program, reference))
        for program, reference in (programs[0], programs[0], programs[1], programs[1]):
            ok, response = await self.rpc(
                "OpenAccount",
                api.OpenAccountRequest(
                    program_id=program.program_id, customer_id=key(), idempotency_key=key()
                ),
            )
            assert ok, response
            self.accounts.append((response.account.account_id, self.memory.open_account(reference)))
        self.pools = [
            (program.system_accounts.donation_account_id, self.memory.system[reference][AccountKind.DONATION])
            for program, reference in programs
        ]

    # --- one operation on both sides ---

    async def step(self, op: tuple) -> bool:
        """Run one operation (or a few, for the awkward transitions); True if a call was accepted."""
        kind = op[0]
        if kind == "tick" and op[1] == "deadline":
            deadline = self.next_deadline()
            if deadline is not None:
                self.clock.now = max(self.now, deadline + timedelta(seconds=op[2]))
        elif kind == "tick":
            self.clock.now += timedelta(seconds=op[1])
        elif kind == "earn many":
            _, i, count, salt, then, amount = op
            for n in range(count):
                expires_in = 3600 + (salt + n * 7919) % 97 * 86_400 // 3  # scattered over ~a month
                earn = self.request(("earn", i, 1 + (salt + n) % 5, None, expires_in, True))
                await self.both(*earn, replay=n == 0)  # replaying one of them is enough
            if then == "burn":
                await self.step(("burn", i, amount, None, None, "capture"))
            elif then == "transfer":
                await self.step(("transfer", i, "peer", amount))
            elif then == "reverse":
                await self.step(("reverse", len(self.entries) - 1 - salt % count, amount))
        elif kind == "burn":
            _, i, amount, capture, ttl, then = op
            if await self.step(("hold", i, amount, ttl)):
                last = len(self.holds) - 1
                await self.step(("capture", last, capture) if then == "capture" else ("release", last))
        elif kind == "hold, reverse":
            _, n, amount, part = op
            if self.entries:
                n %= len(self.entries)
                postings = self.memory.entries[self.entries[n][1]].postings
                customers = [
                    i for i, (_, ref) in enumerate(self.accounts) for p in postings if p.account_id == ref
                ]
                if customers:
                    await self.step(("hold", customers[0], amount, None))
                await self.step(("reverse", n, part))
        elif kind == "transfer, reverse":
            _, i, where, amount, hold, part = op
            if await self.step(("transfer", i, where, amount)):
                n = len(self.entries) - 1
                if hold is not None and where != "pool":
                    await self.step(("hold", {"peer": i ^ 1, "other": (i + 2) % 4}[where], hold, None))
                await self.step(("reverse", n, part))
        elif kind == "expire":
            ok, response = await self.rpc("RunExpiry", api.RunExpiryRequest(idempotency_key=key()))
            assert ok, response
            assert response.expired_points == self.memory.run_expiry(self.now), "expired points differ"
        elif kind == "replay":
            if self.calls:
                call = self.calls[op[1] % len(self.calls)]
                assert await self.rpc(call.method, call.request) == (True, call.response), "replay differs"
        elif kind == "reuse":
            if self.calls:
                await self.reuse(self.calls[op[1] % len(self.calls)])
        else:
            made = self.request(op)
            if made is not None:
                return await self.both(*made)
        return False

    def next_deadline(self) -> datetime | None:
        """The next moment something times out, expires or matures."""
        moments = [h.expires_at for h in self.memory.holds.values() if h.state is HoldState.ACTIVE]
        for _, reference in self.accounts:
            for lot in self.memory.accounts[reference].lots:
                moments.append(lot.available_at if lot.pending else lot.expires_at)
        return min((m for m in moments if m is not None and m > self.now), default=None)

    def share(self, amount, whole: int) -> int:
        if amount == "all":
            return max(whole, 1)
        if amount == "half":
            return max(whole // 2, 1)
        if amount == "all+1":
            return max(whole, 0) + 1
        return amount

    def available(self, reference: str) -> int:
        a = self.memory.accounts[reference]
        due = sum(x.remaining for x in a.lots if x.pending and x.available_at <= self.now)
        voided = sum(
            h.amount
            for h in self.memory.holds.values()
            if h.account_id == reference and h.state is HoldState.ACTIVE and h.expires_at <= self.now
        )
        return a.posted + due - (a.held - voided)

    def request(self, op: tuple):
        """The server request and the same call on the reference ledger (None: nothing to call yet)."""
        k, now, memory = key(), self.now, self.memory
        if op[0] == "earn":
            _, i, amount, pending_for, expires_in, qualifying = op
            server, reference = self.accounts[i]
            available = now + timedelta(seconds=pending_for) if pending_for else None
            expires = now + timedelta(seconds=expires_in) if expires_in else None
            request = api.EarnPointsRequest(
                account_id=server,
                amount=amount,
                idempotency_key=k,
                available_time=stamp(available) if available else None,
                expire_time=stamp(expires) if expires else None,
                non_qualifying=not qualifying,
            )
            action = lambda: memory.earn(  # noqa: E731
                k, reference, amount, now, available_at=available, expires_at=expires, qualifying=qualifying
            )
            return "EarnPoints", request, action
        if op[0] == "hold":
            _, i, amount, ttl = op
            server, reference = self.accounts[i]
            amount = self.share(amount, self.available(reference))
            request = api.HoldPointsRequest(
                account_id=server,
                amount=amount,
                idempotency_key=k,
                ttl=Duration(seconds=ttl) if ttl else None,
            )
            return "HoldPoints", request, lambda: memory.hold(k, reference, amount, now, ttl)
        if op[0] in ("capture", "release"):
            if not self.holds:
                return None
            server, reference = self.holds[op[1] % len(self.holds)]
            if op[0] == "release":
                request = api.ReleaseHoldRequest(hold_id=server, idempotency_key=k)
                return "ReleaseHold", request, lambda: memory.release(k, reference, now)
            amount = None if op[2] is None else self.share(op[2], memory.holds[reference].amount)
            request = api.CaptureHoldRequest(hold_id=server, amount=amount, idempotency_key=k)
            return "CaptureHold", request, lambda: memory.capture(k, reference, amount, now)
        if op[0] == "reverse":
            if not self.entries:
                return None
            server, reference = self.entries[op[1] % len(self.entries)]
            entry = memory.entries[reference]
            left = sum(p.amount for p in entry.postings if p.amount > 0) - entry.reversed_amount
            amount = None if op[2] is None else self.share(op[2], left)
            request = api.ReverseEntryRequest(entry_id=server, amount=amount, idempotency_key=k)
            return "ReverseEntry", request, lambda: memory.reverse(k, reference, amount, now)
        _, i, where, amount = op
        source, source_ref = self.accounts[i]
        destination, destination_ref = {
            "peer": self.accounts[i ^ 1],
            "pool": self.pools[i // 2],
            "other": self.accounts[(i + 2) % 4],
        }[where]
        amount = self.share(amount, self.available(source_ref))
        request = api.TransferPointsRequest(
            source_account_id=source, destination_account_id=destination, amount=amount, idempotency_key=k
        )
        return "TransferPoints", request, lambda: memory.transfer(k, source_ref, destination_ref, amount, now)

    async def both(self, method: str, request, action, *, replay: bool = True) -> bool:
        ok, response = await self.rpc(method, request)
        model_ok, result = self.model(action)
        server, reference = ("ok" if ok else response), ("ok" if model_ok else result)
        assert server == reference, f"{method} at {self.now}: server {server}, reference {reference}"
        if not ok:
            return False
        if method == "HoldPoints":
            self.holds.append((response.hold.hold_id, result))
        elif method == "CaptureHold":
            self.entries.append((response.entry.entry_id, result))
            hold = self.memory.holds[dict(self.holds)[request.hold_id]]
            assert response.hold.captured_amount == hold.captured_amount
        elif method == "ReleaseHold":
            assert pb.HoldState.Name(response.hold.state) == f"HOLD_STATE_{result.value}"
        elif method == "ReverseEntry":
            self.entries.append((response.entry.entry_id, result))
            assert response.entry.unrecovered_amount == self.memory.entries[result].plan.unrecovered
        else:
            self.entries.append((response.entry.entry_id, result))
        # The same key and request again: the first answer, nothing new written.
        if replay:
            assert await self.rpc(method, request) == (True, response), f"{method} replay differs"
        self.calls.append(Call(method, request, response))
        return True

    async def reuse(self, call: Call) -> None:
        """The same key with another request is refused, and writes nothing."""
        if call.method == "ReleaseHold":
            other = api.EarnPointsRequest(
                account_id=self.accounts[0][0], amount=1, idempotency_key=call.request.idempotency_key
            )
            method = "EarnPoints"
        else:
            other, method = type(call.request)(), call.method
            other.CopyFrom(call.request)
            other.amount = (other.amount or 0) + 1
        assert await self.rpc(method, other) == (False, "IDEMPOTENCY_KEY_REUSED")

    # --- at the end ---

    async def check(self, sql) -> None:
        async with sql.connect() as connection:

            async def rows(query: str):
                return (await connection.execute(text(query), {"t": self.tenant})).all()

            assert not await rows(
                "SELECT entry_id FROM ledger.postings WHERE tenant_id = :t GROUP BY entry_id HAVING sum(amount) <> 0"
            ), "an entry does not balance"
            assert not await rows("""
                SELECT e.asset_code FROM ledger.postings p JOIN ledger.journal_entries e USING (entry_id)
                WHERE p.tenant_id = :t GROUP BY e.asset_code HAVING sum(p.amount) <> 0"""), (
                "an asset does not balance"
            )
            broken = await rows("""
                SELECT a.account_id, a.posted, a.pending, a.held, p.posted, p.pending, h.held, l.spendable, l.pending
                FROM ledger.accounts a
                JOIN ledger.programs g USING (program_id)
                LEFT JOIN (SELECT account_id,
                                  coalesce(sum(amount) FILTER (WHERE bucket = 'POSTED'), 0) AS posted,
                                  coalesce(sum(amount) FILTER (WHERE bucket = 'PENDING'), 0) AS pending
                           FROM ledger.postings WHERE tenant_id = :t GROUP BY account_id) p USING (account_id)
                LEFT JOIN (SELECT account_id, sum(amount) AS held FROM ledger.holds
                           WHERE tenant_id = :t AND state = 'ACTIVE' GROUP BY account_id) h USING (account_id)
                LEFT JOIN (SELECT account_id,
                                  coalesce(sum(remaining) FILTER (WHERE NOT pending), 0) AS spendable,
                                  coalesce(sum(remaining) FILTER (WHERE pending), 0) AS pending
                           FROM ledger.lots WHERE tenant_id = :t GROUP BY account_id) l USING (account_id)
                WHERE a.tenant_id = :t AND a.customer_id IS NOT NULL AND (
                      a.posted <> coalesce(p.posted, 0) OR a.pending <> coalesce(p.pending, 0)
                   OR a.held <> coalesce(h.held, 0)
                   OR greatest(a.posted, 0) <> coalesce(l.spendable, 0) OR a.pending <> coalesce(l.pending, 0)
                   OR a.pending < 0 OR a.held < 0
                   OR (NOT g.allow_overdraft AND (a.posted < 0 OR a.posted - a.held < 0)))""")
            assert not broken, f"balances disagree with postings, holds or lots: {broken}"
            assert not await rows("SELECT lot_id FROM ledger.lots WHERE tenant_id = :t AND remaining < 0")
            assert not await rows("""
                SELECT hold_id FROM ledger.holds WHERE tenant_id = :t
                AND NOT (captured_amount BETWEEN 0 AND amount AND (state = 'CAPTURED') = (captured_amount > 0))""")
            assert not await rows("""
                SELECT e.entry_id FROM ledger.journal_entries e WHERE e.tenant_id = :t
                AND e.entry_type IN ('EARN', 'BURN', 'TRANSFER')
                AND NOT coalesce((SELECT sum(r.amount) FROM ledger.journal_entries r
                                  WHERE r.tenant_id = :t AND r.reversed_entry_id = e.entry_id), 0)
                        BETWEEN 0 AND e.amount"""), "an entry reversed beyond its amount"

            # Side by side with the reference ledger.
            sums = dict(
                await rows(
                    "SELECT account_id, sum(amount) FROM ledger.postings WHERE tenant_id = :t GROUP BY account_id"
                )
            )
            holds = dict(
                (r[0], r[1:])
                for r in await rows(
                    "SELECT hold_id, state, amount, captured_amount FROM ledger.holds WHERE tenant_id = :t"
                )
            )
            types = Counter(
                r[0] for r in await rows("SELECT entry_type FROM ledger.journal_entries WHERE tenant_id = :t")
            )
            reversed_so_far = dict(
                await rows("""
                    SELECT reversed_entry_id, sum(amount) FROM ledger.journal_entries
                    WHERE tenant_id = :t AND reversed_entry_id IS NOT NULL GROUP BY reversed_entry_id""")
            )
        await self.compare(sql)
        memory = self.memory
        for reference, program in self.programs.items():
            for kind, system in memory.system[reference].items():
                server = getattr(program.system_accounts, f"{kind.value.lower()}_account_id")
                assert sums.get(server, 0) == memory.accounts[system].posted, f"{kind} differs"
        for server, reference in self.holds:
            h = memory.holds[reference]
            assert holds[server] == (h.state.value, h.amount, h.captured_amount), f"hold {server} differs"
        assert types == Counter(e.entry_type.value for e in memory.entries.values()), "journal differs"
        for server, reference in self.entries:
            assert reversed_so_far.get(server, 0) == memory.entries[reference].reversed_amount, (
                f"entry {server} reversed differently"
            )
        # And through the API, which settles timed-out holds and matured points as it reads.
        for server, reference in self.accounts:
            ok, response = await self.rpc("GetAccount", api.GetAccountRequest(account_id=server))
            assert ok, response
            b = response.account.balance
            r = memory.accounts[reference]
            due = sum(x.remaining for x in r.lots if x.pending and x.available_at <= self.now)
            voided = sum(
                h.amount
                for h in memory.holds.values()
                if h.account_id == reference and h.state is HoldState.ACTIVE and h.expires_at <= self.now
            )
            expected = (r.posted + due, r.pending - due, r.held - voided)
            assert (b.posted, b.pending, b.held) == expected
            assert b.available == b.posted - b.held

    async def compare(self, sql) -> None:
        """Customer balances, tiers and lots: the tables against the reference ledger."""
        async with sql.connect() as connection:
            accounts = {
                r[0]: r[1:]
                for r in await connection.execute(
                    text(
                        "SELECT account_id, posted, pending, held, tier_code FROM ledger.accounts WHERE tenant_id = :t"
                    ),
                    {"t": self.tenant},
                )
            }
            lots = Counter(
                map(
                    tuple,
                    await connection.execute(
                        text("""SELECT account_id, remaining, pending, expires_at, available_at FROM ledger.lots
                                WHERE tenant_id = :t AND remaining > 0"""),
                        {"t": self.tenant},
                    ),
                )
            )
        expected_lots = Counter()
        for server, reference in self.accounts:
            a = self.memory.accounts[reference]
            assert accounts[server][:3] == (a.posted, a.pending, a.held), (
                f"account {server} at {self.now}: {accounts[server]} vs {a}"
            )
            assert accounts[server][3] == self.memory.tiers.get(reference, ""), (
                f"tier of {server} differs: server {accounts[server][3]!r}, "
                f"reference {self.memory.tiers.get(reference, '')!r}"
            )
            for lot in a.lots:
                expected_lots[(server, lot.remaining, lot.pending, lot.expires_at, lot.available_at)] += 1
        assert lots == expected_lots, (
            f"lots differ: server has {lots - expected_lots}, reference {expected_lots - lots}"
        )


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    funds=st.lists(
        st.tuples(st.integers(1, 150), st.sampled_from([None, 3600, 86_400])), min_size=4, max_size=4
    ),
    ops=st.lists(operation, min_size=6, max_size=20),
    overdraft=st.booleans(),
)
async def test_random_sequences_agree_with_the_reference_ledger(clocked, sql, funds, ops, overdraft):
    run = Run(clocked, overdraft)
    await run.setup()
    for i, (points, expires_in) in enumerate(funds):
        await run.step(("earn", i, points, None, expires_in, True))
    for op in ops:
        await run.step(op)
        await run.compare(sql)
    await run.check(sql)


async def test_a_non_qualifying_earn_leaves_the_tier_alone_in_both(clocked, sql):
    run = Run(clocked, overdraft=False)
    await run.setup()
    assert await run.step(("earn", 0, 150, None, None, True))  # SILVER on both
    await run.step(("tick", 40 * 86_400))  # the qualifying points leave the 30-day window
    assert await run.step(("earn", 0, 1, None, None, False))  # server: still SILVER; reference: none
    await run.check(sql)
