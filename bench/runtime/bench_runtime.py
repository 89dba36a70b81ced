"""What the runtime costs: server CPU per call, as ratios to a bare grpc.aio echo measured in the same
run, and the ledger's earn throughput beside a bare pgbench two-posting transfer. A benchmark, never
a timed test: machines differ, so compare ratios within one run.

    make bench BENCH=bench/runtime/bench_runtime.py
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/loyalty_bench REDIS_URL=redis://127.0.0.1:6379/0 \\
        python bench/runtime/bench_runtime.py [--calls 3000] [--rounds 3] [--concurrency 8]

Every server runs in a process of its own, on uvloop, configured as in production (default
settings, no tracing exporter); its CPU time (user + system, /proc) per call is the figure, the
median of `--rounds` rounds, each after a VACUUM of the database (see `vacuum`). The client runs
here, in this process.

Rows:
- bare echo: grpc.aio with the generated servicer (bench/runtime/servers.py bare);
- runtime echo: the same handler inside the full runtime stack (admission, authentication, call
  context, decoding and validation, deadline, metrics, error mapping, access log policy);
- GetCustomer, GetAccount, EarnPoints: the real profile and ledger servers (`python -m loyalty_x serve`)
  on a migrated database of their own;
- earn throughput at the same concurrency beside pgbench running a two-posting transfer (two balance
  updates, two posting inserts, one transaction) with as many clients, on the same PostgreSQL.
"""

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import uvloop

from loyalty.common.v1 import customer_pb2
from loyalty.ledger.v1 import ledger_pb2, ledger_service_pb2 as ledger_api, ledger_service_pb2_grpc
from loyalty.profile.v1 import profile_service_pb2 as profile_api, profile_service_pb2_grpc
from loyalty.testing.v1 import echo_pb2, echo_pb2_grpc
from loyalty_devstack.benchkit import ServerProcess, scratch_database, service_process
from loyalty_devstack.infra import free_port
from loyalty_runtime.context import AUTHORIZATION_HEADER, PRINCIPAL_HEADER, TENANT_HEADER

HERE = Path(__file__).resolve().parent
TOKEN = "bench-internal-token"
TENANT = "bench"
METADATA = ((AUTHORIZATION_HEADER, f"Bearer {TOKEN}"), (TENANT_HEADER, TENANT), (PRINCIPAL_HEADER, "bench"))
TRANSFER_SQL = """\\set a random(1, 1000)
\\set b random(1, 1000)
BEGIN;
UPDATE bench_accounts SET balance = balance - 10 WHERE id = :a;
UPDATE bench_accounts SET balance = balance + 10 WHERE id = :b;
INSERT INTO bench_postings (account_id, amount) VALUES (:a, -10), (:b, 10);
COMMIT;
"""


def service_server(service: str, database_url: str, redis_url: str, *, migrate: bool = True) -> ServerProcess:
    if service == "echo":
        port = free_port()
        env = {
            "ECHO_DATABASE_URL": database_url,
            "ECHO_REDIS_URL": redis_url,
            "ECHO_GRPC_HOST": "127.0.0.1",
            "ECHO_GRPC_PORT": str(port),
            "ECHO_INTERNAL_TOKEN": TOKEN,
        }
        return ServerProcess(service, [sys.executable, str(HERE / "servers.py"), "runtime"], env, port)
    return service_process(service, database_url, redis_url, internal_token=TOKEN, migrate=migrate)


