"""A checkout's lines share its earn and burn exactly: the burn allocated over the lines adds up to
what was burned, and returning every unit of every line, in any number of partial returns in any
order, reverses exactly the whole earn and restores exactly the whole burn, never more on the way."""

import pytest
from hypothesis import given, strategies as st

from loyalty_ledger.domain import rules as r
from loyalty_ledger.domain.model import Checkout, CheckoutLine, LineReturn
from loyalty_runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Reason

lines_strategy = st.lists(
    st.tuples(st.integers(1, 12), st.integers(0, 10_000), st.integers(0, 10_000)), min_size=1, max_size=8
)


def make_lines(specs, with_burn: bool = True) -> tuple[CheckoutLine, ...]:
    return tuple(
        CheckoutLine(f"line-{i}", quantity, earn, burn if with_burn else 0)
        for i, (quantity, earn, burn) in enumerate(specs)
    )


@st.composite
def return_plans(draw, lines: tuple[CheckoutLine, ...]) -> list[list[LineReturn]]:
    """Every unit of every line, split into partial returns, lines in any order."""
    units = [line.line_id for line in lines for _ in range(line.quantity)]
    units = draw(st.permutations(units))
    returns: list[list[LineReturn]] = []
    while units:
        size = draw(st.integers(1, len(units)))
        batch, units = units[:size], units[size:]
        counts: dict[str, int] = {}
        for line_id in batch:
            counts[line_id] = counts.get(line_id, 0) + 1
        returns.append([LineReturn(line_id, quantity) for line_id, quantity in counts.items()])
    return returns


@given(specs=lines_strategy, data=st.data())
def test_returning_every_unit_reverses_exactly_the_earn_and_restores_exactly_the_burn(specs, data):
    lines = make_lines(specs)
    returned: dict[str, int] = {}
    earn_back = burn_back = 0
    per_line = {line.line_id: [0, 0] for line in lines}
    for batch in data.draw(return_plans(lines)):
        checkout = Checkout("c", "a", "p", "e", "b", lines, dict(returned))
        planned = r.plan_line_returns(checkout, batch)
        for line_return in planned:
            assert line_return.earn_reversed >= 0 and line_return.burn_restored >= 0
            per_line[line_return.line_id][0] += line_return.earn_reversed
            per_line[line_return.line_id][1] += line_return.burn_restored
            returned[line_return.line_id] = returned.get(line_return.line_id, 0) + line_return.quantity
            earn_back += line_return.earn_reversed
            burn_back += line_return.burn_restored
        # So far, exactly what the units returned carry, rounded down: never more.
        for line in lines:
            n = returned.get(line.line_id, 0)
            assert per_line[line.line_id] == [
                line.earn_points * n // line.quantity,
                line.burn_points * n // line.quantity,
            ]
    assert earn_back == sum(line.earn_points for line in lines)
    assert burn_back == sum(line.burn_points for line in lines)
    assert all(per_line[line.line_id] == [line.earn_points, line.burn_points] for line in lines)


@given(specs=lines_strategy, burned=st.integers(0, 100_000))
def test_an_unallocated_burn_is_spread_over_the_units_exactly(specs, burned):
    lines = make_lines(specs, with_burn=False)
    allocated = r.allocate_burn(lines, burned)
    assert sum(line.burn_points for line in allocated) == burned
    units = sum(line.quantity for line in lines)
    for line in allocated:
        # Largest remainder: each line within one point of its exact share.
        assert abs(line.burn_points * units - burned * line.quantity) < units


def test_a_given_allocation_must_add_up_to_the_burn():
    lines = (CheckoutLine("a", 1, 10, 30), CheckoutLine("b", 2, 0, 20))
    assert r.allocate_burn(lines, 50) == lines
    with pytest.raises(InvalidArgument) as error:
        r.allocate_burn(lines, 49)
    assert error.value.violations[0].field == "lines"


@pytest.mark.parametrize(
    "line, field",
    [
        (CheckoutLine("", 1, 1), "lines[0].line_id"),
        (CheckoutLine("a", 0, 1), "lines[0].quantity"),
        (CheckoutLine("a", r.MAX_UNITS + 1, 1), "lines[0].quantity"),
        (CheckoutLine("a", 1, -1), "lines[0].earn_points"),
        (CheckoutLine("a", 1, 1, -5), "lines[0].burn_points"),
    ],
)
def test_bad_lines_are_refused_with_their_field(line, field):
    with pytest.raises(InvalidArgument) as error:
        r.validate_lines([line])
    assert error.value.violations[0].field == field


def test_lines_are_required_and_unique():
    with pytest.raises(InvalidArgument):
        r.validate_lines([])
    with pytest.raises(InvalidArgument) as error:
        r.validate_lines([CheckoutLine("a", 1, 1), CheckoutLine("a", 1, 1)])
    assert error.value.violations[0].field == "lines[1].line_id"


def test_returns_beyond_a_line_or_of_unknown_lines_are_refused():
    checkout = Checkout("c", "a", "p", "e", None, (CheckoutLine("a", 3, 30),), {"a": 2})
    with pytest.raises(FailedPrecondition) as exceeded:
        r.plan_line_returns(checkout, [LineReturn("a", 2)])
    assert exceeded.value.reason is Reason.RETURN_EXCEEDS_LINE
    with pytest.raises(NotFound) as unknown:
        r.plan_line_returns(checkout, [LineReturn("zz", 1)])
    assert unknown.value.reason is Reason.CHECKOUT_LINE_NOT_FOUND
    with pytest.raises(InvalidArgument):
        r.plan_line_returns(checkout, [LineReturn("a", 1), LineReturn("a", 1)])
    # The last unit takes what rounding left: 30 * 2 // 3 = 20 so far, the third unit 10.
    assert r.plan_line_returns(checkout, [LineReturn("a", 1)]) == (LineReturn("a", 1, 10, 0),)
