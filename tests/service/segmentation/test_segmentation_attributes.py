"""Attribute conditions over segmentation's own copy of profile attributes, through a real profile
server: enrolments and updates reach segmentation as profile events and a sync job; a backfill
copies every profile from profile's streamed export; another tenant's customers and attributes
never count; unknown attributes and wrong operand types are refused."""

import asyncio
from datetime import datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2

from loyalty.common.v1 import customer_pb2, date_pb2
from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as papi
from loyalty.segmentation.v1 import condition_pb2 as c, segmentation_service_pb2 as api
from loyalty_runtime.errors import bad_request, error_info
from tests.service.segmentation.conftest import START
from tests.service.segmentation.helpers import Client, all_of, key
from tests.service.segmentation.test_segmentation_service import details

EQ, GTE = c.COMPARISON_OPERATOR_EQUALS, c.COMPARISON_OPERATOR_GREATER_THAN_OR_EQUALS
MARKETING_EMAIL = {
    "channel": profile_pb2.CONSENT_CHANNEL_EMAIL,
    "purpose": profile_pb2.CONSENT_PURPOSE_MARKETING,
}


def attribute(name: str, op, value: c.Value | None = None, values=()) -> c.Condition:
    condition = c.AttributeCondition(attribute=name, operator=op, values=list(values))
    if value is not None:
        condition.value.CopyFrom(value)
    return c.Condition(attribute=condition)


# "Women 25-40 with marketing consent, in a city starting with 'wien'."
WOMEN_25_40 = all_of(
    attribute("gender", EQ, c.Value(string_value="female")),
    attribute("age", c.COMPARISON_OPERATOR_BETWEEN, values=[c.Value(int_value=25), c.Value(int_value=40)]),
    attribute("consent.email.marketing", EQ, c.Value(bool_value=True)),
    attribute("city", c.COMPARISON_OPERATOR_STARTS_WITH, c.Value(string_value="WIEN")),
)


class Profiles:
    """A tenant's view of the real profile service."""

    def __init__(self, profile, tenant: str) -> None:
        self.stub, self.md = profile.stub, profile.metadata(tenant)

    async def define(self, name: str, kind) -> None:
        definition = profile_pb2.AttributeDefinition(name=name, type=kind)
        await self.stub.DefineAttribute(
            papi.DefineAttributeRequest(idempotency_key=key(), definition=definition), metadata=self.md
        )

    async def enrol(self, born: tuple[int, int, int], consent: bool, **attributes) -> str:
        request = papi.EnrolCustomerRequest(
            idempotency_key=key(),
            identifiers=[
                customer_pb2.Identifier(type=customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD, value=key()[:12])
            ],
            birth_date=date_pb2.Date(year=born[0], month=born[1], day=born[2]),
            attributes={n: profile_pb2.AttributeValue(string_value=v) for n, v in attributes.items()},
            consents=[profile_pb2.Consent(**MARKETING_EMAIL, granted=consent, source="test")],
        )
        return (await self.stub.EnrolCustomer(request, metadata=self.md)).customer.customer_id

    async def move(self, customer_id: str, city: str) -> None:
        await self.stub.UpdateCustomer(
            papi.UpdateCustomerRequest(
                idempotency_key=key(),
                customer=profile_pb2.Customer(
                    customer_id=customer_id,
                    attributes={"city": profile_pb2.AttributeValue(string_value=city)},
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["attributes.city"]),
            ),
            metadata=self.md,
        )


async def eventually(check, what: str):
    for _ in range(300):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


@pytest.fixture
async def profiles(profile, tenant) -> Profiles:
    people = Profiles(profile, tenant.tenant)
    await people.define("gender", profile_pb2.ATTRIBUTE_TYPE_STRING)
    await people.define("city", profile_pb2.ATTRIBUTE_TYPE_STRING)
    return people


