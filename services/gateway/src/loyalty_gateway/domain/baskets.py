"""What a basket must be before anything is asked of another service, and the arithmetic of returns."""

from loyalty_runtime.errors import InvalidArgument, Reason

MAX_LINES = 100
MAX_UNITS = 1_000_000
MAX_AMOUNT = 10**12


def check_basket(basket, currency: str) -> None:
    if not basket.lines:
        raise InvalidArgument(Reason.INVALID_LINE, "the basket has no lines", field="basket.lines")
    if len(basket.lines) > MAX_LINES:
        raise InvalidArgument(Reason.TOO_MANY_LINES, f"at most {MAX_LINES} lines", field="basket.lines")
    if basket.currency_code != currency:
        raise InvalidArgument(
            Reason.CURRENCY_MISMATCH if basket.currency_code else Reason.UNKNOWN_CURRENCY,
            f"the tenant's baskets are in {currency}",
            field="basket.currency_code",
        )
    seen = set()
    for n, line in enumerate(basket.lines):
        where = f"basket.lines[{n}]"
        if not line.line_id or line.line_id in seen:
            raise InvalidArgument(
                Reason.INVALID_LINE, "every line needs its own line_id", field=f"{where}.line_id"
            )
        seen.add(line.line_id)
        units = units_of(line)
        if not 0 < units <= MAX_UNITS or (line.quantity and line.quantity_milli):
            raise InvalidArgument(
                Reason.INVALID_LINE, "a positive quantity (or quantity_milli)", field=f"{where}.quantity"
            )
        for name in ("unit_price", "line_total"):
            money = getattr(line, name)
            if money.currency_code and money.currency_code != currency:
                raise InvalidArgument(
                    Reason.CURRENCY_MISMATCH, f"the basket is in {currency}", field=f"{where}.{name}"
                )
            if not 0 <= money.amount_minor <= MAX_AMOUNT:
                raise InvalidArgument(
                    Reason.INVALID_AMOUNT, "an amount from 0 to 10^12", field=f"{where}.{name}"
                )


def units_of(line) -> int:
    """Units a line is counted (and returned) in: pieces, or thousandths for weighed goods."""
    return line.quantity or line.quantity_milli


def share(total: int, returned_so_far: int, returned_before: int, units: int) -> int:
    """This return's part of `total` for a line of `units` units: cumulative floors, so returning every
    unit gives back exactly `total` whatever the partial returns were."""
    return total * returned_so_far // units - total * returned_before // units
