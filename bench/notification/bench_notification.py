"""Notification throughput: messages/second from SendNotification (enqueue) to delivered through the
webhook provider into a local HTTP receiver, with 1 and 2 delivery worker processes, and the
enqueue call's server CPU. A benchmark, never a timed test.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/loyalty_bench REDIS_URL=redis://127.0.0.1:6379/0 \\
        python bench/notification/bench_notification.py [--messages 2000] [--workers 1 2] [--loops 4]

Each run creates a database of its own on that server, migrates it with the services' own `migrate`
commands and drops it at the end. Processes of their own, each `python -m loyalty_<service> serve`
on uvloop with the production interceptors: the profile service (SendNotification asks it for the
customer), one notification replica that only answers calls (NOTIFICATION_DELIVERY_WORKERS=0: its
CPU per call is the enqueue's), and 1 or 2 replicas that only deliver (each with `--loops` delivery
loops). The receiver runs in this process and answers 200 at once. Per round a new tenant sends
`--messages` transactional messages (no caps, no quiet hours) at a concurrency of 16 while the
workers deliver; "delivered/s" is messages over the time from the first enqueue to the last one
received; the provider rate limit is off. "CPU ms" columns are server CPU per message (the API
replica's for the enqueue; all delivery replicas' for delivery), steadier than rates on a shared machine.
"""

import argparse
import asyncio
import json
import os
import platform
import time
import uuid

import uvloop

from loyalty.common.v1 import customer_pb2
from loyalty.notification.v1 import (
    message_pb2 as mpb,
    notification_service_pb2 as api,
    notification_service_pb2_grpc,
    template_pb2 as tpb,
)
from loyalty.profile.v1 import profile_service_pb2 as profile_api, profile_service_pb2_grpc
from loyalty_devstack.benchkit import scratch_database, service_process
from loyalty_runtime.context import AUTHORIZATION_HEADER, PRINCIPAL_HEADER, TENANT_HEADER

INTERNAL_TOKEN = "bench-internal-token"
CONCURRENCY = 16


