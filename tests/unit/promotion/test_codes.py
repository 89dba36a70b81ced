"""Code rules: normalising, why a voucher is refused (in a fixed order), the periods of the tenant's
calendar, budgets that never take part of a redemption, and generation from patterns: exact
entropy, no modulo bias, refusal of a space too small for the count, distinct codes."""

import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from loyalty.common.v1 import money_pb2
from loyalty.promotion.v1 import campaign_pb2
from loyalty_promotion.domain import codegen
from loyalty_promotion.domain.vouchers import (
    Usage,
    VoucherFacts,
    budget_rejection,
    code_problem,
    customer_scopes,
    normalize,
    period_key,
    rejection,
)
from loyalty_runtime.errors import Reason

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def voucher(**fields) -> VoucherFacts:
    values = dict(
        voucher_id="v1",
        campaign_id="c1",
        code="CODE",
        disabled=False,
        start=None,
        end=None,
        max_redemptions=0,
        max_per_customer=0,
        holder_customer_id=None,
        redemption_count=0,
        reserved_count=0,
    )
    return VoucherFacts(**(values | fields))


def test_codes_are_trimmed_and_upper_cased_and_checked():
    assert normalize("  summer-10 ") == "SUMMER-10"
    assert code_problem("SUMMER-10") == ""
    assert code_problem("") and code_problem("A B") and code_problem("-A") and code_problem("X" * 65)


@pytest.mark.parametrize(
    ("fields", "customer", "reason"),
    [
        ({}, "c", None),
        ({"disabled": True, "end": NOW - timedelta(days=1)}, "c", Reason.VOUCHER_DISABLED),
        ({"end": NOW, "max_redemptions": 1, "redemption_count": 1}, "c", Reason.VOUCHER_EXPIRED),
        ({"start": NOW + timedelta(seconds=1)}, "c", Reason.VOUCHER_NOT_YET_VALID),
        ({"max_redemptions": 2, "redemption_count": 1, "reserved_count": 1}, "c", Reason.VOUCHER_EXHAUSTED),
        ({"holder_customer_id": "someone"}, "c", Reason.VOUCHER_NOT_HOLDER),
        ({"holder_customer_id": "someone"}, "", Reason.VOUCHER_NOT_HOLDER),
        ({"holder_customer_id": "c"}, "c", None),
    ],
)
def test_a_voucher_is_refused_for_the_first_reason_that_holds(fields, customer, reason):
    assert rejection(voucher(**fields), customer, NOW) == reason


def test_periods_follow_the_tenants_calendar():
    late = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)  # already 2027 in Berlin
    assert period_key(campaign_pb2.LIMIT_PERIOD_DAY, late, "UTC") == "2026-12-31"
    assert period_key(campaign_pb2.LIMIT_PERIOD_DAY, late, "Europe/Berlin") == "2027-01-01"
    assert period_key(campaign_pb2.LIMIT_PERIOD_WEEK, late, "Europe/Berlin") == "2026-W53"
    assert period_key(campaign_pb2.LIMIT_PERIOD_MONTH, late, "Europe/Berlin") == "2027-01"


def test_scopes_are_sorted_so_every_reservation_locks_in_one_order():
    budget = campaign_pb2.Budget(
        max_redemptions_per_customer=3,
        max_redemptions_per_customer_per_period=1,
        period=campaign_pb2.LIMIT_PERIOD_DAY,
    )
    scopes = customer_scopes("c1", budget, {"p9": 2}, voucher(max_per_customer=1), NOW, "UTC")
    assert [(s.key, s.limit) for s in scopes] == [
        ("c:c1", 3),
        ("c:c1:2026-12-02", 1),
        ("p:p9", 2),
        ("v:v1", 1),
    ]


def test_a_budget_never_takes_part_of_a_redemption():
    budget = campaign_pb2.Budget(max_discount=money_pb2.Money(currency_code="EUR", amount_minor=1000))
    assert budget_rejection(budget, Usage(discount=900), 100, 0, "EUR") is None
    assert budget_rejection(budget, Usage(discount=901), 100, 0, "EUR") == Reason.BUDGET_EXHAUSTED
    assert budget_rejection(budget, Usage(), 100, 0, "USD") == Reason.BUDGET_EXHAUSTED
    points = campaign_pb2.Budget(max_points=50, max_redemptions=2)
    assert budget_rejection(points, Usage(redemptions=1, points=40), 0, 10, "EUR") is None
    assert budget_rejection(points, Usage(redemptions=2), 0, 0, "EUR") == Reason.BUDGET_EXHAUSTED
    per_store = campaign_pb2.Budget(max_redemptions_per_store=2)
    assert budget_rejection(per_store, Usage(redemptions=9, at_store=1), 0, 0, "EUR") is None
    assert budget_rejection(per_store, Usage(at_store=2), 0, 0, "EUR") == Reason.STORE_LIMIT_REACHED


def test_entropy_and_the_space_are_exact():
    pattern = codegen.parse("spring-####-####")
    assert pattern.template == "SPRING-%s%s%s%s-%s%s%s%s"
    assert (pattern.space, pattern.entropy_bits) == (32**8, 40.0)
    assert codegen.parse("######", "0123456789").entropy_bits == pytest.approx(19.93, abs=0.01)


def test_a_space_too_small_for_the_count_is_refused():
    with pytest.raises(codegen.PatternRefused) as refused:
        codegen.check_space(codegen.parse("####", "0123456789"), 1_000_000)
    assert refused.value.too_small
    codegen.check_space(codegen.parse("####", "0123456789"), 100)
    for bad in ("NOHASH", "A B#", "#" * 65):
        with pytest.raises(codegen.PatternRefused):
            codegen.parse(bad)
    with pytest.raises(codegen.PatternRefused):
        codegen.parse("##", "AAB")


def test_characters_are_uniform_without_modulo_bias():
    # 10 characters: bytes 250..255 would favour the first six if they were kept.
    drawn = codegen.random_characters("0123456789", 200_000, secrets.token_bytes)
    counts = Counter(drawn)
    assert set(counts) == set("0123456789")
    assert max(counts.values()) - min(counts.values()) < 2_000  # about 7 sigma of 20,000 each
    biased = codegen.random_characters("0123456789", 10, lambda n: bytes([255] * (n - 1) + [3]))
    assert biased[0] == "3"  # every 255 was dropped, not mapped to "5"


def test_generated_codes_are_distinct_even_when_the_source_repeats():
    pattern = codegen.parse("X-##", "AB")
    repeating = iter([b"\x00\x00", b"\x00\x01", b"\x01\x00", b"\x01\x01"] * 100)
    codes = codegen.generate(pattern, 4, lambda n: b"".join(next(repeating) for _ in range(max(1, n // 2))))
    assert sorted(codes) == ["X-AA", "X-AB", "X-BA", "X-BB"]
