"""Return arithmetic: shares are cumulative, so returning a line unit by unit or at once reverses
exactly the line's discounts, points and price."""

from hypothesis import given, strategies as st

from loyalty_promotion.domain.returns import CommittedLine, plan_return


def line(units: int, final: int, points: int, *discounts: tuple[str, int]) -> CommittedLine:
    return CommittedLine("l0", units, False, final, points, tuple(discounts))


@given(
    units=st.integers(1, 12),
    final=st.integers(0, 10_000),
    points=st.integers(0, 500),
    discount=st.integers(0, 3_000),
    steps=st.lists(st.integers(1, 4), min_size=1, max_size=12),
)
def test_returning_in_any_steps_adds_up_to_the_line_exactly(units, final, points, discount, steps):
    committed = [line(units, final, points, ("p1", discount))]
    returned, totals = 0, [0, 0, 0]
    for step in steps:
        step = min(step, units - returned)
        if step == 0:
            break
        (part,) = plan_return(committed, {"l0": returned}, [("l0", step, 0)], False)
        returned += step
        totals = [totals[0] + part.discount, totals[1] + part.points, totals[2] + part.refund]
    if returned < units:
        (part,) = plan_return(committed, {"l0": returned}, [], True)
        totals = [totals[0] + part.discount, totals[1] + part.points, totals[2] + part.refund]
    assert totals == [discount, points, final]


def test_one_unit_of_three_takes_its_third():
    (part,) = plan_return([line(3, 2700, 27, ("p1", 300))], {}, [("l0", 1, 0)], False)
    assert (part.discount, part.points, part.refund, part.by_promotion) == (100, 9, 900, {"p1": 100})
