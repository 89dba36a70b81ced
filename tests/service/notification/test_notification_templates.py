"""ListTemplates, UpdateTemplate and DeleteTemplate over the real server: paging and filters,
updates checked on save and guarded by the etag (also under concurrency), archiving, bad input, and
another tenant's templates looking exactly like unknown ones."""

import asyncio
import uuid

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from loyalty.notification.v1 import message_pb2 as mpb, notification_service_pb2 as api, template_pb2 as tpb
from tests.conftest import rpc_failure
from tests.service.notification.helpers import MARKETING, SMS, WEBHOOK, Client, key, variant


async def _list(client: Client, **fields) -> api.ListTemplatesResponse:
    return await client.stub.ListTemplates(api.ListTemplatesRequest(**fields), metadata=client.md)


async def _update(client: Client, template: tpb.Template, *paths: str) -> tpb.Template:
    request = api.UpdateTemplateRequest(
        idempotency_key=key(), template=template, update_mask=FieldMask(paths=list(paths))
    )
    return (await client.stub.UpdateTemplate(request, metadata=client.md)).template


async def _delete(client: Client, template_id: str, etag: str = "") -> tpb.Template:
    request = api.DeleteTemplateRequest(idempotency_key=key(), template_id=template_id, etag=etag)
    return (await client.stub.DeleteTemplate(request, metadata=client.md)).template


async def test_templates_are_listed_by_key_in_pages_with_filters(tenant, notification):
    for name in ("e", "b", "d", "a", "c"):
        await tenant.template(name, purpose=MARKETING if name in "bd" else tpb.MESSAGE_PURPOSE_TRANSACTIONAL)
    seen, token = [], ""
    while True:
        page = await _list(tenant, page_size=2, page_token=token)
        assert len(page.templates) <= 2
        seen += [t.key for t in page.templates]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["a", "b", "c", "d", "e"]
    marketing = await _list(tenant, purpose=MARKETING)
    assert [t.key for t in marketing.templates] == ["b", "d"]

    archived = (await _list(tenant)).templates[2]
    await _delete(tenant, archived.template_id)
    assert [t.key for t in (await _list(tenant)).templates] == ["a", "b", "d", "e"]
    everything = await _list(tenant, show_archived=True)
    assert [(t.key, t.state) for t in everything.templates][2] == ("c", tpb.TEMPLATE_STATE_ARCHIVED)

    other = Client(notification, tenant.profile, f"o-{key()[:8]}")
    assert list((await _list(other)).templates) == []


async def test_list_templates_refuses_bad_input(tenant):
    for fields, field in (
        ({"page_size": -1}, "page_size"),
        ({"page_token": "%%%"}, "page_token"),
        ({"purpose": 9}, "purpose"),
    ):
        failure = await rpc_failure(
            tenant.stub.ListTemplates(api.ListTemplatesRequest(**fields), metadata=tenant.md)
        )
        assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])


async def test_an_update_changes_what_the_mask_names_and_bumps_the_etag(tenant):
    created = await tenant.template()
    renamed = await _update(
        tenant,
        tpb.Template(template_id=created.template_id, display_name="Points", etag=created.etag),
        "display_name",
    )
    assert (renamed.display_name, renamed.version, renamed.etag) == ("Points", 2, "2")
    assert list(renamed.variants) == list(created.variants) and renamed.key == created.key

    new_body = variant(body="Now {{ points | number }} pts", subject="")
    replaced = await _update(
        tenant,
        tpb.Template(template_id=created.template_id, variants=[new_body, variant(SMS, body="{{ points }}")]),
        "variants",
    )
    assert replaced.version == 3 and len(replaced.variants) == 2
    rendered = await tenant.stub.RenderTemplate(
        api.RenderTemplateRequest(
            template_id=created.template_id,
            channel=WEBHOOK,
            variables={"points": mpb.TemplateValue(int_value=1500)},
        ),
        metadata=tenant.md,
    )
    assert rendered.body == "Now 1,500 pts"

    # An empty mask replaces every updatable field.
    whole = tpb.Template(
        template_id=created.template_id,
        display_name="All",
        purpose=MARKETING,
        variants=[variant(locale="de")],
        default_locale="de",
        variable_names=["points"],
    )
    everything = await _update(tenant, whole)
    assert (everything.purpose, everything.default_locale, list(everything.variable_names)) == (
        MARKETING,
        "de",
        ["points"],
    )
    got = await tenant.stub.GetTemplate(
        api.GetTemplateRequest(template_id=created.template_id), metadata=tenant.md
    )
    assert got.template == everything


