"""Random sequences of ledger operations against the reference model; invariants after every step."""

import copy
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from loyalty_ledger.domain.memory import MemoryLedger
from loyalty_ledger.domain.model import ExpiryPolicy, ExpiryRule, ProgramRules, Tier
from loyalty_runtime.errors import DomainError, FailedPrecondition

TIERS = (Tier("SILVER", "Silver", 100, 12_000), Tier("GOLD", "Gold", 500, 15_000))
amounts = st.one_of(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40), st.sampled_from([0, -3, 500]))
earn_amounts = st.integers(-1, 150)
ACCOUNT = st.integers(0, 2)


def _state(ledger: MemoryLedger):
    return (
        copy.deepcopy(ledger.accounts),
        dict(ledger.holds),
        len(ledger.entries),
        {k: v.reversed_amount for k, v in ledger.entries.items()},
        dict(ledger.tiers),
    )


class LedgerMachine(RuleBasedStateMachine):
    @initialize(overdraft=st.booleans())
    def setup(self, overdraft: bool) -> None:
        self.ledger = MemoryLedger()
        self.now = datetime(2025, 1, 1, tzinfo=UTC)
        monthly = ExpiryPolicy(ExpiryRule.MONTHS_AFTER_EARN, 1)
        strict = self.ledger.create_program(
            ProgramRules(expiry_policy=monthly, tiers=TIERS, tier_window_days=30)
        )
        loose = self.ledger.create_program(
            ProgramRules(allow_overdraft=overdraft, expiry_policy=monthly, default_hold_ttl_seconds=3600)
        )
        self.accounts = [self.ledger.open_account(p) for p in (strict, strict, loose)]
        self.donation = self.ledger.system[strict][
            next(k for k in self.ledger.system[strict] if k.value == "DONATION")
        ]
        self.calls: list[tuple[str, object, object]] = []
        self.entries: list[str] = []
        self.holds: list[str] = []
        self.keys = 0

    def _call(self, fn):
        """Run one operation under a fresh key; a refusal must leave no trace."""
        self.keys += 1
        key = f"k{self.keys}"
        before = _state(self.ledger)
        try:
            result = fn(key)
        except DomainError:
            assert _state(self.ledger) == before, "a refused call changed state"
            return None
        self.calls.append((key, fn, result))
        return result

    @rule(
        i=ACCOUNT,
        amount=earn_amounts,
        pending_days=st.sampled_from([None, None, 2, 10]),
        qualifying=st.booleans(),
    )
    def earn(self, i, amount, pending_days, qualifying):
        available_at = self.now + timedelta(days=pending_days) if pending_days else None
        entry = self._call(
            lambda k: self.ledger.earn(
                k, self.accounts[i], amount, self.now, available_at=available_at, qualifying=qualifying
            )
        )
        if entry:
            self.entries.append(entry)

    @rule(i=ACCOUNT, amount=amounts)
    def hold(self, i, amount):
        hold = self._call(lambda k: self.ledger.hold(k, self.accounts[i], amount, self.now))
        if hold:
            self.holds.append(hold)

    @precondition(lambda self: self.holds)
    @rule(data=st.data(), amount=st.one_of(st.none(), amounts))
    def capture(self, data, amount):
        hold = data.draw(st.sampled_from(self.holds))
        entry = self._call(lambda k: self.ledger.capture(k, hold, amount, self.now))
        if entry:
            self.entries.append(entry)

    @precondition(lambda self: self.holds)
    @rule(data=st.data())
    def release(self, data):
        hold = data.draw(st.sampled_from(self.holds))
        self._call(lambda k: self.ledger.release(k, hold, self.now))

    @precondition(lambda self: self.entries)
    @rule(data=st.data(), amount=st.one_of(st.none(), amounts))
    def reverse(self, data, amount):
        entry = data.draw(st.sampled_from(self.entries))
        reversal = self._call(lambda k: self.ledger.reverse(k, entry, amount, self.now))
        if reversal:
            self.entries.append(reversal)

    @rule(i=ACCOUNT, j=st.integers(0, 3), amount=amounts)
    def transfer(self, i, j, amount):
        destination = self.donation if j == 3 else self.accounts[j]
        entry = self._call(lambda k: self.ledger.transfer(k, self.accounts[i], destination, amount, self.now))
        if entry:
            self.entries.append(entry)

    @rule(seconds=st.sampled_from([1, 600, 3600, 86_400, 5 * 86_400, 20 * 86_400]))
    def tick(self, seconds):
        self.now += timedelta(seconds=seconds)

    @rule()
    def expire(self):
        self.ledger.run_expiry(self.now)
        before = _state(self.ledger)
        self.ledger.run_expiry(self.now)
        assert _state(self.ledger) == before, "a second expiry run changed something"

    @precondition(lambda self: self.calls)
    @rule(data=st.data())
    def replay(self, data):
        key, fn, result = data.draw(st.sampled_from(self.calls))
        before = _state(self.ledger)
        assert fn(key) == result
        assert _state(self.ledger) == before, "a replay changed state"

    @precondition(lambda self: self.calls)
    @rule(data=st.data())
    def reuse_key(self, data):
        key, _, _ = data.draw(st.sampled_from(self.calls))
        before = _state(self.ledger)
        try:
            self.ledger.earn(key, self.accounts[0], 987_654, self.now)
        except FailedPrecondition as error:
            assert error.reason == "IDEMPOTENCY_KEY_REUSED"
        else:
            raise AssertionError("key reuse with a different request was accepted")
        assert _state(self.ledger) == before

    @invariant()
    def invariants(self):
        if hasattr(self, "ledger"):
            self.ledger.check_invariants()


LedgerMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerProperties = LedgerMachine.TestCase
