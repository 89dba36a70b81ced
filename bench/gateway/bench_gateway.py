"""The gateway with every service behind it, each in a process of its own (real PostgreSQL and Redis):
PreviewCheckout warm (customer context cached) and cold (every call a cache miss: a second gateway
with GATEWAY_CONTEXT_TTL_SECONDS=0, so each call fans out to profile, segmentation and ledger), and
ReserveCheckout+CommitCheckout as one operation (a 10% campaign with a budget and an earning rule
apply, so promotion reserves and commits a redemption and the ledger posts points), at concurrency 1, 8, 32 and 128, beside a bare
grpc.aio echo measured the same way in the same run. A benchmark, never a timed test.

    make bench BENCH=bench/gateway/bench_gateway.py
    python bench/gateway/bench_gateway.py [--calls 400] [--levels 1,8,32,128]

Figures: requests/s, p50 and p99 latency in ms, errors (by status code). Targets (issue 13): Preview
p99 <= 5 ms and Commit p99 <= 25 ms at concurrency 1; <= 20 ms and <= 100 ms at 8; no errors at 128;
warm Preview throughput >= 20% of the bare echo's.

Every downstream service's admission cap is raised to 512 here, so the gateway's own cap (256) is
what sheds; the database pools keep their production size (5 per process).
"""

import argparse
import asyncio
import collections
import statistics
import sys
import time
import uuid
from pathlib import Path

import grpc
import uvloop

from loyalty.common.v1 import basket_pb2, customer_pb2
from loyalty.gateway.v1 import (
    admin_service_pb2 as admin_api,
    admin_service_pb2_grpc,
    checkout_service_pb2 as api,
    checkout_service_pb2_grpc,
    customer_service_pb2 as customer_api,
    customer_service_pb2_grpc,
)
from loyalty.ledger.v1 import ledger_pb2, ledger_service_pb2 as ledger_api, ledger_service_pb2_grpc
from loyalty.promotion.v1 import (
    campaign_pb2,
    earning_pb2,
    effect_pb2,
    promotion_pb2,
    promotion_service_pb2 as promotion_api,
    promotion_service_pb2_grpc,
)
from loyalty.testing.v1 import echo_pb2, echo_pb2_grpc
from loyalty_devstack.benchkit import ServerProcess, scratch_database, service_process
from loyalty_devstack.infra import free_port
from loyalty_runtime.context import AUTHORIZATION_HEADER, PRINCIPAL_HEADER, TENANT_HEADER

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "bench-internal-token"
TENANT = "bench"
PASSWORD = "bench admin password"
DOWNSTREAM = ("profile", "segmentation", "promotion", "ledger", "fraud")
BASKET = basket_pb2.Basket(
    currency_code="EUR",
    lines=[
        basket_pb2.LineItem(
            line_id=f"l{n}",
            sku=f"sku-{n}",
            quantity=2,
            unit_price={"currency_code": "EUR", "amount_minor": 250},
            line_total={"currency_code": "EUR", "amount_minor": 500},
        )
        for n in range(5)
    ],
)


def gateway_process(
    database_url: str, redis_url: str, targets: dict[str, str], *, migrate: bool = True, **settings
) -> ServerProcess:
    env = {f"{name.upper()}_TARGET": target for name, target in targets.items()}
    env |= {"RATE_LIMIT_PER_SECOND": "0", "HTTP_PORT": str(free_port()), "HTTP_HOST": "127.0.0.1"}
    env |= {name.upper(): str(value) for name, value in settings.items()}
    return service_process(
        "gateway", database_url, redis_url, internal_token=TOKEN, migrate=migrate, settings=env
    )


async def campaigns(promotion: grpc.aio.Channel, internal, program_id: str) -> None:
    """What a checkout meets in a shop: the programme's earning rule (1 point per euro) and a live 10%
    campaign with a budget and a per-customer limit, so a commit reserves and commits a redemption
    (its budget and customer rows taken) and the ledger posts earned points."""
    stub = promotion_service_pb2_grpc.PromotionServiceStub(promotion)
    rule = earning_pb2.EarningRule(
        program_id=program_id,
        display_name="1 point per euro",
        rate={"points": 1, "per_amount": {"currency_code": "EUR", "amount_minor": 100}},
    )
    await stub.CreateEarningRule(
        promotion_api.CreateEarningRuleRequest(idempotency_key=uuid.uuid4().hex, earning_rule=rule),
        metadata=internal,
    )
    budget = campaign_pb2.Budget(max_redemptions=10_000_000, max_redemptions_per_customer=1_000_000)
    campaign = (
        await stub.CreateCampaign(
            promotion_api.CreateCampaignRequest(
                idempotency_key=uuid.uuid4().hex,
                campaign=campaign_pb2.Campaign(display_name="10% off", budget=budget),
            ),
            metadata=internal,
        )
    ).campaign
    effect = effect_pb2.Effect(percent_off=effect_pb2.PercentOffEffect(percent_bps=1000))
    await stub.CreatePromotion(
        promotion_api.CreatePromotionRequest(
            idempotency_key=uuid.uuid4().hex,
            promotion=promotion_pb2.Promotion(
                campaign_id=campaign.campaign_id, display_name="10% off", effects=[effect]
            ),
        ),
        metadata=internal,
    )
    await stub.ActivateCampaign(
        promotion_api.ActivateCampaignRequest(
            idempotency_key=uuid.uuid4().hex, campaign_id=campaign.campaign_id
        ),
        metadata=internal,
    )


