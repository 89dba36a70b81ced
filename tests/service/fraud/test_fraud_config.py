"""Blocklist entries updated, fraud.case_resolved and fraud.brute_force_policy_changed on the stream,
the brute-force policy the gateway reads, and each replica's rules cache: a change on one replica
reaches another through the version in Redis, and through PostgreSQL when Redis has lost it."""

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from redis.asyncio import Redis

from loyalty.fraud.v1 import (
    assessment_pb2 as apb,
    blocklist_pb2 as bpb,
    events_pb2,
    fraud_service_pb2 as api,
    fraud_service_pb2_grpc,
    review_pb2,
    rule_pb2 as rpb,
)
from loyalty_fraud import cache as fraud_cache
from loyalty_fraud.service import DEFINITION
from loyalty_runtime.testing import running_service
from tests.conftest import rpc_failure
from tests.service.fraud.helpers import Client, hashed, key, velocity

ALLOW, REVIEW, DECLINE = apb.DECISION_ALLOW, apb.DECISION_REVIEW, apb.DECISION_DECLINE


async def events_of(redis_url: str, tenant: str, count: int) -> list[tuple[str, bytes]]:
    """The tenant's events on fraud.events, once `count` of them are there."""
    redis = Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(10):
            while True:
                found = [
                    (fields[b"type"].decode(), fields[b"payload"])
                    for _, fields in await redis.xrange("fraud.events")
                    if fields[b"tenant"].decode() == tenant
                ]
                if len(found) >= count:
                    return found
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose()


def at(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


# --- blocklist entries ----------------------------------------------------------------------------


async def test_an_entry_s_note_and_expiry_are_updated(tenant, other_tenant, fraud):
    device = hashed("stolen-phone")
    created = (
        await tenant.CreateBlocklistEntry(
            api.CreateBlocklistEntryRequest(
                idempotency_key=key(),
                entry=bpb.BlocklistEntry(type=bpb.BLOCKLIST_ENTRY_TYPE_DEVICE, value=device),
            )
        )
    ).entry
    signals = apb.RiskSignals(terminal_id="till-1", device_hash=device)
    assert (await tenant.checkout(signals=signals)).decision == DECLINE

    def update(paths, **fields):
        entry = bpb.BlocklistEntry(entry_id=created.entry_id, **fields)
        return api.UpdateBlocklistEntryRequest(
            idempotency_key=key(), entry=entry, update_mask={"paths": paths}
        )

    soon = fraud.clock.now + timedelta(hours=1)
    request = update(["note", "expire_time"], note="reported stolen", expire_time=at(soon))
    updated = (await tenant.UpdateBlocklistEntry(request)).entry
    assert (updated.note, updated.expire_time.ToDatetime(tzinfo=UTC), updated.value) == (
        "reported stolen",
        soon,
        device,
    )
    assert updated.update_time.ToDatetime(tzinfo=UTC) == fraud.clock.now
    assert (await tenant.UpdateBlocklistEntry(request)).entry == updated  # a retry replays
    assert (
        await tenant.GetBlocklistEntry(api.GetBlocklistEntryRequest(entry_id=created.entry_id))
    ).entry == updated

    fraud.clock.advance(hours=1)
    assert (await tenant.checkout(signals=signals)).decision == ALLOW  # expired
    cleared = (await tenant.UpdateBlocklistEntry(update(["expire_time"]))).entry
    assert not cleared.HasField("expire_time") and cleared.note == "reported stolen"
    assert (await tenant.checkout(signals=signals)).decision == DECLINE  # blocking again

    failure = await rpc_failure(other_tenant.UpdateBlocklistEntry(update(["note"], note="x")))
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "BLOCKLIST_ENTRY_NOT_FOUND")
    failure = await rpc_failure(tenant.UpdateBlocklistEntry(update(["value"], value=hashed("other"))))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["update_mask"])
    unknown = api.UpdateBlocklistEntryRequest(
        idempotency_key=key(),
        entry=bpb.BlocklistEntry(entry_id="nope", note="x"),
        update_mask={"paths": ["note"]},
    )
    assert (await rpc_failure(tenant.UpdateBlocklistEntry(unknown))).reason == "BLOCKLIST_ENTRY_NOT_FOUND"
    missing = api.UpdateBlocklistEntryRequest(idempotency_key=key(), entry=bpb.BlocklistEntry(note="x"))
    assert (await rpc_failure(tenant.UpdateBlocklistEntry(missing))).fields == ["entry.entry_id"]
    entry = (await tenant.GetBlocklistEntry(api.GetBlocklistEntryRequest(entry_id=created.entry_id))).entry
    assert entry.note == "reported stolen" and entry.value == device


# --- events ---------------------------------------------------------------------------------------