async def vacuum(database_url: str) -> None:
    """What autovacuum does in production, done before each round: the PostgreSQL a benchmark runs
    on may have it turned off (this machine's has), and then every round would pay for the dead rows
    of the ones before it (pgbench vacuums before it runs, too)."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


async def cpu_per_call(
    server: ServerProcess,
    call: Callable[[int], Awaitable[object]],
    calls: int,
    concurrency: int,
    rounds: int,
    database_url: str | None = None,
    rate: float = 0.0,
) -> tuple[float, float]:
    """(median server CPU in microseconds per call, median calls per second) over the rounds; with
    `rate`, the callers together offer that many calls per second (0: as fast as they can)."""
    cpu, rates = [], []
    for _ in range(rounds):
        if database_url:
            await vacuum(database_url)
        numbers = iter(range(calls))
        gap = concurrency / rate if rate else 0.0  # each worker's interval between calls

        async def worker(numbers=numbers, gap=gap) -> None:
            due = time.perf_counter()
            for number in numbers:
                await call(number)
                if gap:
                    due += gap
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))

        before, started = server.cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu.append((server.cpu_seconds() - before) / calls * 1e6)
        rates.append(calls / elapsed)
    return statistics.median(cpu), statistics.median(rates)


async def warm(call: Callable[[int], Awaitable[object]], count: int = 300) -> None:
    for number in range(count):
        await call(number)


async def echo_rows(args, database_url: str, redis_url: str) -> dict[str, tuple[float, float]]:
    port = free_port()
    bare = ServerProcess("bare-echo", [sys.executable, str(HERE / "servers.py"), "bare", str(port)], {}, port)
    runtime = service_server("echo", database_url, redis_url)
    rows = {}
    try:
        for label, server in (("bare grpc.aio echo", bare), ("runtime echo (full stack)", runtime)):
            channel = await server.channel()
            stub = echo_pb2_grpc.EchoServiceStub(channel)
            request = echo_pb2.EchoRequest(text="hello")

            async def echo(_: int, stub=stub, request=request):
                await stub.Echo(request, metadata=METADATA, timeout=10)

            await warm(echo)
            rows[label] = await cpu_per_call(
                server, echo, args.calls, args.concurrency, args.rounds, rate=args.rate
            )
            await channel.close()
    finally:
        bare.stop()
        runtime.stop()
    return rows


async def profile_rows(args, database_url: str, redis_url: str) -> dict[str, tuple[float, float]]:
    server = service_server("profile", database_url, redis_url)
    try:
        channel = await server.channel()
        stub = profile_service_pb2_grpc.ProfileServiceStub(channel)
        ids = []
        for number in range(50):
            enrolled = await stub.EnrolCustomer(
                profile_api.EnrolCustomerRequest(
                    idempotency_key=uuid.uuid4().hex,
                    identifiers=[
                        customer_pb2.Identifier(
                            type=customer_pb2.IDENTIFIER_TYPE_EMAIL, value=f"bench{number}@example.com"
                        ),
                        customer_pb2.Identifier(
                            type=customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD, value=f"BENCH{number:06d}"
                        ),
                    ],
                    given_name="Bench",
                    family_name=f"Customer {number}",
                ),
                metadata=METADATA,
                timeout=10,
            )
            ids.append(enrolled.customer.customer_id)

        async def get(number: int):
            request = profile_api.GetCustomerRequest(customer_id=ids[number % len(ids)])
            await stub.GetCustomer(request, metadata=METADATA, timeout=10)

        await warm(get)
        row = await cpu_per_call(
            server, get, args.calls, args.concurrency, args.rounds, database_url, rate=args.rate
        )
        await channel.close()
        return {"GetCustomer": row}
    finally:
        server.stop()


async def ledger_rows(args, database_url: str, redis_url: str) -> dict[str, tuple[float, float]]:
    server = service_server("ledger", database_url, redis_url)
    try:
        channel = await server.channel()
        stub = ledger_service_pb2_grpc.LedgerServiceStub(channel)
        program = await stub.CreateProgram(
            ledger_api.CreateProgramRequest(
                idempotency_key=uuid.uuid4().hex,
                program=ledger_pb2.Program(
                    display_name="Bench",
                    asset_kind=ledger_pb2.ASSET_KIND_POINTS,
                    expiry_policy=ledger_pb2.ExpiryPolicy(
                        rule=ledger_pb2.EXPIRY_RULE_MONTHS_AFTER_EARN, months=12
                    ),
                    tiers=[
                        ledger_pb2.Tier(code="SILVER", qualifying_points=1_000, earn_multiplier_bps=11_000),
                        ledger_pb2.Tier(code="GOLD", qualifying_points=10**12, earn_multiplier_bps=12_500),
                    ],
                ),
            ),
            metadata=METADATA,
            timeout=10,
        )
        accounts = []
        for _ in range(200):
            opened = await stub.OpenAccount(
                ledger_api.OpenAccountRequest(
                    idempotency_key=uuid.uuid4().hex,
                    program_id=program.program.program_id,
                    customer_id=str(uuid.uuid4()),
                ),
                metadata=METADATA,
                timeout=10,
            )
            accounts.append(opened.account.account_id)

        async def earn(number: int):
            request = ledger_api.EarnPointsRequest(
                idempotency_key=uuid.uuid4().hex, account_id=accounts[number % len(accounts)], amount=10
            )
            await stub.EarnPoints(request, metadata=METADATA, timeout=10)

        async def get(number: int):
            request = ledger_api.GetAccountRequest(account_id=accounts[number % len(accounts)])
            await stub.GetAccount(request, metadata=METADATA, timeout=10)

        await warm(earn)
        rows = {
            "EarnPoints": await cpu_per_call(
                server, earn, args.calls, args.concurrency, args.rounds, database_url, rate=args.rate
            )
        }
        await warm(get)
        rows["GetAccount"] = await cpu_per_call(
            server, get, args.calls, args.concurrency, args.rounds, database_url, rate=args.rate
        )
        rows["EarnPoints, 2 replicas"] = await earn_on_two_replicas(
            server, accounts, args, database_url, redis_url
        )
        await channel.close()
        return rows
    finally:
        server.stop()


async def earn_on_two_replicas(first: ServerProcess, accounts, args, database_url: str, redis_url: str):
    """Earns spread round-robin over two ledger processes, as the chart runs it (two replicas):
    the server CPU is both processes' per call, the throughput what the machine gives."""
    second = service_server("ledger", database_url, redis_url, migrate=False)
    try:
        await (await second.channel()).close()
        both = grpc.aio.insecure_channel(
            f"ipv4:127.0.0.1:{first.port},127.0.0.1:{second.port}",
            options=[("grpc.lb_policy_name", "round_robin")],
        )
        stub = ledger_service_pb2_grpc.LedgerServiceStub(both)

        async def earn(number: int):
            request = ledger_api.EarnPointsRequest(
                idempotency_key=uuid.uuid4().hex, account_id=accounts[number % len(accounts)], amount=10
            )
            await stub.EarnPoints(request, metadata=METADATA, timeout=10)

        await warm(earn)
        result = await cpu_per_call(
            Pair(first, second), earn, args.calls, args.concurrency, args.rounds, database_url
        )
        await both.close()
        return result
    finally:
        second.stop()