async def backfilled(tenant: Client, db) -> None:
    await tenant.BackfillProfiles(api.BackfillProfilesRequest(idempotency_key=key()))

    async def finished():
        return await db.fetchval(
            "SELECT finished_at IS NOT NULL FROM segmentation.profile_backfills WHERE tenant_id = $1",
            tenant.tenant,
        )

    await eventually(finished, "the backfill finished")


async def test_profile_events_keep_attribute_segments_current(tenant, other_tenant, profiles, profile, db):
    assert START.year == 2030
    await backfilled(tenant, db)  # the attribute types: defined, but no customer has them yet
    segment = await tenant.rule_segment(WOMEN_25_40)
    anna = await profiles.enrol((1995, 6, 30), True, gender="female", city="Wien Mitte")  # 35 today
    await profiles.enrol((1995, 6, 30), False, gender="female", city="Wien")  # no consent
    await profiles.enrol((1989, 7, 1), True, gender="female", city="Wien")  # 40 until tomorrow: in
    too_old = await profiles.enrol((1989, 6, 30), True, gender="female", city="Wien")  # 41 today
    await profiles.enrol((1995, 1, 1), True, gender="male", city="Wien")
    stranger = Profiles(profile, other_tenant.tenant)
    await stranger.define("gender", profile_pb2.ATTRIBUTE_TYPE_STRING)
    await stranger.define("city", profile_pb2.ATTRIBUTE_TYPE_STRING)
    await stranger.enrol((1995, 6, 30), True, gender="female", city="Wien")

    async def two_members():
        return len(await tenant.members(segment.segment_id)) == 2

    await eventually(two_members, "two members")
    members = await tenant.members(segment.segment_id)
    assert anna in members and too_old not in members
    await profiles.move(anna, "Graz")  # customer.updated -> sync -> she leaves

    async def anna_left():
        return anna not in await tenant.members(segment.segment_id)

    await eventually(anna_left, "anna left")
    assert len(await tenant.members(segment.segment_id)) == 1


async def test_a_backfill_copies_every_profile_and_recomputes_the_segments(tenant, profiles, db):
    ids = [await profiles.enrol((1990, 1, 1), True, gender="female", city="Wien") for _ in range(7)]

    async def synced():
        copied = await db.fetchval(
            "SELECT count(*) FROM segmentation.customers WHERE tenant_id = $1 AND attributes ? 'city'",
            tenant.tenant,
        )
        return copied == 7

    await eventually(synced, "the events synced every profile")
    # Segmentation deployed late: its copy is empty and the tenant's attributes unknown to it.
    await db.execute(
        "UPDATE segmentation.customers SET attributes = '{}', consents = '{}', birth_date = NULL WHERE tenant_id = $1",
        tenant.tenant,
    )
    await db.execute("DELETE FROM segmentation.attribute_types WHERE tenant_id = $1", tenant.tenant)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await tenant.rule_segment(WOMEN_25_40)
    assert error_info(details(raised.value)).reason == "SEGMENT_ATTRIBUTE_UNKNOWN"
    await backfilled(tenant, db)  # 7 profiles, 2 per page, 3 per job: three jobs
    segment = await tenant.rule_segment(WOMEN_25_40)
    assert await tenant.members(segment.segment_id) == set(ids)
    copied = await db.fetchval(
        "SELECT copied FROM segmentation.profile_backfills WHERE tenant_id = $1", tenant.tenant
    )
    assert copied == 7
    again = await tenant.BackfillProfiles(api.BackfillProfilesRequest(idempotency_key=key()))
    assert again.started  # the last one had finished: a new one starts