async def provision(
    gateway: grpc.aio.Channel,
    ledger: grpc.aio.Channel,
    promotion: grpc.aio.Channel,
    database_url: str,
    customers: int,
):
    from loyalty_gateway import bootstrap

    await bootstrap.create_admin_user(database_url, TENANT, "bench", PASSWORD)
    admin = admin_service_pb2_grpc.AdminServiceStub(gateway)
    token = (
        await admin.CreateAdminToken(
            admin_api.CreateAdminTokenRequest(username="bench", password=PASSWORD),
            metadata=((TENANT_HEADER, TENANT),),
        )
    ).token
    auth = ((AUTHORIZATION_HEADER, f"Bearer {token}"),)
    internal = (
        (AUTHORIZATION_HEADER, f"Bearer {TOKEN}"),
        (TENANT_HEADER, TENANT),
        (PRINCIPAL_HEADER, "bench"),
    )
    program = await ledger_service_pb2_grpc.LedgerServiceStub(ledger).CreateProgram(
        ledger_api.CreateProgramRequest(
            program=ledger_pb2.Program(
                display_name="Club", asset_kind=ledger_pb2.ASSET_KIND_POINTS, asset_code="POINTS"
            ),
            idempotency_key=uuid.uuid4().hex,
        ),
        metadata=internal,
    )
    await campaigns(promotion, internal, program.program.program_id)
    settings = {
        "default_program_id": program.program.program_id,
        "currency_code": "EUR",
        "time_zone": "UTC",
        "default_locale": "en",
    }
    await admin.UpdateTenantSettings(
        admin_api.UpdateTenantSettingsRequest(idempotency_key="s", settings=settings), metadata=auth
    )
    till = await admin.CreateTerminal(
        admin_api.CreateTerminalRequest(
            idempotency_key="t", terminal={"display_name": "till", "store_id": "s1"}
        ),
        metadata=auth,
    )
    key = await admin.CreateApiKey(
        admin_api.CreateApiKeyRequest(
            idempotency_key="k",
            api_key={"display_name": "till", "scopes": [1, 2, 3], "terminal_id": till.terminal.terminal_id},
        ),
        metadata=auth,
    )
    till_auth = ((AUTHORIZATION_HEADER, f"Bearer {key.secret}"),)
    stub = customer_service_pb2_grpc.CustomerServiceStub(gateway)
    ids = []
    for n in range(customers):
        enrolled = await stub.EnrolCustomer(
            customer_api.EnrolCustomerRequest(
                idempotency_key=f"c{n}",
                identifiers=[{"type": customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD, "value": f"card-{n:06d}"}],
                given_name="Bench",
            ),
            metadata=till_auth,
        )
        ids.append(enrolled.customer.customer_id)
    return till_auth, ids


async def measure(call, calls: int, concurrency: int) -> dict:
    latencies: list[float] = []
    failures: collections.Counter = collections.Counter()
    numbers = iter(range(calls))

    async def worker() -> None:
        for number in numbers:
            started = time.perf_counter()
            try:
                await call(number)
                latencies.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError as error:
                failures[error.code().name] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def at(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")
        )

    return {
        "rps": len(latencies) / elapsed,
        "p50": at(0.5),
        "p99": at(0.99),
        "errors": dict(failures),
        "latencies": latencies,
    }


def row(label: str, concurrency: int, figures: dict) -> str:
    errors = ",".join(f"{k}:{v}" for k, v in figures["errors"].items()) or "0"
    return f"{label:<34} {concurrency:>5} {figures['rps']:>9.0f} {figures['p50']:>8.2f} {figures['p99']:>8.2f}  {errors}"


