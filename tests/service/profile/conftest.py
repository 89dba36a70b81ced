"""A migrated profile schema and one running profile server (production call guard) per session,
a fresh tenant per test, and a plain asyncpg pool to look at what the server stored."""

import asyncio
import uuid

import asyncpg
import pytest
from redis.asyncio import Redis

from loyalty.common.v1 import customer_pb2
from loyalty.profile.v1 import events_pb2, profile_service_pb2 as api, profile_service_pb2_grpc
from loyalty_profile.service import DEFINITION
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.testing import migrated_settings, running_service

EMAIL = customer_pb2.IDENTIFIER_TYPE_EMAIL
PHONE = customer_pb2.IDENTIFIER_TYPE_PHONE
CARD = customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD
EXTERNAL = customer_pb2.IDENTIFIER_TYPE_EXTERNAL
EVENTS_STREAM = "profile.events"
EVENT_MESSAGES = {
    "customer.created": events_pb2.CustomerCreated,
    "customer.updated": events_pb2.CustomerUpdated,
    "customer.merged": events_pb2.CustomerMerged,
    "customer.erased": events_pb2.CustomerErased,
}


@pytest.fixture(scope="session")
async def profile_settings(database_url, redis_url):
    return await migrated_settings(
        DEFINITION,
        database_url,
        redis_url,
    )


@pytest.fixture(scope="session")
async def profile(profile_settings):
    async with running_service(DEFINITION, profile_settings) as service:
        yield service


@pytest.fixture(scope="session")
async def db(profile_settings):
    """A pool of our own to read (and lock) rows behind the server's back."""
    pool = await asyncpg.create_pool(asyncpg_dsn(profile_settings.database_url), min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def stub(profile):
    return profile_service_pb2_grpc.ProfileServiceStub(profile.channel)


@pytest.fixture
def tenant(profile):
    """Metadata for a fresh tenant per test, so tests never see each other's customers."""
    return profile.metadata(f"tenant-{uuid.uuid4().hex[:10]}")


def key() -> str:
    return uuid.uuid4().hex


def ident(kind, value, namespace=""):
    return customer_pb2.Identifier(type=kind, value=value, namespace=namespace)


def card(value: str | None = None) -> customer_pb2.Identifier:
    return ident(CARD, value or uuid.uuid4().hex[:12].upper())


async def enrol(stub, tenant, *identifiers, **fields):
    request = api.EnrolCustomerRequest(
        idempotency_key=key(), identifiers=list(identifiers or [card()]), **fields
    )
    return (await stub.EnrolCustomer(request, metadata=tenant)).customer


def tenant_of(metadata) -> str:
    return dict(metadata)["x-loyalty-tenant"]


async def count_rows(db, table: str, tenant_id: str | None = None) -> int:
    if tenant_id is None:
        return await db.fetchval(f"SELECT count(*) FROM profile.{table}")
    return await db.fetchval(f"SELECT count(*) FROM profile.{table} WHERE tenant_id = $1", tenant_id)


async def published_events(redis_url: str, tenant_id: str) -> list[tuple[str, str, object]]:
    """(type, key, decoded payload) of every event of the tenant on the stream so far."""
    redis = Redis.from_url(redis_url)
    try:
        entries = await redis.xrange(EVENTS_STREAM)
    finally:
        await redis.aclose()
    events = []
    for _, fields in entries:
        if fields[b"tenant"].decode() == tenant_id:
            kind = fields[b"type"].decode()
            events.append(
                (kind, fields[b"key"].decode(), EVENT_MESSAGES[kind].FromString(fields[b"payload"]))
            )
    return events


async def published_when(enough, redis_url: str, tenant_id: str):
    """The tenant's published events once `enough(events)` holds (the relay publishes in batches),
    and a moment more, so that one published twice would show."""
    for _ in range(200):
        if enough(await published_events(redis_url, tenant_id)):
            await asyncio.sleep(0.2)
            return await published_events(redis_url, tenant_id)
        await asyncio.sleep(0.05)
    raise AssertionError("the events were not published")


async def wait_for_event(redis_url: str, tenant_id: str, event_type: str, event_key: str):
    """The relay publishes the outbox to Redis Streams; wait until the event shows up."""
    for _ in range(100):
        for kind, found_key, payload in await published_events(redis_url, tenant_id):
            if (kind, found_key) == (event_type, event_key):
                return payload
        await asyncio.sleep(0.05)
    raise AssertionError(f"{event_type} for {event_key} was not published")