class Receiver:
    """An HTTP/1.1 endpoint that counts distinct message ids and answers 200."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.expected = 0
        self.done = asyncio.Event()

    async def start(self) -> int:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                body = await reader.readexactly(length)
                self.seen.add(json.loads(body)["message_id"])
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                if len(self.seen) >= self.expected:
                    self.done.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def _metadata(tenant: str):
    return (
        (AUTHORIZATION_HEADER, f"Bearer {INTERNAL_TOKEN}"),
        (TENANT_HEADER, tenant),
        (PRINCIPAL_HEADER, "bench"),
    )


async def _prepare(profile, notification, tenant: str) -> str:
    customer = await profile.EnrolCustomer(
        profile_api.EnrolCustomerRequest(
            idempotency_key=uuid.uuid4().hex,
            identifiers=[
                customer_pb2.Identifier(
                    type=customer_pb2.IDENTIFIER_TYPE_LOYALTY_CARD, value=uuid.uuid4().hex[:16]
                )
            ],
            given_name="Bench",
            locale="en",
        ),
        metadata=_metadata(tenant),
    )
    variant = tpb.TemplateVariant(
        channel=tpb.NOTIFICATION_CHANNEL_WEBHOOK,
        locale="en",
        subject="Hi {{ customer.given_name }}",
        body="{{ points | number }} points",
    )
    await notification.CreateTemplate(
        api.CreateTemplateRequest(
            idempotency_key=uuid.uuid4().hex,
            template=tpb.Template(
                key="points",
                purpose=tpb.MESSAGE_PURPOSE_TRANSACTIONAL,
                variants=[variant],
                default_locale="en",
            ),
        ),
        metadata=_metadata(tenant),
    )
    return customer.customer.customer_id


async def _round(
    profile, notification, api_server, workers, receiver: Receiver, url: str, messages: int
) -> dict:
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    customer = await _prepare(profile, notification, tenant)
    receiver.seen, receiver.expected, receiver.done = set(), messages, asyncio.Event()
    gate = asyncio.Semaphore(CONCURRENCY)
    points = {"points": mpb.TemplateValue(int_value=1200)}

    async def send(_i: int) -> None:
        async with gate:
            await notification.SendNotification(
                api.SendNotificationRequest(
                    idempotency_key=uuid.uuid4().hex,
                    recipient=customer_pb2.CustomerRef(customer_id=customer),
                    template_key="points",
                    channels=[tpb.NOTIFICATION_CHANNEL_WEBHOOK],
                    variables=points,
                    webhook_url=url,
                ),
                metadata=_metadata(tenant),
                timeout=30,
            )

    cpu_before = api_server.cpu_seconds()
    workers_before = sum(w.cpu_seconds() for w in workers)
    started = time.perf_counter()
    await asyncio.gather(*(send(i) for i in range(messages)))
    enqueued = time.perf_counter()
    cpu_after = api_server.cpu_seconds()
    await asyncio.wait_for(receiver.done.wait(), 600)
    delivered = time.perf_counter()
    workers_after = sum(w.cpu_seconds() for w in workers)
    return {
        "delivery_cpu_ms": (workers_after - workers_before) / messages * 1000,
        "enqueue_per_s": messages / (enqueued - started),
        "enqueue_cpu_ms": (cpu_after - cpu_before) / messages * 1000,
        "delivered_per_s": messages / (delivered - started),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="delivery processes per round")
    parser.add_argument("--loops", type=int, default=4, help="delivery loops per delivery process")
    args = parser.parse_args()
    async with scratch_database() as (url_db, redis_url):
        processes = []
        try:
            profile_server = service_process("profile", url_db, redis_url, internal_token=INTERNAL_TOKEN)
            processes.append(profile_server)
            profile_channel = await profile_server.channel()
            common = {
                "PROFILE_TARGET": f"127.0.0.1:{profile_server.port}",
                "WEBHOOK_ALLOW_LOOPBACK": "true",
                "RATE_LIMITS": json.dumps({"webhook": 0}),
                "DATABASE_POOL_SIZE": "10",
                # Several replicas on one machine; the links' HTTP port is not measured here.
                "HTTP_ENABLED": "false",
            }
            api_server = service_process(
                "notification",
                url_db,
                redis_url,
                internal_token=INTERNAL_TOKEN,
                settings={**common, "DELIVERY_WORKERS": "0"},
            )
            processes.append(api_server)
            notification = notification_service_pb2_grpc.NotificationServiceStub(await api_server.channel())
            profile = profile_service_pb2_grpc.ProfileServiceStub(profile_channel)
            receiver = Receiver()
            url = f"http://127.0.0.1:{await receiver.start()}/hook"
            print(
                f"{platform.python_implementation()} {platform.python_version()} ({platform.python_compiler()}); "
                f"{os.cpu_count()} CPUs; {args.messages} messages per round, {args.loops} loops per delivery process"
            )
            print(
                f"{'delivery procs':<16}{'enqueue/s':>11}{'enqueue CPU ms':>16}{'delivered/s':>13}{'delivery CPU ms':>17}"
            )
            workers = []
            for count in sorted(args.workers):
                while len(workers) < count:
                    worker = service_process(
                        "notification",
                        url_db,
                        redis_url,
                        internal_token=INTERNAL_TOKEN,
                        migrate=False,
                        settings={**common, "DELIVERY_WORKERS": str(args.loops), "POLL_SECONDS": "0.05"},
                    )
                    processes.append(worker)
                    await (await worker.channel()).close()
                    workers.append(worker)
                figures = await _round(
                    profile, notification, api_server, workers, receiver, url, args.messages
                )
                print(
                    f"{count:<16}{figures['enqueue_per_s']:>11.0f}{figures['enqueue_cpu_ms']:>16.2f}"
                    f"{figures['delivered_per_s']:>13.0f}{figures['delivery_cpu_ms']:>17.2f}",
                    flush=True,
                )
        finally:
            for process in reversed(processes):
                process.stop()


if __name__ == "__main__":
    uvloop.run(main())