class Pair:
    """Two server processes measured as one."""

    def __init__(self, *servers: ServerProcess) -> None:
        self.servers = servers

    def cpu_seconds(self) -> float:
        return sum(server.cpu_seconds() for server in self.servers)


def pgbench_transfer_tps(database_url: str, clients: int, seconds: int) -> float | None:
    binary = shutil.which("pgbench") or next(iter(Path("/usr/lib/postgresql").glob("*/bin/pgbench")), None)
    if binary is None:
        return None
    setup = """
        DROP TABLE IF EXISTS bench_accounts, bench_postings;
        CREATE TABLE bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL);
        INSERT INTO bench_accounts SELECT g, 1000000 FROM generate_series(1, 1000) g;
        CREATE TABLE bench_postings (id bigserial PRIMARY KEY, account_id int NOT NULL, amount bigint NOT NULL);
    """
    subprocess.run(["psql", "-q", database_url, "-c", setup], check=True, capture_output=True)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(TRANSFER_SQL)
    done = subprocess.run(
        [
            str(binary),
            "-n",
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            "-f",
            script.name,
            database_url,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    os.unlink(script.name)
    for line in done.stdout.splitlines():
        if line.startswith("tps ="):
            return float(line.split()[2])
    return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="offer every server the same calls per second: a server's CPU per call falls as its load rises "
        "(more calls share each wake-up), so at a common rate the ratios compare work, not load",
    )
    parser.add_argument(
        "--only", nargs="+", choices=["echo", "profile", "ledger"], default=["echo", "profile", "ledger"]
    )
    args = parser.parse_args()
    async with scratch_database() as (database_url, redis_url):
        rows = await echo_rows(args, database_url, redis_url)
        if "profile" in args.only:
            rows |= await profile_rows(args, database_url, redis_url)
        tps = None
        if "ledger" in args.only:
            rows |= await ledger_rows(args, database_url, redis_url)
            tps = pgbench_transfer_tps(database_url, args.concurrency, args.pgbench_seconds)
    report(rows, tps, args)


TARGETS = {"runtime echo (full stack)": 1.5, "GetCustomer": 3.0, "GetAccount": 3.0, "EarnPoints": 5.0}


def report(rows: dict[str, tuple[float, float]], tps: float | None, args) -> None:
    bare_cpu = rows["bare grpc.aio echo"][0]
    print(
        f"python {sys.version.split()[0]} at {os.path.realpath(sys.executable)}; {os.cpu_count()} CPUs; "
        f"concurrency {args.concurrency}; {args.calls} calls x {args.rounds} rounds (medians)"
        + (f"; offered {args.rate:.0f} calls/s" if args.rate else "")
    )
    print(f"{'':<28}{'server CPU us/call':>20}{'x bare echo':>13}{'target':>9}{'calls/s':>10}")
    for label, (cpu, rate) in rows.items():
        target = TARGETS.get(label)
        print(
            f"{label:<28}{cpu:>20.0f}{cpu / bare_cpu:>13.2f}{f'<= {target}' if target else '':>9}{rate:>10.0f}"
        )
    if "EarnPoints" not in rows:
        return
    if tps:
        # Throughput only where the callers went as fast as they could.
        for label in ("EarnPoints", "EarnPoints, 2 replicas")[1 if args.rate else 0 :]:
            rate = rows[label][1]
            print(
                f"pgbench two-posting transfer: {tps:.0f} tps; {label}: {rate:.0f}/s = {rate / tps:.1%} (target >= 20%)"
            )
    else:
        print("pgbench not found: no transfer baseline")


if __name__ == "__main__":
    uvloop.run(main())
