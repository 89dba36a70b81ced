"""A TCP proxy a test controls, to lose a dependency without stopping it: put it between a service and
PostgreSQL (or Redis, or a client and a server), then `cut()` drops every connection and refuses new
ones until `restore()`; `hold_replies()` keeps forwarding requests but stops passing answers back."""

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._cut = False
        self.replies = asyncio.Event()
        self.replies.set()

    async def start(self) -> "TcpProxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url_for(self, url: str) -> str:
        """`url` with its host:port replaced by this proxy's."""
        scheme, rest = url.split("://", 1)
        authority, _, path = rest.partition("/")
        user = authority.rpartition("@")[0]
        return f"{scheme}://{user + '@' if user else ''}127.0.0.1:{self.port}/{path}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for source, sink, gate in ((reader, up_writer, None), (up_reader, writer, self.replies)):
            task = asyncio.create_task(self._pipe(source, sink, gate))
            self._links.add(task)
            task.add_done_callback(self._links.discard)

    async def _pipe(self, source, sink, gate: asyncio.Event | None) -> None:
        try:
            while data := await source.read(65536):
                if gate is not None and not gate.is_set():
                    continue  # answers are swallowed while held
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.close()

    def hold_replies(self) -> None:
        self.replies.clear()

    async def cut(self) -> None:
        """Drop every open connection and refuse new ones."""
        self._cut = True
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()
        await asyncio.sleep(0)

    def restore(self) -> None:
        self._cut = False
        self.replies.set()

    async def close(self) -> None:
        await self.cut()
        for task in list(self._links):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
