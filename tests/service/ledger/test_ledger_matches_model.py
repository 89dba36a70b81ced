"""The SQL ledger against the reference model (`domain/memory.py`): random sequences of calls go to
both, with one clock the test moves; after every step the two must agree on every outcome (refusal
reason or answer) and on every balance, lot, hold, tier and reversed amount.

The repository loads only the rows a rule needs and writes a unit's changes in one statement; this
is what shows that doing so changed nothing the rules decide. The calls go to a real server
(conftest's `clocked`, the production call guard included) through a real channel; the state
machine is synchronous, so it runs on a thread of its own and hands each call to the event loop the
server lives on.
"""

import asyncio
import copy
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from loyalty.ledger.v1 import ledger_pb2 as pb, ledger_service_pb2 as api
from loyalty_ledger import repository
from loyalty_ledger.domain.memory import MemoryLedger
from loyalty_ledger.domain.model import AccountKind
from loyalty_ledger.encoding import decode_rules
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.errors import DomainError
from tests.conftest import RpcFailure

START = datetime(2025, 1, 1, tzinfo=UTC)
TIERS = [
    pb.Tier(code="SILVER", qualifying_points=100, earn_multiplier_bps=12_000),
    pb.Tier(code="GOLD", qualifying_points=500, earn_multiplier_bps=15_000),
]
MONTHLY = pb.ExpiryPolicy(rule=pb.EXPIRY_RULE_MONTHS_AFTER_EARN, months=1)
amounts = st.one_of(st.integers(1, 40), st.integers(1, 40), st.sampled_from([0, 500]))


def _key() -> str:
    return uuid.uuid4().hex


def _stamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _outcome(call):
    """(refusal reason, None) or (None, result)."""
    try:
        return None, call()
    except DomainError as error:
        return error.reason.name, None
    except grpc.aio.AioRpcError as error:
        return RpcFailure(error).reason, None


class Harness:
    """The clocked server, a database connection, and the event loop both live on."""

    def __init__(self, server, connection: asyncpg.Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.server, self.connection, self.loop = server, connection, loop

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)


