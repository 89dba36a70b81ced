"""Integer money: ISO 4217 exponents, explicit rounding, exact largest-remainder allocation."""

from collections.abc import Sequence
from functools import cache

import iso4217

from loyalty.promotion.v1 import settings_pb2

BPS = 10_000


@cache
def exponent(currency: str) -> int | None:
    """Minor-unit digits of an ISO 4217 currency (EUR 2, JPY 0, BHD 3); None = not a currency
    amounts can be in (unknown code, or a code without minor units such as XXX)."""
    try:
        return iso4217.Currency(currency).exponent
    except ValueError:
        return None


def round_div(numerator: int, denominator: int, mode: int) -> int:
    """numerator / denominator rounded to an integer by a RoundingMode; numerator >= 0, denominator > 0."""
    quotient, remainder = divmod(numerator, denominator)
    if remainder == 0 or mode in (settings_pb2.ROUNDING_MODE_FLOOR, settings_pb2.ROUNDING_MODE_TRUNCATE):
        return quotient
    if mode == settings_pb2.ROUNDING_MODE_CEILING:
        return quotient + 1
    twice = 2 * remainder
    if twice > denominator:
        return quotient + 1
    if twice < denominator:
        return quotient
    if mode == settings_pb2.ROUNDING_MODE_HALF_EVEN:
        return quotient + (quotient & 1)
    return quotient + 1  # HALF_UP (and the default)


def percent_of(amount: int, bps: int, mode: int) -> int:
    return round_div(amount * bps, BPS, mode)


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split total over weights pro rata so the shares sum to total exactly (largest remainder;
    equal remainders go to the earlier index). With total <= sum(weights) no share exceeds its
    weight. Zero weights get nothing unless every weight is zero (then the first takes it all)."""
    weight_sum = sum(weights)
    if not weights:
        return []
    if weight_sum == 0:
        return [total] + [0] * (len(weights) - 1)
    if total == 0:
        return [0] * len(weights)
    products = [total * weight for weight in weights]
    shares = [product // weight_sum for product in products]
    left = total - sum(shares)
    if left:
        ranked = sorted(range(len(weights)), key=lambda i: (-(products[i] % weight_sum), i))
        for index in ranked[:left]:
            shares[index] += 1
    return shares


def format_amount(amount_minor: int, currency: str) -> str:
    """12.50 EUR, 1250 JPY, 1.250 BHD: for hints a till prints."""
    digits = exponent(currency) or 0
    if digits == 0:
        return f"{amount_minor} {currency}"
    whole, fraction = divmod(amount_minor, 10**digits)
    return f"{whole}.{fraction:0{digits}d} {currency}"
