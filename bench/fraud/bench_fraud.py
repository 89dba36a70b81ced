"""AssessCheckout with every kind of rule on: calls per second, p50/p99 latency and server CPU per
call, next to a bare Redis round trip (EVALSHA of a one-line script, from this process) and the
runtime's bare-call cost (bare grpc.aio echo and the runtime's echo, servers in processes of their
own) measured in the same run. Also counts the Redis commands the fraud server sent per assessment
(INFO commandstats before and after, less what its background loops send while it idles for as
long): the target is at most two round trips. Run twice: with the rules cache as configured (a
replica compares its copy with the version in Redis at most every 0.2 s) and with
FRAUD_CONFIG_CHECK_SECONDS=0 (a GET of the version on every assessment, the price of a cache that is
never stale). A benchmark, never a timed test.

    make bench BENCH=bench/fraud/bench_fraud.py
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/loyalty_bench REDIS_URL=redis://127.0.0.1:6379/0 \\
        python bench/fraud/bench_fraud.py [--calls 2000] [--rounds 3] [--concurrency 8]

The tenant has 9 velocity rules (count per customer, card, device, IP, terminal, store and code;
points per customer; basket value per card), 7 threshold rules (basket total, discount total and
share, points earned and burned, codes, burn soon after enrolment), the 8 pattern rules (the
checkouts read the customer's and store's earn statistics, and every tenth burns, reading the
customer's activity and devices), 50 IP range and 200 customer blocklist entries. Limits are high
enough that the checkouts are allowed (the usual case), over 1,000 customers, 200 terminals and a
code per checkout.
"""

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from google.protobuf.duration_pb2 import Duration
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))

from bench_runtime import METADATA, TOKEN, echo_rows

from loyalty.common.v1 import basket_pb2, money_pb2
from loyalty.fraud.v1 import (
    assessment_pb2 as apb,
    blocklist_pb2 as bpb,
    fraud_service_pb2 as api,
    fraud_service_pb2_grpc,
    rule_pb2 as rpb,
)
from loyalty_devstack.benchkit import ServerProcess, scratch_database, service_process
from loyalty_runtime.context import TENANT_HEADER


