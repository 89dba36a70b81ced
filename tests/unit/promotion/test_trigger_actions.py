"""Triggers' actions and conditions, pure: what actions may say, the reward shorthand, webhook
URLs, secrets kept out of answers, and conditions compiled by the engine and tested against Facts
built from an event ("lifetime spend over 1000 or more than 10 orders, and BLACKFRIDAY not
redeemed")."""

from datetime import UTC, datetime

import pytest
from google.protobuf.duration_pb2 import Duration

from loyalty.common.v1 import money_pb2
from loyalty.promotion.v1 import condition_pb2 as cpb, reward_pb2, trigger_pb2 as tpb
from loyalty_promotion.app_trigger_conditions import condition_violations
from loyalty_promotion.domain import trigger_actions as rules, trigger_facts as adapter
from loyalty_promotion.engine.conditions import compile_condition
from loyalty_promotion.engine.model import Basket, Line
from loyalty_runtime.errors import Reason

NOW = datetime(2030, 11, 29, 12, tzinfo=UTC)
SECRET = "s" * 32


def webhook(url: str = "https://crm.example.com/hook", **fields) -> tpb.TriggerAction:
    return tpb.TriggerAction(call_webhook=tpb.WebhookAction(url=url, secret=SECRET, **fields))


def points(amount: int = 10) -> tpb.TriggerAction:
    return tpb.TriggerAction(award_points=reward_pb2.PointsReward(points=amount))


def trigger(*actions: tpb.TriggerAction, **fields) -> tpb.Trigger:
    return tpb.Trigger(display_name="t", event_type="purchase.committed", actions=actions, **fields)


def refused(candidate: tpb.Trigger) -> list[tuple[str, Reason]]:
    return [(r.violation.field, r.reason) for r in rules.violations(candidate)]


def test_the_reward_shorthand_is_one_action_and_either_one_is_required():
    shorthand = tpb.Trigger(reward=reward_pb2.Reward(voucher=reward_pb2.VoucherReward(campaign_id="c")))
    assert [a.WhichOneof("kind") for a in rules.actions_of(shorthand)] == ["issue_code"]
    assert refused(shorthand) == []
    assert refused(tpb.Trigger()) == [("trigger.actions", Reason.TRIGGER_ACTION_INVALID)]
    both = trigger(points(), reward=reward_pb2.Reward(points=reward_pb2.PointsReward(points=1)))
    assert refused(both) == [("trigger.reward", Reason.TRIGGER_ACTION_INVALID)]
    expired = tpb.Trigger(
        reward=reward_pb2.Reward(points=reward_pb2.PointsReward(points=1, expires_after=Duration(seconds=-1)))
    )
    assert refused(expired) == [("trigger.reward.points.expires_after", Reason.TRIGGER_ACTION_INVALID)]


@pytest.mark.parametrize(
    ("action", "field", "reason"),
    [
        (tpb.TriggerAction(), "trigger.actions[0]", Reason.TRIGGER_ACTION_INVALID),
        (points(0), "trigger.actions[0].award_points.points", Reason.TRIGGER_ACTION_INVALID),
        (
            tpb.TriggerAction(issue_code=reward_pb2.VoucherReward(campaign_id="c", valid_for=Duration())),
            "trigger.actions[0].issue_code.valid_for",
            Reason.TRIGGER_ACTION_INVALID,
        ),
        (
            tpb.TriggerAction(send_notification=tpb.NotificationAction()),
            "trigger.actions[0].send_notification.template_key",
            Reason.TRIGGER_ACTION_INVALID,
        ),
        (
            tpb.TriggerAction(send_notification=tpb.NotificationAction(template_key="k", channels=[0])),
            "trigger.actions[0].send_notification.channels",
            Reason.TRIGGER_ACTION_INVALID,
        ),
        (
            tpb.TriggerAction(add_to_segment=tpb.SegmentAction()),
            "trigger.actions[0].add_to_segment.segment_id",
            Reason.TRIGGER_ACTION_INVALID,
        ),
        (
            webhook("http://crm.example.com/hook"),
            "trigger.actions[0].call_webhook.url",
            Reason.TRIGGER_WEBHOOK_URL_REFUSED,
        ),
        (
            webhook("ftp://localhost/x"),
            "trigger.actions[0].call_webhook.url",
            Reason.TRIGGER_WEBHOOK_URL_REFUSED,
        ),
        (
            webhook("https://" + "a" * 2050),
            "trigger.actions[0].call_webhook.url",
            Reason.TRIGGER_WEBHOOK_URL_REFUSED,
        ),
        (
            webhook("https://user:pw@crm.example.com/"),
            "trigger.actions[0].call_webhook.url",
            Reason.TRIGGER_WEBHOOK_URL_REFUSED,
        ),
        (
            tpb.TriggerAction(call_webhook=tpb.WebhookAction(url="https://crm.example.com", secret="short")),
            "trigger.actions[0].call_webhook.secret",
            Reason.TRIGGER_ACTION_INVALID,
        ),
    ],
)
def test_what_an_action_may_not_say(action, field, reason):
    assert refused(trigger(action)) == [(field, reason)]


def test_plain_http_only_to_localhost_and_one_points_action():
    for url in (
        "http://localhost:8080/hook",
        "http://127.0.0.1/hook",
        "http://[::1]:9/hook",
        "https://x.example",
    ):
        assert rules.webhook_url_problem(url) is None, url
    assert refused(trigger(points(), points())) == [("trigger.actions", Reason.TRIGGER_ACTION_INVALID)]
    assert rules.points_action(trigger(webhook(), points(7))).award_points.points == 7