async def test_resolving_a_case_publishes_case_resolved_once(tenant, redis_url):
    await tenant.rule(velocity(rpb.VELOCITY_KEY_CUSTOMER, max_count=0, action=REVIEW))
    first = await tenant.checkout(customer="suspect")
    second = await tenant.earn(5, customer="suspect")
    resolutions = [
        (first, review_pb2.REVIEW_CASE_STATE_REJECTED, True),
        (second, review_pb2.REVIEW_CASE_STATE_APPROVED, False),
    ]
    for assessment, resolution, block in resolutions:
        request = api.ResolveReviewCaseRequest(
            idempotency_key=key(),
            review_case_id=assessment.review_case_id,
            resolution=resolution,
            blocklist_customer=block,
        )
        await tenant.ResolveReviewCase(request)
        await tenant.ResolveReviewCase(request)  # a retry
        request.idempotency_key = key()
        await tenant.ResolveReviewCase(request)  # resolving it the same way again changes nothing
    events = await events_of(redis_url, tenant.tenant, 2)
    await asyncio.sleep(0.3)  # nothing more comes
    events = await events_of(redis_url, tenant.tenant, 2)
    assert [kind for kind, _ in events] == ["fraud.case_resolved"] * 2
    rejected, approved = (events_pb2.CaseResolved.FromString(payload) for _, payload in events)
    assert (rejected.review_case_id, rejected.resolution, rejected.kind, rejected.subject_id) == (
        first.review_case_id,
        review_pb2.REVIEW_CASE_STATE_REJECTED,
        apb.ASSESSMENT_KIND_CHECKOUT,
        first.subject_id,
    )
    assert (
        rejected.customer_id == "suspect"
        and rejected.blocklist_entry_id
        and rejected.assessment_id == first.assessment_id
    )
    assert (approved.resolution, approved.kind, approved.blocklist_entry_id) == (
        review_pb2.REVIEW_CASE_STATE_APPROVED,
        apb.ASSESSMENT_KIND_EARN,
        "",
    )


# --- the brute-force policy -----------------------------------------------------------------------


def limit(key_: int, attempts: int, window: int = 60, lockout: int = 300) -> rpb.BruteForceLimit:
    return rpb.BruteForceLimit(
        key=key_,
        max_invalid_attempts=attempts,
        window=Duration(seconds=window),
        lockout=Duration(seconds=lockout),
    )


def set_policy(*limits) -> api.UpdateFraudSettingsRequest:
    return api.UpdateFraudSettingsRequest(
        idempotency_key=key(),
        settings=rpb.FraudSettings(brute_force=rpb.BruteForcePolicy(limits=limits)),
        update_mask={"paths": ["brute_force"]},
    )


async def test_the_brute_force_policy_is_read_per_tenant_and_announced(tenant, other_tenant, redis_url):
    default = await tenant.GetBruteForcePolicy(api.GetBruteForcePolicyRequest())
    assert [
        (x.key, x.max_invalid_attempts, x.window.seconds, x.lockout.seconds) for x in default.policy.limits
    ] == [
        (rpb.VELOCITY_KEY_TERMINAL, 20, 600, 900),
        (rpb.VELOCITY_KEY_DEVICE, 10, 600, 900),
        (rpb.VELOCITY_KEY_CUSTOMER, 10, 600, 900),
    ]
    strict = [limit(rpb.VELOCITY_KEY_TERMINAL, 5), limit(rpb.VELOCITY_KEY_IP, 50, 3600, 3600)]
    await tenant.UpdateFraudSettings(set_policy(*strict))
    read = await tenant.GetBruteForcePolicy(api.GetBruteForcePolicyRequest())
    assert list(read.policy.limits) == strict and read.etag != default.etag
    assert (await other_tenant.GetBruteForcePolicy(api.GetBruteForcePolicyRequest())) == default

    # Changing something else announces nothing; the policy's change is announced once.
    await tenant.UpdateFraudSettings(
        api.UpdateFraudSettingsRequest(
            idempotency_key=key(),
            settings=rpb.FraudSettings(review_threshold=400),
            update_mask={"paths": ["review_threshold"]},
        )
    )
    events = await events_of(redis_url, tenant.tenant, 1)
    await asyncio.sleep(0.3)
    events = await events_of(redis_url, tenant.tenant, 1)
    assert [kind for kind, _ in events] == ["fraud.brute_force_policy_changed"]
    changed = events_pb2.BruteForcePolicyChanged.FromString(events[0][1])
    assert (list(changed.policy.limits), changed.etag) == (strict, read.etag)

    await tenant.UpdateFraudSettings(set_policy())  # back to the defaults
    assert (await tenant.GetBruteForcePolicy(api.GetBruteForcePolicyRequest())).etag == default.etag


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ([limit(rpb.VELOCITY_KEY_CODE, 5)], "settings.brute_force.limits[0].key"),
        (
            [limit(rpb.VELOCITY_KEY_DEVICE, 5), limit(rpb.VELOCITY_KEY_DEVICE, 6)],
            "settings.brute_force.limits[1].key",
        ),
        ([limit(rpb.VELOCITY_KEY_DEVICE, 0)], "settings.brute_force.limits[0].max_invalid_attempts"),
        ([limit(rpb.VELOCITY_KEY_DEVICE, 5, window=0)], "settings.brute_force.limits[0].window"),
        ([limit(rpb.VELOCITY_KEY_DEVICE, 5, lockout=86_401)], "settings.brute_force.limits[0].lockout"),
    ],
)
async def test_a_bad_brute_force_policy_is_refused(tenant, limits, field):
    failure = await rpc_failure(tenant.UpdateFraudSettings(set_policy(*limits)))
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    policy = (await tenant.GetBruteForcePolicy(api.GetBruteForcePolicyRequest())).policy
    assert len(policy.limits) == 3  # still the defaults