async def main(args) -> None:
    levels = [int(level) for level in args.levels.split(",")]
    async with scratch_database() as (database_url, redis_url):
        servers = {
            name: service_process(
                name, database_url, redis_url, internal_token=TOKEN, settings={"MAX_CONCURRENT_CALLS": "512"}
            )
            for name in DOWNSTREAM
        }
        port = free_port()
        bare = ServerProcess(
            "bare-echo", [sys.executable, str(ROOT / "bench/runtime/servers.py"), "bare", str(port)], {}, port
        )
        processes = [*servers.values(), bare]
        try:
            channels = {name: await server.channel() for name, server in servers.items()}
            targets = {name: f"127.0.0.1:{server.port}" for name, server in servers.items()}
            warm_gateway = gateway_process(database_url, redis_url, targets)
            processes.append(warm_gateway)
            warm_channel = await warm_gateway.channel()
            cold_gateway = gateway_process(
                database_url, redis_url, targets, context_ttl_seconds=0, migrate=False
            )
            processes.append(cold_gateway)
            cold_channel = await cold_gateway.channel()
            till, customers = await provision(
                warm_channel, channels["ledger"], channels["promotion"], database_url, args.customers
            )
            cpu = {"gateway": warm_gateway, **servers}
            await report(args, levels, bare, warm_channel, cold_channel, till, customers, cpu)
        finally:
            for process in processes:
                process.stop()


async def cpu_per_call(label: str, call, calls: int, processes: dict[str, ServerProcess]) -> str:
    """Server CPU per call, process by process (user + system, /proc), at concurrency 8."""
    before = {name: process.cpu_seconds() for name, process in processes.items()}
    figures = await measure(call, calls, 8)
    done = len(figures["latencies"]) or 1
    spent = {name: (processes[name].cpu_seconds() - before[name]) * 1e6 / done for name in processes}
    cells = " ".join(f"{name} {us:.0f}" for name, us in spent.items() if us >= 1)
    return f"{label:<34} CPU us/call: {cells}  (total {sum(spent.values()):.0f})"


async def report(args, levels, bare, warm_channel, cold_channel, till, customers, cpu) -> None:
    echo = echo_pb2_grpc.EchoServiceStub(await bare.channel())
    warm = checkout_service_pb2_grpc.CheckoutServiceStub(warm_channel)
    cold = checkout_service_pb2_grpc.CheckoutServiceStub(cold_channel)
    run = uuid.uuid4().hex[:6]

    def preview(stub):
        async def call(n: int):
            request = api.PreviewCheckoutRequest(
                customer={"customer_id": customers[n % len(customers)]}, basket=BASKET
            )
            await stub.PreviewCheckout(request, metadata=till, timeout=10)

        return call

    async def reserve_commit(n: int):
        checkout_id = f"{run}-{n}-{time.perf_counter_ns()}"
        sale = {
            "checkout_id": checkout_id,
            "customer": {"customer_id": customers[n % len(customers)]},
            "basket": BASKET,
        }
        await warm.ReserveCheckout(api.ReserveCheckoutRequest(**sale), metadata=till, timeout=10)
        await warm.CommitCheckout(api.CommitCheckoutRequest(**sale), metadata=till, timeout=10)

    async def bare_echo(_: int):
        await echo.Echo(echo_pb2.EchoRequest(text="hello"), timeout=10)

    rows = [
        ("bare grpc.aio echo", bare_echo),
        ("PreviewCheckout warm", preview(warm)),
        ("PreviewCheckout cold (cache miss)", preview(cold)),
        ("ReserveCheckout+CommitCheckout", reserve_commit),
    ]
    for _, call in rows:  # warm-up: connections, caches, the promotion catalogue
        await measure(call, min(200, args.calls), 4)
    print(f"{'':<34} {'conc':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  errors")
    echo_rps, warm_rps = {}, {}
    for concurrency in levels:
        for label, call in rows:
            calls = (
                args.calls
                if label != "ReserveCheckout+CommitCheckout"
                else max(args.calls // 2, concurrency * 2)
            )
            figures = await measure(call, max(calls, concurrency * 4), concurrency)
            print(row(label, concurrency, figures), flush=True)
            if label == "bare grpc.aio echo":
                echo_rps[concurrency] = figures["rps"]
            elif label == "PreviewCheckout warm":
                warm_rps[concurrency] = figures["rps"]
        print()
    share = statistics.median(warm_rps[c] / echo_rps[c] for c in levels)
    print(f"warm Preview throughput / bare echo (median over levels): {share:.0%}")
    print()
    for label, call in rows[1:]:
        print(await cpu_per_call(label, call, args.calls, cpu), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--levels", default="1,8,32,128")
    uvloop.run(main(parser.parse_args()))