def hashed(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def eur(amount: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", amount_minor=amount)


def all_rules(with_patterns: bool = True) -> list[rpb.Rule]:
    hour = Duration(seconds=3600)
    velocity = [
        rpb.VelocityRule(key=key, window=hour, max_count=100_000)
        for key in (
            rpb.VELOCITY_KEY_CUSTOMER,
            rpb.VELOCITY_KEY_CARD,
            rpb.VELOCITY_KEY_DEVICE,
            rpb.VELOCITY_KEY_IP,
            rpb.VELOCITY_KEY_TERMINAL,
            rpb.VELOCITY_KEY_STORE,
            rpb.VELOCITY_KEY_CODE,
        )
    ]
    velocity.append(rpb.VelocityRule(key=rpb.VELOCITY_KEY_CUSTOMER, window=hour, max_points=10_000_000))
    velocity.append(rpb.VelocityRule(key=rpb.VELOCITY_KEY_CARD, window=hour, max_amount=eur(10**12)))
    thresholds = [
        rpb.ThresholdRule(metric=rpb.THRESHOLD_METRIC_BASKET_TOTAL, max_amount=eur(1_000_000)),
        rpb.ThresholdRule(metric=rpb.THRESHOLD_METRIC_DISCOUNT_TOTAL, max_amount=eur(50_000)),
        rpb.ThresholdRule(metric=rpb.THRESHOLD_METRIC_DISCOUNT_SHARE_BPS, max_value=8000),
        rpb.ThresholdRule(metric=rpb.THRESHOLD_METRIC_POINTS_EARNED, max_value=100_000),
        rpb.ThresholdRule(metric=rpb.THRESHOLD_METRIC_POINTS_BURNED, max_value=100_000),
        rpb.ThresholdRule(metric=rpb.THRESHOLD_METRIC_CODE_COUNT, max_value=5),
        rpb.ThresholdRule(metric=rpb.THRESHOLD_METRIC_BURN_ACCOUNT_AGE_DAYS, max_value=1),
    ]
    day = Duration(seconds=86_400)
    patterns = [
        rpb.PatternRule(kind=rpb.PATTERN_KIND_EARN_ABOVE_CUSTOMER_USUAL, max_value=100_000),
        rpb.PatternRule(kind=rpb.PATTERN_KIND_EARN_ABOVE_STORE_USUAL, max_value=100_000),
        rpb.PatternRule(kind=rpb.PATTERN_KIND_BURN_AFTER_LARGE_EARN, window=day, max_value=100_000),
        rpb.PatternRule(kind=rpb.PATTERN_KIND_BURN_NEW_DEVICE_AFTER_ACCOUNT_CHANGE, window=day),
        rpb.PatternRule(kind=rpb.PATTERN_KIND_RETURN_VALUE_SHARE, window=day, max_value=5000),
        rpb.PatternRule(kind=rpb.PATTERN_KIND_RETURN_AFTER_POINTS_SPENT, window=day),
        rpb.PatternRule(kind=rpb.PATTERN_KIND_REFERRAL_SHARED_FINGERPRINT),
        rpb.PatternRule(kind=rpb.PATTERN_KIND_REFERRAL_DEVICE_REFEREES, window=day, max_value=5),
    ]
    rules = [rpb.Rule(display_name="v", velocity=v, action=apb.DECISION_DECLINE) for v in velocity]
    rules += [rpb.Rule(display_name="t", threshold=t, score=300) for t in thresholds]
    if not with_patterns:
        return rules
    return rules + [rpb.Rule(display_name="p", pattern=p, action=apb.DECISION_REVIEW) for p in patterns]


def blocklist() -> list[bpb.BlocklistEntry]:
    ranges = [
        bpb.BlocklistEntry(type=bpb.BLOCKLIST_ENTRY_TYPE_IP_RANGE, value=f"198.18.{i}.0/24")
        for i in range(50)
    ]
    customers = [
        bpb.BlocklistEntry(type=bpb.BLOCKLIST_ENTRY_TYPE_CUSTOMER, value=f"bad-{i}") for i in range(200)
    ]
    return ranges + customers


def checkout(number: int, run: str, burns: bool = True) -> api.AssessCheckoutRequest:
    return api.AssessCheckoutRequest(
        checkout_id=f"{run}-{number}",
        customer_id=f"customer-{number % 1000}",
        basket=basket_pb2.Basket(
            currency_code="EUR",
            subtotal=eur(5_000 + number % 997),
            store_id=f"store-{number % 20}",
            channel=basket_pb2.CHANNEL_STORE,
        ),
        codes=[f"CODE-{number % 5000}"],
        discount_total=eur(500),
        points_to_earn=50,
        points_to_burn=20 if number % 10 == 0 and burns else 0,
        signals=apb.RiskSignals(
            terminal_id=f"till-{number % 200}",
            card_hash=hashed(f"card-{number % 3000}"),
            device_hash=hashed(f"device-{number % 2000}"),
            ip_hash=hashed(f"ip-{number % 4000}"),
            ip_address=f"10.{number % 250}.{number % 7}.{number % 200}",
        ),
    )


async def measure(
    call: Callable[[int], Awaitable[object]], calls: int, concurrency: int, server: ServerProcess | None
) -> tuple[float, float, float, float | None]:
    """(calls/s, p50 ms, p99 ms, server CPU us per call)."""
    numbers = iter(range(calls))
    latencies: list[float] = []

    async def worker() -> None:
        for number in numbers:
            started = time.perf_counter()
            await call(number)
            latencies.append(time.perf_counter() - started)

    cpu = server.cpu_seconds() if server else None
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    cpu_us = (server.cpu_seconds() - cpu) / calls * 1e6 if server else None
    return (
        calls / elapsed,
        statistics.median(latencies) * 1e3,
        latencies[int(len(latencies) * 0.99)] * 1e3,
        cpu_us,
    )


# What an assessment sends: the counters' script, and the cache's look at the config version.
TOP_LEVEL = ("evalsha", "eval", "get")


async def redis_commands(redis: Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}


async def fraud_rows(args, database_url: str, redis_url: str, check_seconds: str) -> list[tuple]:
    """Each run a tenant of its own, so its rules are the only ones."""
    metadata = tuple(
        (name, f"bench-{check_seconds.replace('.', '')}") if name == TENANT_HEADER else (name, value)
        for name, value in METADATA
    )
    server = service_process(
        "fraud",
        database_url,
        redis_url,
        internal_token=TOKEN,
        settings={"CONFIG_CHECK_SECONDS": check_seconds},
    )
    redis = Redis.from_url(redis_url)
    try:
        channel = await server.channel()
        stub = fraud_service_pb2_grpc.FraudServiceStub(channel)
        for rule in all_rules(not args.no_patterns):
            await stub.CreateRule(
                api.CreateRuleRequest(idempotency_key=uuid.uuid4().hex, rule=rule), metadata=metadata
            )
        for entry in blocklist():
            await stub.CreateBlocklistEntry(
                api.CreateBlocklistEntryRequest(idempotency_key=uuid.uuid4().hex, entry=entry),
                metadata=metadata,
            )
        rows = []
        for round_ in range(args.rounds + 1):  # the first round warms up
            run = uuid.uuid4().hex[:8]

            async def assess(number: int, run=run) -> None:
                answer = await stub.AssessCheckout(
                    checkout(number, run, not args.no_patterns), metadata=metadata, timeout=10
                )
                if answer.assessment.decision != apb.DECISION_ALLOW or answer.assessment.degraded:
                    raise RuntimeError(f"unexpected assessment: {answer.assessment}")

            before = await redis_commands(redis)
            started = time.perf_counter()
            result = await measure(assess, args.calls if round_ else 300, args.concurrency, server)
            elapsed = time.perf_counter() - started
            after = await redis_commands(redis)
            if round_:
                # What the server's consumer, relay and stream trimming send meanwhile, idle.
                await asyncio.sleep(elapsed)
                idle = await redis_commands(redis)
                # Top-level commands only: INFO counts the commands a script runs too.
                sent = {
                    c: (after.get(c, 0) - before.get(c, 0)) - (idle.get(c, 0) - after.get(c, 0))
                    for c in TOP_LEVEL
                }
                rows.append(
                    (*result, (sent["evalsha"] + sent["eval"]) / args.calls, sent["get"] / args.calls)
                )
        await channel.close()
        return rows
    finally:
        await redis.aclose()
        server.stop()


async def bare_redis_rows(args, redis_url: str) -> list[tuple]:
    redis = Redis.from_url(redis_url)
    script = redis.register_script("return 1")
    try:
        rows = []
        for _ in range(args.rounds):

            async def trip(_: int) -> None:
                await script(keys=["bench:fraud:bare"], args=[1])

            rows.append(await measure(trip, args.calls, args.concurrency, None))
        return rows
    finally:
        await redis.aclose()


def median_row(rows: list[tuple]) -> tuple:
    return tuple(
        statistics.median(column) if column[0] is not None else None for column in zip(*rows, strict=True)
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--no-patterns",
        action="store_true",
        help="only the rules and checkouts of the bench before pattern rules",
    )
    args = parser.parse_args()
    args.rate = 0.0
    async with scratch_database() as (database_url, redis_url):
        echo = await echo_rows(args, database_url, redis_url)
        redis_row = median_row(await bare_redis_rows(args, redis_url))
        fraud_row = median_row(await fraud_rows(args, database_url, redis_url, "0.2"))
        fresh_row = median_row(await fraud_rows(args, database_url, redis_url, "0"))
    report(args, echo, redis_row, fraud_row, fresh_row)


def report(args, echo: dict, redis_row: tuple, fraud_row: tuple, fresh_row: tuple) -> None:
    bare_cpu = echo["bare grpc.aio echo"][0]
    print(
        f"python {sys.version.split()[0]} at {os.path.realpath(sys.executable)}; {os.cpu_count()} CPUs; "
        f"concurrency {args.concurrency}; {args.calls} calls x {args.rounds} rounds (medians)"
    )
    print(f"{'':<34}{'calls/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'server CPU us/call':>20}{'x bare echo':>13}")
    for label, (cpu, rate) in echo.items():
        print(f"{label:<34}{rate:>9.0f}{'':>8}{'':>8}{cpu:>20.0f}{cpu / bare_cpu:>13.2f}")
    rate, p50, p99, _ = redis_row
    print(f"{'bare Redis round trip (EVALSHA)':<34}{rate:>9.0f}{p50:>8.2f}{p99:>8.2f}{'(client only)':>20}")
    for label, row in (
        ("AssessCheckout, all rules on", fraud_row),
        ("  same, version GET every call", fresh_row),
    ):
        rate, p50, p99, cpu, scripts, gets = row
        print(f"{label:<34}{rate:>9.0f}{p50:>8.2f}{p99:>8.2f}{cpu:>20.0f}{cpu / bare_cpu:>13.2f}")
        print(
            f"{'':<4}Redis round trips per assessment: {scripts + gets:.2f}"
            f" ({scripts:.2f} counter scripts, {gets:.3f} version GETs; target <= 2)"
        )


if __name__ == "__main__":
    uvloop.run(main())