async def test_an_update_is_checked_on_save_and_refused_whole(tenant):
    created = await tenant.template()
    ref = tpb.Template(template_id=created.template_id)
    cases = [
        (
            tpb.Template(template_id=created.template_id, variants=[variant(body="{{ points ")]),
            ["variants"],
            (grpc.StatusCode.INVALID_ARGUMENT, "TEMPLATE_SYNTAX_ERROR", ["template.variants[0].body"]),
        ),
        (
            tpb.Template(template_id=created.template_id, variants=[variant(), variant()]),
            ["variants"],
            (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["template.variants[1]"]),
        ),
        (ref, ["variants"], (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["template.variants"])),
        (ref, ["purpose"], (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["template.purpose"])),
        (
            tpb.Template(template_id=created.template_id, default_locale="not a locale"),
            ["default_locale"],
            (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["template.default_locale"]),
        ),
        (ref, ["key"], (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["update_mask"])),
        (
            tpb.Template(template_id="not-an-id", display_name="x"),
            ["display_name"],
            (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["template.template_id"]),
        ),
        (
            tpb.Template(template_id=str(uuid.uuid4()), display_name="x"),
            ["display_name"],
            (grpc.StatusCode.NOT_FOUND, "TEMPLATE_NOT_FOUND", ["template.template_id"]),
        ),
        (
            tpb.Template(template_id=created.template_id, display_name="x", etag="7"),
            ["display_name"],
            (grpc.StatusCode.ABORTED, "CONCURRENT_MODIFICATION", ["etag"]),
        ),
    ]
    for template, paths, expected in cases:
        failure = await rpc_failure(_update(tenant, template, *paths))
        assert (failure.code, failure.reason, failure.fields) == expected, paths
    got = await tenant.stub.GetTemplate(
        api.GetTemplateRequest(template_id=created.template_id), metadata=tenant.md
    )
    assert got.template == created


async def test_another_tenants_template_looks_unknown(tenant, notification, db):
    created = await tenant.template()
    other = Client(notification, tenant.profile, f"o-{key()[:8]}")
    unknown = tpb.Template(template_id=str(uuid.uuid4()), display_name="x")
    theirs = tpb.Template(template_id=created.template_id, display_name="x")
    answers = [await rpc_failure(_update(other, t, "display_name")) for t in (unknown, theirs)]
    assert answers[0].code == answers[1].code == grpc.StatusCode.NOT_FOUND
    assert answers[0].reason == answers[1].reason == "TEMPLATE_NOT_FOUND"
    for template_id in (str(uuid.uuid4()), created.template_id):
        failure = await rpc_failure(_delete(other, template_id))
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "TEMPLATE_NOT_FOUND")
    assert (
        await db.fetchval(
            "SELECT version FROM notification.templates WHERE template_id = $1",
            uuid.UUID(created.template_id),
        )
        == 1
    )


async def test_concurrent_updates_with_one_etag_let_exactly_one_win(tenant):
    created = await tenant.template()

    async def rename(index: int):
        template = tpb.Template(template_id=created.template_id, display_name=f"n{index}", etag=created.etag)
        try:
            return await _update(tenant, template, "display_name")
        except grpc.aio.AioRpcError as error:
            return error.code()

    answers = await asyncio.gather(*(rename(i) for i in range(8)))
    winners = [a for a in answers if isinstance(a, tpb.Template)]
    assert len(winners) == 1 and winners[0].version == 2
    assert sorted(a.name for a in answers if not isinstance(a, tpb.Template)) == ["ABORTED"] * 7
    got = await tenant.stub.GetTemplate(
        api.GetTemplateRequest(template_id=created.template_id), metadata=tenant.md
    )
    assert got.template.display_name == winners[0].display_name


async def test_a_deleted_template_is_archived_and_sends_no_more(tenant):
    created = await tenant.template()
    customer = await tenant.enrol()
    queued = await tenant.send(customer, url="http://127.0.0.1:9/hook")
    stale = await rpc_failure(_delete(tenant, created.template_id, etag="5"))
    assert (stale.code, stale.reason) == (grpc.StatusCode.ABORTED, "CONCURRENT_MODIFICATION")
    archived = await _delete(tenant, created.template_id, etag=created.etag)
    assert (archived.state, archived.version) == (tpb.TEMPLATE_STATE_ARCHIVED, 2)
    refused = await rpc_failure(
        tenant.stub.SendNotification(
            tenant.send_request(customer, url="http://127.0.0.1:9/h"), metadata=tenant.md
        )
    )
    assert (refused.code, refused.reason) == (grpc.StatusCode.NOT_FOUND, "TEMPLATE_NOT_FOUND")
    again = await rpc_failure(_delete(tenant, created.template_id))
    assert (again.code, again.reason) == (grpc.StatusCode.NOT_FOUND, "TEMPLATE_NOT_FOUND")
    assert (await tenant.message(queued.message_id)).status == queued.status  # still goes out
    malformed = await rpc_failure(_delete(tenant, "x"))
    assert (malformed.code, malformed.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["template_id"])
