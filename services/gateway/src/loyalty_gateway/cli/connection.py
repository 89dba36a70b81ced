"""How the admin CLI reaches the gateway: one gRPC channel per command, the operator's token (an admin
user's JWT or an API key with the admin scope) as the bearer credential on every call, a deadline
on every call, and a refusal printed with its code, reason and field violations (exit status 1)."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
import typer
from grpc_status import rpc_status
from rich.console import Console
from rich.table import Table

from loyalty.gateway.v1 import admin_service_pb2_grpc
from loyalty.promotion.v1 import promotion_service_pb2_grpc
from loyalty.segmentation.v1 import segmentation_service_pb2_grpc
from loyalty_runtime.errors import bad_request, error_info

T = TypeVar("T")
# Progress, diffs and errors go to stderr, so an export to stdout stays clean.
console = Console(stderr=True, highlight=False, soft_wrap=True)
# Tables and secrets, on stdout.
output = Console(highlight=False, soft_wrap=True)
# A table piped into a file or another program is not cut to a terminal's 80 columns.
PIPED_WIDTH = 240


def print_table(table: Table) -> None:
    if output.is_terminal:
        output.print(table)
    else:
        Console(file=output.file, width=PIPED_WIDTH, highlight=False).print(table)


@dataclass(frozen=True)
class Connection:
    target: str
    token: str
    tls: bool
    timeout: float

    def channel(self) -> grpc.aio.Channel:
        if self.tls:
            return grpc.aio.secure_channel(self.target, grpc.ssl_channel_credentials())
        return grpc.aio.insecure_channel(self.target)


class Admin:
    """The gateway's AdminService and the services' admin RPCs it serves under their own names."""

    def __init__(self, channel: grpc.aio.Channel, connection: Connection) -> None:
        self.gateway = admin_service_pb2_grpc.AdminServiceStub(channel)
        self.promotion = promotion_service_pb2_grpc.PromotionServiceStub(channel)
        self.segmentation = segmentation_service_pb2_grpc.SegmentationServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {connection.token}"),) if connection.token else ()
        self._timeout = connection.timeout

    async def call(self, method, request):
        return await method(request, metadata=self._metadata, timeout=self._timeout)

    def stream(self, method, request, timeout: float) -> AsyncIterator:
        return method(request, metadata=self._metadata, timeout=timeout)


def describe(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    info = error_info(status) if status else None
    text = f"{error.code().name}{' ' + info.reason if info else ''}: {error.details()}"
    violations = bad_request(status) if status else None
    for violation in violations.field_violations if violations else ():
        text += f"\n  {violation.field}: {violation.description}"
    return text


def run(connection: Connection, work: Callable[[Admin], Awaitable[T]]) -> T:
    """`work` over one channel; a gRPC refusal is printed and ends the command with status 1."""

    async def main() -> T:
        async with connection.channel() as channel:
            return await work(Admin(channel, connection))

    try:
        return asyncio.run(main())
    except grpc.aio.AioRpcError as error:
        console.print(f"[red]{describe(error)}[/red]")
        raise typer.Exit(1) from None
