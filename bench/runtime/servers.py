"""The servers bench_runtime.py measures, each run in a process of its own on uvloop:

    python bench/runtime/servers.py bare PORT      a bare grpc.aio server: the generated servicer, no runtime
    python bench/runtime/servers.py runtime PORT   the same Echo handler inside the full runtime stack

The runtime server reads ECHO_* settings from the environment like any service.
"""

import asyncio
import signal
import sys

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2_grpc

from loyalty.testing.v1 import echo_pb2, echo_pb2_grpc


class BareEcho(echo_pb2_grpc.EchoServiceServicer):
    async def Echo(self, request, context):
        return echo_pb2.EchoResponse(text=request.text)


async def serve_bare(port: int) -> None:
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServiceServicer_to_server(BareEcho(), server)
    health_pb2_grpc.add_HealthServicer_to_server(
        health.aio.HealthServicer(), server
    )  # readiness for the bench
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


async def serve_runtime() -> None:
    from loyalty_runtime.logs import configure_logging
    from loyalty_runtime.server import ServiceServer, serve_until_signalled
    from loyalty_runtime.testing import ECHO

    settings = ECHO.settings()
    configure_logging("echo", settings.log_level)
    await serve_until_signalled(ServiceServer(ECHO, settings))


if __name__ == "__main__":
    kind = sys.argv[1]
    uvloop.run(serve_bare(int(sys.argv[2])) if kind == "bare" else serve_runtime())
