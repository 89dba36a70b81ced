"""What a service answers when PostgreSQL or Redis goes away, when a caller's deadline runs out while
the database makes it wait, and when more calls arrive than the pool has connections."""

import asyncio
import dataclasses
import time

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loyalty.testing.v1 import echo_pb2, echo_pb2_grpc
from loyalty_runtime.db import asyncpg_dsn
from loyalty_runtime.testing import running_service
from tests.conftest import rpc_failure
from tests.proxy import TcpProxy
from tests.service.runtime.probe_service import PROBE, lock_the_row

POOL_PROBE = dataclasses.replace(PROBE, name="probe-pool")  # its own application_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def status(channel, service: str = "") -> int:
    answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return answer.status


async def eventually(condition, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not await condition():
            await asyncio.sleep(0.05)


@pytest.fixture
async def postgres_proxy(probe_settings):
    proxy = await TcpProxy.to(probe_settings.database_url).start()
    yield proxy
    await proxy.close()


async def backends_waiting_on_locks(database_url: str, application: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = $1 AND wait_event_type = 'Lock'",
            application,
        )
    finally:
        await connection.close()


async def test_readiness_and_calls_follow_the_database_and_recover_without_restart(
    probe_settings, postgres_proxy
):
    settings = probe_settings.model_copy(
        update={
            "database_url": postgres_proxy.url_for(probe_settings.database_url),
            "readiness_interval_seconds": 0.2,
        }
    )
    async with running_service(PROBE, settings) as service:
        stub = echo_pb2_grpc.EchoServiceStub(service.channel)
        metadata = service.metadata("t1")
        assert (await stub.Echo(echo_pb2.EchoRequest(text="a"), metadata=metadata)).text == "a"

        await postgres_proxy.cut()
        await eventually(lambda: _is(service.channel, "", NOT_SERVING))
        assert await status(service.channel, "loyalty.testing.v1.EchoService") == NOT_SERVING
        assert await status(service.channel, "liveness") == SERVING
        for call in (
            stub.Echo(echo_pb2.EchoRequest(text="b"), metadata=metadata),
            stub.Wait(echo_pb2.WaitRequest(), metadata=metadata),
        ):
            failure = await rpc_failure(call)
            assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")

        await postgres_proxy.restore()
        await eventually(lambda: _is(service.channel, "", SERVING))
        assert (await stub.Echo(echo_pb2.EchoRequest(text="c"), metadata=metadata)).text == "c"


async def _is(channel, service: str, expected: int) -> bool:
    return await status(channel, service) == expected


async def test_a_connection_lost_in_the_middle_of_a_call_is_unavailable(probe_settings, postgres_proxy):
    settings = probe_settings.model_copy(
        update={"database_url": postgres_proxy.url_for(probe_settings.database_url)}
    )
    holder = await lock_the_row(probe_settings.database_url)
    try:
        async with running_service(PROBE, settings) as service:
            stub = echo_pb2_grpc.EchoServiceStub(service.channel)
            call = asyncio.ensure_future(
                stub.Wait(echo_pb2.WaitRequest(), metadata=service.metadata("t1"), timeout=10)
            )
            await eventually(lambda: _waiting(probe_settings.database_url))
            await postgres_proxy.cut()
            failure = await rpc_failure(call)
            assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
    finally:
        await holder.close()


async def _waiting(database_url: str) -> bool:
    return await backends_waiting_on_locks(database_url, "probe") > 0


async def test_a_redis_outage_leaves_readiness_alone(probe_settings):
    proxy = await TcpProxy.to(probe_settings.redis_url).start()
    settings = probe_settings.model_copy(
        update={"redis_url": proxy.url_for(probe_settings.redis_url), "readiness_interval_seconds": 0.1}
    )
    try:
        async with running_service(PROBE, settings) as service:
            await proxy.cut()
            await asyncio.sleep(0.6)
            assert await status(service.channel) == SERVING
            stub = echo_pb2_grpc.EchoServiceStub(service.channel)
            # A change that only writes its event to the outbox does not need Redis either.
            await stub.Wait(echo_pb2.WaitRequest(), metadata=service.metadata("t1"))
    finally:
        await proxy.close()


async def test_a_callers_deadline_bounds_its_lock_waits_and_leaves_no_session_behind(probe, probe_settings):
    holder = await lock_the_row(probe_settings.database_url)
    stub = echo_pb2_grpc.EchoServiceStub(probe.channel)
    try:
        started = time.monotonic()
        calls = [
            stub.Wait(echo_pb2.WaitRequest(), metadata=probe.metadata("t1"), timeout=0.3) for _ in range(30)
        ]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert {o.code() for o in outcomes} == {grpc.StatusCode.DEADLINE_EXCEEDED}
        assert time.monotonic() - started < 3
        # Each cancelled call cancelled its statement: nobody is left queuing on the lock.
        await eventually(lambda: _none_waiting(probe_settings.database_url), seconds=2)
    finally:
        await holder.close()


async def _none_waiting(database_url: str) -> bool:
    return await backends_waiting_on_locks(database_url, "probe") == 0


async def test_a_call_without_a_deadline_still_stops_waiting_at_the_default_one(probe_settings):
    settings = probe_settings.model_copy(update={"default_deadline_seconds": 0.5})
    holder = await lock_the_row(probe_settings.database_url)
    try:
        async with running_service(PROBE, settings) as service:
            stub = echo_pb2_grpc.EchoServiceStub(service.channel)
            started = time.monotonic()
            failure = await rpc_failure(stub.Wait(echo_pb2.WaitRequest(), metadata=service.metadata("t1")))
            assert failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 2
            await eventually(lambda: _none_waiting(probe_settings.database_url), seconds=2)
    finally:
        await holder.close()


async def test_the_pool_never_grows_past_its_size_and_a_full_pool_refuses_fast(probe_settings):
    settings = probe_settings.model_copy(
        update={
            "database_pool_size": 2,
            "database_acquire_timeout_seconds": 0.2,
            "readiness_interval_seconds": 60,
        }
    )
    async with running_service(POOL_PROBE, settings) as service:
        stub = echo_pb2_grpc.EchoServiceStub(service.channel)
        metadata = service.metadata("t1")
        slow = [stub.Wait(echo_pb2.WaitRequest(sleep_ms=800), metadata=metadata, timeout=5) for _ in range(6)]
        pending = asyncio.gather(*slow, return_exceptions=True)
        await asyncio.sleep(0.3)
        started = time.monotonic()
        read = await rpc_failure(stub.Echo(echo_pb2.EchoRequest(text="x"), metadata=metadata, timeout=5))
        assert (read.code, read.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")
        assert time.monotonic() - started < 1, "an unrelated read waits at most the acquire timeout"
        opened = await _connections(probe_settings.database_url)
        outcomes = await pending
    assert opened <= 2
    assert sum(isinstance(o, echo_pb2.WaitResponse) for o in outcomes) == 2
    assert {o.code() for o in outcomes if isinstance(o, grpc.aio.AioRpcError)} == {
        grpc.StatusCode.RESOURCE_EXHAUSTED
    }


async def _connections(database_url: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
            POOL_PROBE.name,
        )
    finally:
        await connection.close()