def test_answers_carry_no_secret_and_an_update_without_it_keeps_the_stored_one():
    stored = trigger(webhook())
    shown = tpb.Trigger()
    shown.CopyFrom(stored)
    rules.without_secrets(shown)
    assert shown.actions[0].call_webhook.secret == ""
    rules.keep_secrets(shown, stored)
    assert shown.actions[0].call_webhook.secret == SECRET
    moved = trigger(webhook("https://elsewhere.example.com/"))
    moved.actions[0].call_webhook.secret = ""
    rules.keep_secrets(moved, stored)
    assert moved.actions[0].call_webhook.secret == ""  # another URL: the secret must be given


def attribute(name: str, operator: int, value: cpb.AttributeValue | None = None) -> cpb.Condition:
    leaf = cpb.CustomerAttributeCondition(attribute=name, operator=operator)
    if value is not None:
        leaf.value.CopyFrom(value)
    return cpb.Condition(customer_attribute=leaf)


# "lifetime spend over 1000 or more than 10 orders, and BLACKFRIDAY not redeemed"
LOYAL_WITHOUT_BLACK_FRIDAY = cpb.Condition(
    all_of=cpb.ConditionList(
        conditions=[
            cpb.Condition(
                any_of=cpb.ConditionList(
                    conditions=[
                        attribute(
                            adapter.LIFETIME_SPEND,
                            cpb.ATTRIBUTE_OPERATOR_GREATER_THAN,
                            cpb.AttributeValue(int_value=100_000),
                        ),
                        attribute(
                            adapter.LIFETIME_ORDERS,
                            cpb.ATTRIBUTE_OPERATOR_GREATER_THAN,
                            cpb.AttributeValue(int_value=10),
                        ),
                    ]
                )
            ),
            cpb.Condition(
                negation=cpb.NotCondition(
                    condition=attribute("redeemed.BLACKFRIDAY", cpb.ATTRIBUTE_OPERATOR_IS_SET)
                )
            ),
        ]
    )
)


@pytest.mark.parametrize(
    ("spend", "orders", "redeemed", "holds"),
    [
        (100_001, 0, frozenset(), True),
        (0, 11, frozenset(), True),
        (100_000, 10, frozenset(), False),
        (200_000, 20, frozenset({"BLACKFRIDAY"}), False),
    ],
)
def test_the_loyal_customer_condition_is_the_engines_own_over_facts_from_the_event(
    spend, orders, redeemed, holds
):
    compiled = compile_condition(LOYAL_WITHOUT_BLACK_FRIDAY)
    told = adapter.EventFacts("c-1", lifetime_spend=spend, lifetime_orders=orders, redeemed_codes=redeemed)
    assert compiled.test(adapter.facts_of(told, NOW, "Europe/Vienna")) is holds
    needs = adapter.needs_of(LOYAL_WITHOUT_BLACK_FRIDAY)
    assert needs == adapter.Needs(metrics=True, codes=frozenset({"BLACKFRIDAY"})) and needs.remote


def test_a_purchase_condition_reads_the_purchased_basket_and_segments_come_from_the_event():
    over_50 = cpb.Condition(
        basket_subtotal=cpb.BasketSubtotalCondition(
            min_subtotal=money_pb2.Money(amount_minor=5000, currency_code="EUR")
        )
    )
    basket = Basket("EUR", (Line("l1", "sku", 1, 6000, 6000),))
    assert compile_condition(over_50).test(
        adapter.facts_of(adapter.EventFacts("c", basket=basket), NOW, "UTC")
    )
    assert not compile_condition(over_50).test(adapter.facts_of(adapter.EventFacts("c"), NOW, "UTC"))
    vip = cpb.Condition(
        customer_segment=cpb.SegmentCondition(segment_ids=["vip"], match=cpb.SEGMENT_MATCH_ANY)
    )
    facts = adapter.facts_of(adapter.EventFacts("c", segment_ids=frozenset({"vip"})), NOW, "UTC")
    assert compile_condition(vip).test(facts) and adapter.needs_of(vip) == adapter.Needs(segments=True)


def test_conditions_that_do_not_compile_or_read_what_the_event_cannot_tell_are_refused():
    broken = tpb.Trigger(
        event_type="customer.created",
        condition=cpb.Condition(expression=cpb.ExpressionCondition(cel="customer.")),
    )
    [violation] = condition_violations(broken)
    assert violation.field == "trigger.condition.expression.cel"
    basket = cpb.Condition(store=cpb.StoreCondition(store_ids=["s1"]))
    assert [
        v.field for v in condition_violations(tpb.Trigger(event_type="customer.created", condition=basket))
    ] == ["trigger.condition"]
    assert condition_violations(tpb.Trigger(event_type="purchase.committed", condition=basket)) == []
    unknown = attribute("metrics.favourite_colour", cpb.ATTRIBUTE_OPERATOR_IS_SET)
    assert condition_violations(tpb.Trigger(event_type="customer.created", condition=unknown))
    assert condition_violations(tpb.Trigger(event_type="customer.created", condition=cpb.Condition()))
    profile = attribute("favourite_colour", cpb.ATTRIBUTE_OPERATOR_IS_SET)
    assert condition_violations(tpb.Trigger(event_type="customer.created", condition=profile))
    birthday = cpb.Condition(birthday=cpb.BirthdayCondition(within_days=3))
    assert condition_violations(tpb.Trigger(event_type="customer.created", condition=birthday))
