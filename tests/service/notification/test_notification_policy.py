"""Before sending: frequency caps (also under concurrency), quiet hours in the customer's zone with
a controllable clock (deferred, not dropped), and bad input refused with nothing stored or sent."""

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from loyalty.common.v1 import customer_pb2
from loyalty.notification.v1 import (
    frequency_cap_pb2 as caps_pb,
    message_pb2 as mpb,
    notification_service_pb2 as api,
)
from loyalty.profile.v1 import profile_pb2
from tests.conftest import rpc_failure
from tests.service.notification.helpers import MARKETING, SMS, WEBHOOK, Client, key, variant

URL = "http://127.0.0.1:9/hook"  # nothing is delivered here: this module runs no delivery workers
MESSENGER = profile_pb2.CONSENT_CHANNEL_MESSENGER  # the consent a webhook message needs


async def _policy(client: Client, *, caps=(), quiet=None) -> None:
    policy = caps_pb.FrequencyCapPolicy(caps=list(caps))
    if quiet is not None:
        policy.quiet_hours.CopyFrom(quiet)
    await client.stub.UpdateFrequencyCapPolicy(
        api.UpdateFrequencyCapPolicyRequest(idempotency_key=key(), policy=policy), metadata=client.md
    )


def _day_cap(limit: int) -> caps_pb.FrequencyCap:
    return caps_pb.FrequencyCap(channel=WEBHOOK, max_messages=limit, window=Duration(seconds=86_400))


async def test_a_frequency_cap_suppresses_what_exceeds_it_for_marketing_only(tenant):
    customer = await tenant.enrol(marketing=[MESSENGER])
    await tenant.template("offer", purpose=MARKETING)
    await tenant.template()
    await _policy(tenant, caps=[_day_cap(2)])
    sent = [await tenant.send(customer, "offer", url=URL) for _ in range(3)]
    assert [m.status for m in sent] == [mpb.MESSAGE_STATUS_QUEUED] * 2 + [mpb.MESSAGE_STATUS_SUPPRESSED]
    assert sent[2].suppression_reason == mpb.SUPPRESSION_REASON_FREQUENCY_CAPPED
    transactional = await tenant.send(customer, url=URL)
    assert transactional.status == mpb.MESSAGE_STATUS_QUEUED


async def test_concurrent_sends_never_exceed_the_cap(tenant):
    customer = await tenant.enrol(marketing=[MESSENGER])
    await tenant.template("offer", purpose=MARKETING)
    await _policy(tenant, caps=[_day_cap(3)])
    sent = await asyncio.gather(*(tenant.send(customer, "offer", url=URL) for _ in range(10)))
    assert sum(m.status == mpb.MESSAGE_STATUS_QUEUED for m in sent) == 3
    assert sum(m.suppression_reason == mpb.SUPPRESSION_REASON_FREQUENCY_CAPPED for m in sent) == 7


@pytest.fixture
def clocked_tenant(clocked, profile_service) -> Client:
    return Client(clocked, profile_service, f"q-{key()[:8]}")


async def test_quiet_hours_defer_marketing_to_their_end_in_the_customers_zone(clocked_tenant, clocked, db):
    client = clocked_tenant
    customer = await client.enrol(marketing=[MESSENGER])
    await client.template("offer", purpose=MARKETING)
    quiet = caps_pb.QuietHours(start_minute=22 * 60, end_minute=7 * 60, default_time_zone="Europe/Berlin")
    await _policy(client, quiet=quiet)

    clocked.clock.now = datetime(2030, 6, 1, 21, 30, tzinfo=UTC)  # 23:30 in Berlin (CEST)
    deferred = await client.send(customer, "offer", url=URL)
    assert deferred.status == mpb.MESSAGE_STATUS_SCHEDULED
    assert deferred.scheduled_time.ToDatetime(UTC) == datetime(2030, 6, 2, 5, 0, tzinfo=UTC)  # 07:00 Berlin
    job_due = await db.fetchval(
        "SELECT run_at - now() FROM notification.jobs WHERE tenant_id = $1 AND state = 'queued'"
        " AND name = 'notification.deliver'",
        client.tenant_id,
    )
    assert timedelta(hours=7, minutes=29) < job_due <= timedelta(hours=7, minutes=30)  # kept, not dropped

    clocked.clock.now = datetime(2030, 6, 2, 10, 0, tzinfo=UTC)  # noon in Berlin
    assert (await client.send(customer, "offer", url=URL)).status == mpb.MESSAGE_STATUS_QUEUED

    tokyo = await client.enrol(marketing=[MESSENGER], time_zone="Asia/Tokyo")
    clocked.clock.now = datetime(2030, 6, 2, 14, 0, tzinfo=UTC)  # 16:00 in Berlin, 23:00 in Tokyo
    in_tokyo = await client.send(tokyo, "offer", url=URL)
    assert in_tokyo.status == mpb.MESSAGE_STATUS_SCHEDULED
    assert in_tokyo.scheduled_time.ToDatetime(UTC) == datetime(2030, 6, 2, 22, 0, tzinfo=UTC)  # 07:00 Tokyo


