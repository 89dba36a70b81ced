"""Real local receivers for the providers: an HTTP/1.1 server (asyncio streams, keep-alive) that
records every request and answers as the test scripts it, and an SMTP server (aiosmtpd)."""

import asyncio
import email
import inspect
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller

# aiosmtpd logs envelopes (addresses) at INFO; the suite's log check forbids personal data.
logging.getLogger("mail.log").setLevel(logging.WARNING)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpReceiver:
    """`respond(request) -> status` (or an awaitable of it) decides each answer (default 200)."""

    respond: Callable[[Request], int] = lambda _request: 200
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> "HttpReceiver":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(path, headers, body)
                self.requests.append(request)
                status = self.respond(request)
                if inspect.isawaitable(status):
                    status = await status
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Collect:
    def __init__(self, messages: list) -> None:
        self.messages = messages

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, email.message_from_bytes(envelope.content)))
        return "250 OK"


class SmtpReceiver:
    """A real SMTP server on a free port (aiosmtpd runs it on a thread of its own)."""

    def __init__(self) -> None:
        self.messages: list = []
        self.port = _free_port()
        self.controller = Controller(_Collect(self.messages), hostname="127.0.0.1", port=self.port)

    def start(self) -> "SmtpReceiver":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
