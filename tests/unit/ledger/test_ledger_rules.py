"""Example-based tests of the ledger's pure rules."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, strategies as st

from loyalty_ledger.domain import rules as r
from loyalty_ledger.domain.model import (
    Account,
    AccountKind,
    Bucket,
    EntryType,
    ExpiryPolicy,
    ExpiryRule,
    Hold,
    HoldState,
    Lot,
    ProgramRules,
    ReversibleEntry,
    Tier,
)
from loyalty_runtime.errors import FailedPrecondition, InvalidArgument, Reason

NOW = datetime(2025, 3, 15, 12, tzinfo=UTC)
ISSUANCE = Account("iss", AccountKind.ISSUANCE)
REDEMPTION = Account("red", AccountKind.REDEMPTION)
EXPIRY = Account("exp", AccountKind.EXPIRY)


def customer(posted=0, held=0, lots=(), pending=0):
    return Account("c", AccountKind.CUSTOMER, posted=posted, held=held, pending=pending, lots=tuple(lots))


def lot(lot_id, remaining, days, seq=0, pending=False):
    expires = None if days is None else NOW + timedelta(days=days)
    return Lot(lot_id, remaining, expires, seq, pending=pending)


@pytest.mark.parametrize("amount", [0, -1, 10**16])
def test_amount_must_be_positive_and_bounded(amount):
    with pytest.raises(InvalidArgument) as error:
        r.plan_earn(customer(), ISSUANCE, amount, ProgramRules(), NOW)
    assert error.value.reason is Reason.INVALID_AMOUNT
    assert error.value.violations[0].field == "amount"


def test_asset_mismatch():
    r.require_asset("", "POINTS")
    r.require_asset("POINTS", "POINTS")
    with pytest.raises(FailedPrecondition) as error:
        r.require_asset("EUR", "POINTS")
    assert error.value.reason is Reason.ASSET_MISMATCH


def test_add_months_clamps_to_month_end():
    assert r.add_months(datetime(2025, 1, 31, tzinfo=UTC), 1) == datetime(2025, 2, 28, tzinfo=UTC)
    assert r.add_months(datetime(2024, 12, 31, tzinfo=UTC), 14) == datetime(2026, 2, 28, tzinfo=UTC)
    assert r.add_months(datetime(2023, 11, 30, tzinfo=UTC), 3) == datetime(2024, 2, 29, tzinfo=UTC)


def test_expiry_rules():
    assert r.lot_expiry(ExpiryPolicy(), NOW) is None
    assert r.lot_expiry(ExpiryPolicy(ExpiryRule.MONTHS_AFTER_EARN, 12), NOW) == NOW.replace(year=2026)
    assert r.lot_expiry(ExpiryPolicy(ExpiryRule.END_OF_NEXT_CALENDAR_YEAR), NOW) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


@given(st.integers(0, 2000))
def test_tier_is_highest_reached(points):
    tiers = (Tier("GOLD", "", 1000, 15000), Tier("SILVER", "", 200, 12000), Tier("BASE", "", 0, 10000))
    tier = r.tier_for(tiers, points)
    expected = "GOLD" if points >= 1000 else "SILVER" if points >= 200 else "BASE"
    assert tier is not None and tier.code == expected
    assert r.tier_for((), points) is None


def test_burn_consumes_earliest_expiry_first_never_expiring_last():
    account = customer(100, lots=[lot("never", 40, None, 0), lot("late", 30, 90, 1), lot("soon", 30, 10, 2)])
    updates = r.consume_lots(account.lots, 50)
    assert [(u.lot_id, u.delta) for u in updates] == [("soon", -30), ("late", -20)]


@given(
    st.lists(
        st.tuples(st.integers(1, 100), st.one_of(st.none(), st.integers(1, 400))), min_size=1, max_size=8
    ),
    st.data(),
)
def test_consumption_takes_exactly_the_amount_and_never_overdraws_a_lot(specs, data):
    lots = [lot(f"l{i}", amount, days, i) for i, (amount, days) in enumerate(specs)]
    total = sum(x.remaining for x in lots)
    amount = data.draw(st.integers(0, total))
    updates = r.consume_lots(lots, amount)
    assert -sum(u.delta for u in updates) == amount
    by_id = {x.lot_id: x for x in lots}
    assert all(0 < -u.delta <= by_id[u.lot_id].remaining for u in updates)
    # FIFO: every lot fully used before a later-expiring one is touched, except the last.
    for earlier in updates[:-1]:
        assert -earlier.delta == by_id[earlier.lot_id].remaining


def test_pending_earn_is_not_spendable_until_matured():
    plan = r.plan_earn(customer(), ISSUANCE, 100, ProgramRules(), NOW, available_at=NOW + timedelta(days=14))
    assert plan.postings[0].bucket is Bucket.PENDING
    effect = plan.effects[0]
    assert (effect.d_posted, effect.d_pending) == (0, 100) and effect.new_lots[0].pending
    account = r.apply_effect(customer(), effect, ["l1"], 1)
    with pytest.raises(FailedPrecondition) as error:
        r.plan_hold(account, 1, ProgramRules())
    assert error.value.reason is Reason.INSUFFICIENT_BALANCE
    assert r.plan_maturation(account, NOW) is None
    matured = r.plan_maturation(account, NOW + timedelta(days=14))
    assert [p.amount for p in matured.postings] == [-100, 100] and sum(
        p.amount for p in matured.postings
    ) == 0


def test_hold_state_machine():
    hold = Hold("h", "c", 50, NOW + timedelta(minutes=5))
    account = customer(100, held=50, lots=[lot("a", 100, 30)])
    with pytest.raises(FailedPrecondition) as error:
        r.plan_capture(account, REDEMPTION, hold, 51, NOW)
    assert error.value.reason is Reason.CAPTURE_EXCEEDS_HOLD
    plan, captured = r.plan_capture(account, REDEMPTION, hold, 30, NOW)
    assert captured.state is HoldState.CAPTURED and captured.captured_amount == 30
    assert plan.effects[0].d_held == -50 and plan.effects[0].d_posted == -30
    for dead in (captured, hold.with_state(HoldState.RELEASED)):
        with pytest.raises(FailedPrecondition) as error:
            r.plan_capture(account, REDEMPTION, dead, None, NOW)
        assert error.value.reason is Reason.HOLD_NOT_ACTIVE
    with pytest.raises(FailedPrecondition):
        r.plan_capture(account, REDEMPTION, hold, None, NOW + timedelta(minutes=5))  # timed out
    with pytest.raises(FailedPrecondition):
        r.plan_release(captured, NOW)
    effect, released = r.plan_release(hold, NOW)
    assert released.state is HoldState.RELEASED and effect.d_held == -50
    assert r.plan_release(released, NOW) == (None, released)
    _, late = r.plan_release(hold, NOW + timedelta(hours=1))
    assert late.state is HoldState.EXPIRED
    assert [h.state for h in r.plan_void_expired_holds([hold], NOW + timedelta(hours=1))] == [
        HoldState.EXPIRED
    ]


def test_expiry_spares_held_points_and_is_idempotent():
    account = customer(100, held=30, lots=[lot("old", 80, -1, 0), lot("new", 20, 30, 1)])
    plan, count = r.plan_expiry(account, EXPIRY, NOW)
    assert count == 1 and plan.postings[0].amount == -70
    after = r.apply_effect(account, plan.effects[0], [], 0)
    assert r.plan_expiry(after, EXPIRY, NOW) == (None, 0)


def test_reversal_of_spent_earn_is_capped_without_overdraft():
    account = customer(10, lots=[lot("l", 10, 30)])
    entry = ReversibleEntry("e", EntryType.EARN, 100, 0, "c", lot_id="l", qualifying=True)
    plan = r.plan_reversal(entry, None, {"c": account}, {AccountKind.ISSUANCE: ISSUANCE}, ProgramRules())
    assert plan.unrecovered == 90 and plan.reversed_amount == 100 and plan.qualifying_delta == -100
    assert sum(p.amount for p in plan.postings) == 0
    overdraft = r.plan_reversal(
        entry, None, {"c": account}, {AccountKind.ISSUANCE: ISSUANCE}, ProgramRules(allow_overdraft=True)
    )
    assert overdraft.unrecovered == 0 and overdraft.effects[0].d_posted == -100
    with pytest.raises(FailedPrecondition) as error:
        r.plan_reversal(entry, 101, {"c": account}, {AccountKind.ISSUANCE: ISSUANCE}, ProgramRules())
    assert error.value.reason is Reason.REVERSAL_EXCEEDS_ENTRY


def test_burn_reversal_restores_latest_consumed_expiry():
    account = customer(100, held=60, lots=[lot("a", 50, 10, 0), lot("b", 50, 40, 1)])
    hold = Hold("h", "c", 60, NOW + timedelta(minutes=5))
    plan, _ = r.plan_capture(account, REDEMPTION, hold, None, NOW)
    assert plan.restore_expires_at == NOW + timedelta(days=40)
    entry = ReversibleEntry("e", EntryType.BURN, 60, 0, "c", restore_expires_at=plan.restore_expires_at)
    after = r.apply_effect(account, plan.effects[0], [], 0)
    reversal = r.plan_reversal(entry, 20, {"c": after}, {AccountKind.REDEMPTION: REDEMPTION}, ProgramRules())
    assert reversal.effects[0].new_lots[0].expires_at == NOW + timedelta(days=40)
    assert reversal.effects[0].new_lots[0].amount == 20


def test_transfer_keeps_expiry_dates_and_never_overdraws():
    source = customer(50, lots=[lot("a", 20, 10, 0), lot("b", 30, 40, 1)])
    destination = Account("d", AccountKind.CUSTOMER)
    plan = r.plan_transfer(source, destination, 30, ProgramRules(), NOW)
    assert sorted((n.amount, n.expires_at) for n in plan.effects[1].new_lots) == [
        (10, NOW + timedelta(days=40)),
        (20, NOW + timedelta(days=10)),
    ]
    with pytest.raises(FailedPrecondition) as error:
        r.plan_transfer(source, destination, 51, ProgramRules(), NOW)
    assert error.value.reason is Reason.INSUFFICIENT_BALANCE
    with pytest.raises(InvalidArgument):
        r.plan_transfer(source, REDEMPTION, 1, ProgramRules(), NOW)


ADJUSTMENT = Account("adj", AccountKind.ADJUSTMENT)


def test_an_adjustment_credit_is_new_points_expiring_by_the_programme_policy():
    rules = ProgramRules(expiry_policy=ExpiryPolicy(ExpiryRule.MONTHS_AFTER_EARN, months=12))
    plan = r.plan_transfer(ADJUSTMENT, customer(), 40, rules, NOW)
    debit, credit = plan.effects
    assert debit.account_id == "adj" and debit.d_posted == -40 and not debit.lot_updates
    assert [(n.amount, n.expires_at) for n in credit.new_lots] == [(40, r.add_months(NOW, 12))]
    assert sum(p.amount for p in plan.postings) == 0


def test_an_adjustment_debit_never_overdraws_the_customer():
    source = customer(50, lots=[lot("a", 50, 10)])
    plan = r.plan_transfer(source, ADJUSTMENT, 20, ProgramRules(), NOW)
    assert plan.effects[0].lot_updates[0].delta == -20
    assert plan.effects[1].d_posted == 20
    with pytest.raises(FailedPrecondition) as error:
        r.plan_transfer(source, ADJUSTMENT, 51, ProgramRules(), NOW)
    assert error.value.reason is Reason.INSUFFICIENT_BALANCE


@pytest.mark.parametrize(
    "source, destination",
    [(ADJUSTMENT, REDEMPTION), (ISSUANCE, customer()), (ADJUSTMENT, Account("don", AccountKind.DONATION))],
)
def test_transfers_between_system_accounts_or_from_other_ones_are_refused(source, destination):
    with pytest.raises(InvalidArgument):
        r.plan_transfer(source, destination, 1, ProgramRules(), NOW)


def test_a_reversal_takes_held_points_back_by_voiding_holds_newest_first():
    # 100 earned; holds of 30 (older) and 50 (newer) leave 20 available. Reversing 60 takes the 20
    # and voids the newer hold (it covers the 40 missing); the older one stays, and nothing is
    # unrecovered: the held points do not stay with the customer.
    account = customer(100, held=80, lots=[lot("l", 100, 30)])
    older = Hold("h1", "c", 30, NOW + timedelta(minutes=5), seq=1)
    newer = Hold("h2", "c", 50, NOW + timedelta(minutes=5), seq=2)
    entry = ReversibleEntry("e", EntryType.EARN, 100, 0, "c", lot_id="l")
    system = {AccountKind.ISSUANCE: ISSUANCE}
    plan = r.plan_reversal(entry, 60, {"c": account}, system, ProgramRules(), [older, newer])
    assert [h.hold_id for h in plan.voided_holds] == ["h2"] and plan.voided_holds[0].state is HoldState.VOIDED
    assert (plan.effects[0].d_posted, plan.effects[0].d_held, plan.unrecovered) == (-60, -50, 0)
    after = r.apply_effect(account, plan.effects[0], [], 0)
    assert (after.posted, after.held, after.available) == (40, 30, 10)
    # All of it: both holds go, and only what was spent before (nothing here) is unrecovered.
    whole = r.plan_reversal(entry, None, {"c": account}, system, ProgramRules(), [older, newer])
    assert {h.hold_id for h in whole.voided_holds} == {"h1", "h2"} and whole.unrecovered == 0
    assert (whole.effects[0].d_posted, whole.effects[0].d_held) == (-100, -80)
    # Points that were burned (captured) are gone: those are unrecovered.
    spent = customer(40, lots=[lot("l", 40, 30)])
    assert r.plan_reversal(entry, None, {"c": spent}, system, ProgramRules()).unrecovered == 60


def test_holds_of_other_accounts_or_no_longer_active_are_left_alone():
    account = customer(100, held=0, lots=[lot("l", 100, 30)])
    elsewhere = Hold("h1", "other", 50, NOW + timedelta(minutes=5), seq=1)
    released = Hold("h2", "c", 50, NOW + timedelta(minutes=5), HoldState.RELEASED, seq=2)
    entry = ReversibleEntry("e", EntryType.EARN, 100, 0, "c", lot_id="l")
    plan = r.plan_reversal(
        entry, 50, {"c": account}, {AccountKind.ISSUANCE: ISSUANCE}, ProgramRules(), [elsewhere, released]
    )
    assert plan.voided_holds == () and plan.effects[0].d_held == 0


def test_a_transfer_reversal_voids_the_destinations_holds():
    source = customer(0)
    destination = Account("d", AccountKind.CUSTOMER, posted=50, held=50, lots=(lot("x", 50, 30),))
    hold = Hold("h", "d", 50, NOW + timedelta(minutes=5), seq=1)
    entry = ReversibleEntry("t", EntryType.TRANSFER, 50, 0, "c", counter_account_id="d")
    plan = r.plan_reversal(entry, None, {"c": source, "d": destination}, {}, ProgramRules(), [hold])
    assert plan.unrecovered == 0 and [h.hold_id for h in plan.voided_holds] == ["h"]


@given(
    st.lists(st.tuples(st.integers(0, 500), st.integers(0, 30_000)), max_size=6, unique_by=lambda t: t),
    st.integers(0, 600),
)
def test_the_tier_ladder_picks_the_highest_threshold_met(specs, points):
    tiers = tuple(Tier(f"T{i}", "", threshold, bps) for i, (threshold, bps) in enumerate(specs))
    reached = [t for t in tiers if points >= t.qualifying_points]
    best = max(reached, key=lambda t: (t.qualifying_points, t.earn_multiplier_bps), default=None)
    assert r.tier_for(tiers, points) == best


@pytest.mark.parametrize("value", ["x", "1234", "6f1e6a52-1c2b-4c8e-9d5e-3c0b5d2e9f1", "\x00" * 36])
def test_ids_are_the_uuids_the_ledger_issues(value):
    with pytest.raises(InvalidArgument) as error:
        r.require_id(value, "account_id")
    assert error.value.violations[0].field == "account_id"
    assert r.require_id("6F1E6A52-1C2B-4C8E-9D5E-3C0B5D2E9F10", "a") == "6f1e6a52-1c2b-4c8e-9d5e-3c0b5d2e9f10"


def test_pending_points_at_most_a_year_ahead():
    with pytest.raises(InvalidArgument) as error:
        r.plan_earn(customer(), ISSUANCE, 10, ProgramRules(), NOW, available_at=NOW + timedelta(days=400))
    assert error.value.violations[0].field == "available_time"


def test_tier_codes_fit_their_column():
    with pytest.raises(InvalidArgument):
        r.validate_rules(ProgramRules(tiers=(Tier("G" * 65, "", 1, 10_000),)))
    r.validate_rules(ProgramRules(tiers=(Tier("G" * 64, "", 1, 10_000),)))


def test_a_merge_moves_everything_with_its_dates_and_voids_the_holds():
    merged = Account(
        "m",
        AccountKind.CUSTOMER,
        posted=70,
        pending=5,
        held=20,
        lots=(
            lot("a", 30, 10, 0),
            lot("b", 40, None, 1),
            Lot("p", 5, None, 2, pending=True, available_at=NOW),
        ),
    )
    survivor = customer(10, lots=[lot("s", 10, 5)])
    hold = Hold("h", "m", 20, NOW + timedelta(minutes=5))
    plan = r.plan_merge(merged, survivor, [hold])
    assert sum(p.amount for p in plan.postings) == 0
    out, into = plan.effects
    assert (out.d_posted, out.d_pending, out.d_held) == (-70, -5, -20)
    assert (into.d_posted, into.d_pending) == (70, 5)
    assert sorted((n.amount, n.expires_at, n.pending) for n in into.new_lots) == sorted(
        [(30, NOW + timedelta(days=10), False), (40, None, False), (5, None, True)]
    )
    assert [h.state for h in plan.voided_holds] == [HoldState.VOIDED]
    emptied = r.apply_effect(merged, out, [], 0)
    assert r.plan_merge(emptied, survivor, []) is None


def test_reference_model_catches_an_overdrawn_hold():
    from loyalty_ledger.domain.memory import MemoryLedger

    ledger = MemoryLedger()
    account = ledger.open_account(ledger.create_program(ProgramRules()))
    earned = ledger.earn("k1", account, 100, NOW)
    ledger.hold("k2", account, 30, NOW)
    ledger.reverse("k3", earned, None, NOW)
    ledger.check_invariants()
    assert ledger.accounts[account].available == 0