async def test_bad_input_is_refused_with_the_field_and_nothing_is_stored(tenant, db):
    customer = await tenant.enrol()
    await tenant.template()
    cases = [
        (
            tenant.send_request(customer, "nope", url=URL),
            grpc.StatusCode.NOT_FOUND,
            "TEMPLATE_NOT_FOUND",
            ["template_key"],
        ),
        (
            tenant.send_request(customer, locale="not a locale"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            ["locale"],
        ),
        (
            tenant.send_request("", url=URL),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RECIPIENT",
            ["recipient.customer_id"],
        ),
    ]
    for url in (
        "ftp://127.0.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/x",
        "http://metadata.google.internal/",
        "http://[::ffff:192.168.0.1]/",
        "not a url",
    ):
        cases.append(
            (
                tenant.send_request(customer, url=url),
                grpc.StatusCode.INVALID_ARGUMENT,
                "WEBHOOK_URL_REFUSED",
                ["webhook_url"],
            )
        )
    by_identifier = tenant.send_request(customer, url=URL)
    by_identifier.recipient.CopyFrom(
        customer_pb2.CustomerRef(
            identifier=customer_pb2.Identifier(
                type=customer_pb2.IDENTIFIER_TYPE_EMAIL, value="not-an-address"
            )
        )
    )
    cases.append(
        (by_identifier, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RECIPIENT", ["recipient.identifier.value"])
    )
    for request, code, reason, fields in cases:
        failure = await rpc_failure(tenant.stub.SendNotification(request, metadata=tenant.md))
        assert (failure.code, failure.reason, failure.fields) == (code, reason, fields), request.webhook_url
    assert (
        await db.fetchval("SELECT count(*) FROM notification.messages WHERE tenant_id = $1", tenant.tenant_id)
        == 0
    )


async def test_a_template_with_a_syntax_error_is_refused_on_save(tenant):
    bad = [variant(body="fine"), variant(locale="de", body="Hallo {{ customer.given_name ")]
    failure = await rpc_failure(tenant.template(variants=bad))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.reason == "TEMPLATE_SYNTAX_ERROR"
    assert failure.fields == ["template.variants[1].body"]
    unknown_filter = await rpc_failure(tenant.template(variants=[variant(body="{{ points | shout }}")]))
    assert unknown_filter.fields == ["template.variants[0].body"]
    missing = await rpc_failure(
        tenant.stub.GetTemplate(api.GetTemplateRequest(key="points"), metadata=tenant.md)
    )
    assert missing.reason == "TEMPLATE_NOT_FOUND"


async def test_render_falls_back_along_the_locale_chain_and_reports_missing_variables(tenant):
    template = await tenant.template(
        variants=[
            variant(subject="", locale="en", body="{{ points | number }} points"),
            variant(subject="", locale="pt", body="{{ points | number }} pontos"),
            variant(subject="", locale="pt-PT", body="{{ points | number }} pontos (PT)"),
        ]
    )

    async def render(locale: str, **variables):
        values = {name: mpb.TemplateValue(int_value=v) for name, v in variables.items()}
        request = api.RenderTemplateRequest(
            template_id=template.template_id, channel=WEBHOOK, locale=locale, variables=values
        )
        return await tenant.stub.RenderTemplate(request, metadata=tenant.md)

    assert ((r := await render("pt-BR", points=1200)).locale, r.body) == ("pt", "1.200 pontos")
    assert ((r := await render("pt-PT", points=5)).locale, r.body) == ("pt-PT", "5 pontos (PT)")
    assert ((r := await render("ja-JP", points=1200)).locale, r.body) == ("en", "1,200 points")
    missing = await render("en")
    assert list(missing.missing_variables) == ["points"] and missing.body == ""
    no_variant = await rpc_failure(
        tenant.stub.RenderTemplate(
            api.RenderTemplateRequest(template_id=template.template_id, channel=SMS),
            metadata=tenant.md,
        )
    )
    assert no_variant.reason == "TEMPLATE_VARIANT_NOT_FOUND"
