"""Test set-up shared by every suite: real PostgreSQL and Redis (the machine's when they answer on
localhost, else started from pip packages), a fresh database per test run and worker.

Every log line the suite produces, in this process and in the server processes tests start (their
output goes to `service_log(...)`), is written to LOG_DIR as production writes it; when the run ends
the controller greps all of it for secrets and personal data and fails the run if it finds any."""

import logging
import os
import re
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_status import rpc_status
from redis.asyncio import Redis

from loyalty_devstack.infra import create_database, drop_database, ensure_infra
from loyalty_runtime.errors import bad_request, error_info
from loyalty_runtime.logs import JsonFormatter, install_trace_context

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / ".data" / "test" / "logs"
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
# What must never appear in a log line: the internal tokens tests use, e-mail addresses, E.164
# phone numbers, and the canary names tests give customers on purpose.
FORBIDDEN = re.compile(
    r"dev-internal-token|bench-internal-token|[\w.+-]+@[\w-]+\.[a-z]{2,}|\+\d{8,15}|Privata|Canary"
)


def service_log(name: str):
    """A file for a server process's output, included in the end-of-run log check."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    return (LOG_DIR / f"{WORKER}-{name}-{uuid.uuid4().hex[:6]}.log").open("ab")


def pytest_configure(config):
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    if not hasattr(config, "workerinput"):  # the controller (or the only process): a fresh start
        for old in LOG_DIR.glob("*.log"):
            old.unlink()
    handler = logging.FileHandler(LOG_DIR / f"{WORKER}.log")
    handler.setFormatter(JsonFormatter("tests"))
    install_trace_context()
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput"):
        return  # the controller checks every worker's lines once they are all written
    leaks = [
        f"{path.name}: {line.strip()[:300]}"
        for path in sorted(LOG_DIR.glob("*.log"))
        for line in path.read_text(errors="replace").splitlines()
        if FORBIDDEN.search(line)
    ]
    if leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_line("")
        reporter.write_line(f"{len(leaks)} log lines carry a secret or personal data:", red=True)
        for leak in leaks[:20]:
            reporter.write_line(f"  {leak}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