# --- the rules cache across replicas --------------------------------------------------------------


@pytest.fixture
async def replica(fraud_settings, fraud):
    """A second server on the same database and Redis, with its own cache."""
    settings = fraud_settings.model_copy(update={"config_check_seconds": 0.2, "config_database_seconds": 1.0})
    async with running_service(DEFINITION, settings, clock=fraud.clock) as service:
        service.stub = fraud_service_pb2_grpc.FraudServiceStub(service.channel)
        yield service


async def test_a_rule_changed_on_one_replica_applies_on_the_other(tenant, replica, redis_url):
    there = Client(replica, tenant.tenant)
    assert (await there.earn(1, customer="x", dry_run=True)).decision == ALLOW  # cached: no rules
    rule = await tenant.rule(velocity(rpb.VELOCITY_KEY_CUSTOMER, max_count=0))
    assert (await tenant.earn(1, customer="x", dry_run=True)).decision == DECLINE  # its own change: at once
    async with asyncio.timeout(5):
        while (await there.earn(1, customer="x", dry_run=True)).decision != DECLINE:
            await asyncio.sleep(0.05)

    # Redis loses the raise of the next version (a failover to a replica behind): the other replica
    # still learns of the change from PostgreSQL, within database_seconds.
    redis = Redis.from_url(redis_url)
    before = await redis.get(fraud_cache.version_key(tenant.tenant))
    await tenant.DeleteRule(api.DeleteRuleRequest(idempotency_key=key(), rule_id=rule.rule_id))
    await redis.set(fraud_cache.version_key(tenant.tenant), before)
    await redis.aclose()
    started = asyncio.get_running_loop().time()
    async with asyncio.timeout(10):
        while (await there.earn(1, customer="x", dry_run=True)).decision != ALLOW:
            await asyncio.sleep(0.1)
    assert asyncio.get_running_loop().time() - started < 3


class Counting(fraud_cache.Source):
    def __init__(self, version: int) -> None:
        self.current, self.versions, self.loads = version, 0, 0
        super().__init__(self._version, self._load)

    async def _version(self) -> int:
        self.versions += 1
        return self.current

    async def _load(self) -> fraud_cache.Config:
        self.loads += 1
        return fraud_cache.build(self.current, [], None)


async def test_the_cache_reads_nothing_while_fresh_and_postgresql_without_redis(redis_url):
    now = [0.0]
    redis = Redis.from_url(redis_url)
    tenant = f"t-{key()[:8]}"
    configs = fraud_cache.ConfigCache(redis, check_seconds=1, database_seconds=10, clock=lambda: now[0])
    source = Counting(3)
    assert (await configs.get(tenant, source)).version == 3
    assert (source.versions, source.loads, int(await redis.get(fraud_cache.version_key(tenant)))) == (1, 1, 3)
    for _ in range(100):
        await configs.get(tenant, source)
    assert (source.versions, source.loads) == (1, 1)  # fresh: not even Redis is asked
    now[0] = 1.5
    await configs.get(tenant, source)
    assert (source.versions, source.loads) == (1, 1)  # Redis says 3: unchanged
    source.current = 4
    await configs.changed(tenant, 4)  # what the replica making the change does
    assert (await configs.get(tenant, source)).version == 4 and source.loads == 2
    await configs.changed(tenant, 2)  # a late writer never lowers the version
    assert int(await redis.get(fraud_cache.version_key(tenant))) == 4
    await redis.aclose()

    down = fraud_cache.ConfigCache(
        Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2),
        check_seconds=1,
        clock=lambda: now[0],
    )
    source = Counting(7)
    await down.get(tenant, source)
    now[0] = 3.0
    await down.get(tenant, source)
    assert (source.versions, source.loads) == (2, 1)  # PostgreSQL's version each look, one build