class LedgerAgainstModel(RuleBasedStateMachine):
    def __init__(self, harness: Harness) -> None:
        super().__init__()
        self.harness = harness
        harness.server.clock.now = START
        self.metadata = harness.server.metadata(f"model-{_key()[:10]}")
        self.model = MemoryLedger()
        # model id -> database id
        self.ids: dict[str, str] = {}
        self.accounts: list[str] = []
        self.holds: list[str] = []
        self.entries: list[str] = []

    @property
    def now(self) -> datetime:
        return self.harness.server.clock.now

    @now.setter
    def now(self, moment: datetime) -> None:
        self.harness.server.clock.now = moment

    def _db(self, method: str, request):
        async def call():  # made on the server's loop: a grpc.aio call belongs to the loop it starts on
            return await getattr(self.harness.server.stub, method)(request, metadata=self.metadata)

        return self.harness.run(call())

    def _both(self, model_call, method: str, request):
        """Run one call on both sides; they must refuse it for the same reason or both accept it."""
        request.idempotency_key = _key()
        model_reason, model_result = _outcome(lambda: model_call(request.idempotency_key))
        db_reason, db_result = _outcome(lambda: self._db(method, request))
        if model_reason != db_reason:
            # Bad input meets several checks; the servicer validates amounts before it looks
            # anything up, the model after. Which of two refusals comes first is not a balance.
            assert "INVALID_AMOUNT" in (model_reason, db_reason) and None not in (model_reason, db_reason), (
                method,
                model_reason,
                db_reason,
            )
        return model_result, db_result

    def _program(self, **fields) -> tuple[str, pb.Program]:
        program = pb.Program(asset_kind=pb.ASSET_KIND_POINTS, expiry_policy=MONTHLY, **fields)
        model_id = self.model.create_program(decode_rules(program))
        created = self._db("CreateProgram", api.CreateProgramRequest(program=program, idempotency_key=_key()))
        system = created.program.system_accounts
        for kind, db_id in (
            (AccountKind.ISSUANCE, system.issuance_account_id),
            (AccountKind.REDEMPTION, system.redemption_account_id),
            (AccountKind.EXPIRY, system.expiry_account_id),
            (AccountKind.ADJUSTMENT, system.adjustment_account_id),
            (AccountKind.DONATION, system.donation_account_id),
        ):
            self.ids[self.model.system[model_id][kind]] = db_id
        return model_id, created.program

    def _open(self, model_program: str, program: pb.Program) -> None:
        model_id = self.model.open_account(model_program)
        opened = self._db(
            "OpenAccount",
            api.OpenAccountRequest(program_id=program.program_id, customer_id=_key(), idempotency_key=_key()),
        )
        self.ids[model_id] = opened.account.account_id
        self.accounts.append(model_id)

    @initialize(overdraft=st.booleans())
    def setup(self, overdraft: bool) -> None:
        strict = self._program(tiers=TIERS, tier_window_days=30)
        loose = self._program(allow_overdraft=overdraft, default_hold_ttl=Duration(seconds=3600))
        for program in (strict, strict, loose):
            self._open(*program)
        self.donation = self.model.system[strict[0]][AccountKind.DONATION]

    # --- the calls ---

    @rule(i=st.integers(0, 2), amount=st.integers(-1, 150), pending_days=st.sampled_from([None, None, 2]))
    def earn(self, i, amount, pending_days):
        # Qualifying earns only: the model recomputes the tier on every earn, the service on
        # qualifying ones, and the two agree exactly there.
        account = self.accounts[i]
        available_at = self.now + timedelta(days=pending_days) if pending_days else None
        request = api.EarnPointsRequest(account_id=self.ids[account], amount=amount)
        if available_at:
            request.available_time.CopyFrom(_stamp(available_at))
        entry, answer = self._both(
            lambda k: self.model.earn(k, account, amount, self.now, available_at=available_at),
            "EarnPoints",
            request,
        )
        if entry:
            self.ids[entry] = answer.entry.entry_id
            self.entries.append(entry)
            self._same_answer(account, answer.account)

    @rule(i=st.integers(0, 2), amount=amounts, ttl=st.sampled_from([None, 60]))
    def hold(self, i, amount, ttl):
        account = self.accounts[i]
        request = api.HoldPointsRequest(account_id=self.ids[account], amount=amount)
        if ttl:
            request.ttl.FromSeconds(ttl)
        hold, answer = self._both(
            lambda k: self.model.hold(k, account, amount, self.now, ttl), "HoldPoints", request
        )
        if hold:
            self.ids[hold] = answer.hold.hold_id
            self.holds.append(hold)
            self._same_answer(account, answer.account)

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), amount=st.one_of(st.none(), amounts))
    def capture(self, data, amount):
        self.capture_hold(data.draw(st.sampled_from(self.holds)), amount)

    def capture_hold(self, hold: str, amount):
        request = api.CaptureHoldRequest(hold_id=self.ids[hold])
        if amount is not None:
            request.amount = amount
        entry, answer = self._both(
            lambda k: self.model.capture(k, hold, amount, self.now), "CaptureHold", request
        )
        if entry:
            self.ids[entry] = answer.entry.entry_id
            self.entries.append(entry)
            self._same_answer(self._account_of(hold), answer.account)

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def release(self, data):
        hold = data.draw(st.sampled_from(self.holds))
        state, answer = self._both(
            lambda k: self.model.release(k, hold, self.now),
            "ReleaseHold",
            api.ReleaseHoldRequest(hold_id=self.ids[hold]),
        )
        if state:
            assert pb.HoldState.Name(answer.hold.state) == f"HOLD_STATE_{state.value}"
            self._same_answer(self._account_of(hold), answer.account)

    @precondition(lambda self: self.entries)
    @rule(data=st.data(), amount=st.one_of(st.none(), amounts))
    def reverse(self, data, amount):
        self._reverse(data.draw(st.sampled_from(self.entries)), amount)

    @precondition(lambda self: self.entries)
    @rule(data=st.data(), held=st.sampled_from(["all", "most", 1]), amount=st.one_of(st.none(), amounts))
    def hold_then_reverse(self, data, held, amount):
        """Hold points on the account an entry credited (all it has, or nearly), then reverse the
        entry: the reversal must take the held points back, voiding holds, not leave them with the
        customer and call them unrecovered; then try to capture what was held."""
        entry = data.draw(st.sampled_from(self.entries))
        credited = [
            i
            for i, a in enumerate(self.accounts)
            if any(p.account_id == a and p.amount > 0 for p in self.model.entries[entry].postings)
        ]
        if credited:
            available = self.model._account(self.accounts[credited[0]], self.now).available
            size = {"all": available, "most": available - 1, 1: 1}[held]
            self.hold(i=credited[0], amount=max(size, 1), ttl=None)
        self._reverse(entry, amount)
        if credited and self.holds:
            self.capture_hold(self.holds[-1], None)

    def _reverse(self, entry: str, amount):
        request = api.ReverseEntryRequest(entry_id=self.ids[entry])
        if amount is not None:
            request.amount = amount
        reversal, answer = self._both(
            lambda k: self.model.reverse(k, entry, amount, self.now), "ReverseEntry", request
        )
        if reversal:
            self.ids[reversal] = answer.entry.entry_id
            self.entries.append(reversal)

    @rule(i=st.integers(0, 2), j=st.integers(0, 3), amount=amounts)
    def transfer(self, i, j, amount):
        source = self.accounts[i]
        destination = self.donation if j == 3 else self.accounts[j]
        entry, answer = self._both(
            lambda k: self.model.transfer(k, source, destination, amount, self.now),
            "TransferPoints",
            api.TransferPointsRequest(
                source_account_id=self.ids[source],
                destination_account_id=self.ids[destination],
                amount=amount,
            ),
        )
        if entry:
            self.ids[entry] = answer.entry.entry_id
            self.entries.append(entry)

    @rule(i=st.integers(0, 2))
    def get_account(self, i):
        # A balance is read as of now: timed-out holds voided, due points matured, as the model
        # does on every access; but a read writes nothing, so the model is asked on a copy.
        account = self.accounts[i]
        settled = copy.deepcopy(self.model)
        state = settled._account(account, self.now)
        answer = self._db("GetAccount", api.GetAccountRequest(account_id=self.ids[account]))
        balance = answer.account.balance
        assert (balance.posted, balance.pending, balance.held) == (state.posted, state.pending, state.held)
        assert answer.account.tier_code == settled.tiers.get(account, "")
        expiring = defaultdict(int)
        for lot in state.lots:
            if not lot.pending and lot.expires_at is not None:
                expiring[lot.expires_at] += lot.remaining
        assert [
            (x.expire_time.ToDatetime(tzinfo=UTC), x.amount) for x in answer.account.balance.expiring
        ] == (sorted(expiring.items())[:12])

    @rule(seconds=st.sampled_from([1, 600, 3600, 86_400, 5 * 86_400, 20 * 86_400]))
    def tick(self, seconds):
        self.now += timedelta(seconds=seconds)

    @rule()
    def expire(self):
        expired = self.model.run_expiry(self.now)
        answer = self._db("RunExpiry", api.RunExpiryRequest(idempotency_key=_key()))
        assert answer.expired_points == expired

    # --- agreement ---

    def _account_of(self, hold: str) -> str:
        return self.model.holds[hold].account_id

    def _same_answer(self, account: str, answered: pb.Account) -> None:
        state = self.model.accounts[account]
        balance = answered.balance
        assert (balance.posted, balance.pending, balance.held) == (state.posted, state.pending, state.held)
        assert answered.tier_code == self.model.tiers.get(account, "")

    def _rows(self, sql: str, ids: list[str]):
        return self.harness.run(self.harness.connection.fetch(sql, ids))

    @invariant()
    def same_state(self):
        if not self.accounts:
            return
        db = {v: k for k, v in self.ids.items()}
        ids = list(self.ids.values())
        accounts = self._rows(
            "SELECT account_id, posted, pending, held, tier_code FROM ledger.accounts"
            " WHERE customer_id IS NOT NULL AND account_id = ANY($1::varchar[])",
            ids,
        )
        for account_id, posted, pending, held, tier in accounts:
            state = self.model.accounts[db[account_id]]
            assert (posted, pending, held) == (state.posted, state.pending, state.held), db[account_id]
            assert tier == self.model.tiers.get(db[account_id], "")
        lots = defaultdict(list)
        for account_id, *lot in self._rows(
            "SELECT account_id, remaining, expires_at, pending, available_at FROM ledger.lots"
            " WHERE remaining > 0 AND account_id = ANY($1::varchar[])",
            ids,
        ):
            lots[db[account_id]].append(tuple(lot))
        for account in self.accounts:
            model_lots = [
                (x.remaining, x.expires_at, x.pending, x.available_at)
                for x in self.model.accounts[account].lots
            ]
            assert sorted(lots[account], key=repr) == sorted(model_lots, key=repr), account
        sums = {
            (db[a], bucket): int(total)
            for a, bucket, total in self._rows(
                "SELECT account_id, bucket, sum(amount) FROM ledger.postings"
                " WHERE account_id = ANY($1::varchar[]) GROUP BY account_id, bucket",
                ids,
            )
        }
        for account, state in self.model.accounts.items():
            assert sums.get((account, "POSTED"), 0) == state.posted, account
            assert sums.get((account, "PENDING"), 0) == state.pending, account
        for hold_id, state, captured in self._rows(
            "SELECT hold_id, state, captured_amount FROM ledger.holds WHERE hold_id = ANY($1::varchar[])", ids
        ):
            hold = self.model.holds[db[hold_id]]
            assert (state, captured) == (hold.state.value, hold.captured_amount), db[hold_id]
        # What an entry has had reversed: the sum of its reversals (entries are never edited).
        reversed_so_far = dict(
            self._rows(
                "SELECT reversed_entry_id, sum(amount)::bigint FROM ledger.journal_entries"
                " WHERE reversed_entry_id = ANY($1::varchar[]) GROUP BY reversed_entry_id",
                ids,
            )
        )
        for entry in self.entries:
            assert reversed_so_far.get(self.ids[entry], 0) == self.model.entries[entry].reversed_amount, entry


def _run_machine(harness: Harness) -> None:
    run_state_machine_as_test(
        lambda: LedgerAgainstModel(harness),
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


async def test_sql_ledger_matches_the_reference_model(clocked, ledger_settings, monkeypatch):
    # Debits read the first lots and read on only when those fall short: make both happen often.
    monkeypatch.setattr(repository, "FIRST_LOTS", 2)
    connection = await asyncpg.connect(asyncpg_dsn(ledger_settings.database_url))
    try:
        await asyncio.to_thread(_run_machine, Harness(clocked, connection, asyncio.get_running_loop()))
    finally:
        await connection.close()