async def test_attribute_rules_name_known_attributes_with_operands_of_their_type(
    tenant, other_tenant, profile, db
):
    await Profiles(profile, other_tenant.tenant).define("shoe_size", profile_pb2.ATTRIBUTE_TYPE_INT)
    await backfilled(other_tenant, db)  # segmentation knows shoe_size, for the other tenant only
    rule = all_of(
        attribute("shoe_size", EQ, c.Value(int_value=42)),  # another tenant's attribute: unknown here
        attribute("age", EQ, c.Value(string_value="old")),
        attribute("birth_date", c.COMPARISON_OPERATOR_CONTAINS, c.Value(string_value="1990")),
        attribute("consent.fax.marketing", EQ, c.Value(bool_value=True)),
        attribute("birth_date", c.COMPARISON_OPERATOR_ANNIVERSARY_WITHIN_DAYS, c.Value(int_value=0)),
        attribute("birth_date", GTE, c.Value(date_value=date_pb2.Date(year=2030, month=2, day=30))),
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await tenant.EstimateSegmentSize(api.EstimateSegmentSizeRequest(rule=rule))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = details(raised.value)
    assert error_info(status).reason == "SEGMENT_ATTRIBUTE_UNKNOWN"
    assert [v.field for v in bad_request(status).field_violations] == [
        "rule.all_of.conditions[0].attribute.attribute",
        "rule.all_of.conditions[1].attribute.value",
        "rule.all_of.conditions[2].attribute.operator",
        "rule.all_of.conditions[3].attribute.attribute",
        "rule.all_of.conditions[4].attribute.value",
        "rule.all_of.conditions[5].attribute.value",
    ]


async def test_birthdays_and_relative_dates_over_the_copy(tenant, db):
    """Dates against the server's clock: anniversaries (29 February on the 28th), relative days."""
    for customer, born in (("leap", "2000-02-29"), ("today", "1980-06-30"), ("later", "1980-07-08")):
        await tenant.purchase(customer, START, 100)
        await db.execute(
            "UPDATE segmentation.customers SET birth_date = $3, enrolled_at = $4 WHERE tenant_id = $1 AND customer_id = $2",
            tenant.tenant,
            customer,
            datetime.fromisoformat(born).date(),
            START,
        )
    week = await tenant.rule_segment(
        attribute("birth_date", c.COMPARISON_OPERATOR_ANNIVERSARY_WITHIN_DAYS, c.Value(int_value=7))
    )
    assert await tenant.members(week.segment_id) == {"today"}  # 8 July is 8 days away
    adults = await tenant.rule_segment(
        attribute("birth_date", c.COMPARISON_OPERATOR_LESS_THAN, c.Value(relative_days=-40 * 365))
    )
    assert await tenant.members(adults.segment_id) == {"today", "later"}
    tenant.service.clock.now = datetime(2031, 2, 27, 12, tzinfo=START.tzinfo)
    try:
        leap = await tenant.rule_segment(
            attribute("birth_date", c.COMPARISON_OPERATOR_ANNIVERSARY_WITHIN_DAYS, c.Value(int_value=2))
        )
        assert await tenant.members(leap.segment_id) == {"leap"}  # 28 Feb 2031 is within 2 days
    finally:
        tenant.service.clock.now = START
    unknown = await tenant.EstimateSegmentSize(
        api.EstimateSegmentSizeRequest(
            rule=attribute("enrol_time", c.COMPARISON_OPERATOR_EXISTS), sample_size=5
        )
    )
    assert (unknown.matching_count, list(unknown.sample_customer_ids)) == (3, ["later", "leap", "today"])


async def test_a_running_backfill_is_not_started_twice_but_a_dead_one_is_restarted(tenant, db):
    await db.execute(
        "INSERT INTO segmentation.profile_backfills (tenant_id, copied, started_at) VALUES ($1, 5, $2)",
        tenant.tenant,
        START,
    )
    running = await tenant.BackfillProfiles(api.BackfillProfilesRequest(idempotency_key=key()))
    assert not running.started
    await db.execute(
        "UPDATE segmentation.profile_backfills SET started_at = $2 WHERE tenant_id = $1",
        tenant.tenant,
        START - timedelta(hours=2),
    )
    restarted = await tenant.BackfillProfiles(api.BackfillProfilesRequest(idempotency_key=key()))
    assert restarted.started
    await backfilled(tenant, db)
