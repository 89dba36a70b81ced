"""Test set-up shared by every suite: real PostgreSQL and Redis (the machine's when they answer on
localhost, else started from pip packages), a fresh database per test run and worker."""

import os
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_status import rpc_status
from redis.asyncio import Redis

from loyalty_devstack.infra import create_database, drop_database, ensure_infra
from loyalty_runtime.errors import bad_request, error_info

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def infra():
    infra = ensure_infra(ROOT / ".data" / "test")
    yield infra
    infra.stop()


@pytest.fixture(scope="session")
async def database_url(infra):
    """A database of its own for this run and xdist worker, dropped at the end."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"loyalty_test_{worker}_{uuid.uuid4().hex[:8]}"
    await create_database(infra, name)
    yield infra.database_url(name)
    await drop_database(infra, name)


@pytest.fixture(scope="session")
async def redis_url(infra):
    """A Redis logical database of its own per worker, emptied at the start. Two suites running on
    one machine at once (two checkouts) pick different ones with LOYALTY_TEST_REDIS_DB=<first>."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    first = int(os.environ.get("LOYALTY_TEST_REDIS_DB", "1"))
    index = (first + int(worker.removeprefix("gw") or 0)) % 16 if worker.startswith("gw") else 15
    url = f"{infra.redis_url}/{index}"
    client = Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    return url


class RpcFailure:
    """What a test needs from a failed call: code, ErrorInfo reason and BadRequest fields."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        self.code = error.code()
        self.message = error.details()
        status = rpc_status.from_call(error)
        info = error_info(status) if status else None
        violations = bad_request(status) if status else None
        self.reason = info.reason if info else None
        self.fields = [v.field for v in violations.field_violations] if violations else []


async def rpc_failure(call) -> RpcFailure:
    """Await a call that must fail and describe how it failed."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return RpcFailure(raised.value)
