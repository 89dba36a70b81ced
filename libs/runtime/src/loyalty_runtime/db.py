"""PostgreSQL through asyncpg: one bounded pool per process; transactions bounded by the call's deadline.

SQLAlchemy describes each service's tables (`models.py`) and Alembic migrates them. Calls run SQL text
on asyncpg directly: a round trip through the ORM session costs about ten times its CPU here.

- The pool never opens more than `pool_size` connections; a call waits for one at most
  `acquire_timeout` (and never past its own deadline), then is refused with RESOURCE_EXHAUSTED.
- A transaction starts with `statement_timeout` and `lock_timeout` set to the call's remaining
  deadline, in the same round trip as its BEGIN, so no statement or lock wait outlives the caller; a
  cancelled call cancels its statement on the server (asyncpg sends PostgreSQL a cancel request).
- Connections leave the pool without a reset query: transactions here always end in COMMIT or
  ROLLBACK and nothing sets session state, so asyncpg's per-release reset would be a wasted round trip.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from loyalty_runtime.errors import (
    Aborted,
    DeadlineExceeded,
    DomainError,
    InvalidArgument,
    Reason,
    ResourceExhausted,
    Unavailable,
)
from loyalty_runtime.telemetry import untraced

log = logging.getLogger("loyalty.db")

# Work without a caller (background jobs, event handlers) gets this long per statement.
BACKGROUND_STATEMENT_SECONDS = 30.0
# A transaction left open by a bug cannot hold its locks longer than this.
IDLE_IN_TRANSACTION_MS = 30_000


def asyncpg_dsn(url: str) -> str:
    """SQLAlchemy-style `postgresql+asyncpg://` URLs are accepted too."""
    scheme, _, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}://{rest}"


async def _setup_connection(connection: asyncpg.Connection) -> None:
    with untraced():  # connection set-up is not a call's work
        for kind in ("json", "jsonb"):
            await connection.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_connection(connection: asyncpg.Connection) -> None:
    """The pool's reset: nothing to undo (see the module's docstring)."""


class Database:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        acquire_timeout: float = 1.0,
        application_name: str = "loyalty",
        idle_seconds: float = 60.0,
    ) -> None:
        self.dsn = asyncpg_dsn(url)
        self.pool_size = pool_size
        self.idle_seconds = idle_seconds
        self.acquire_timeout = acquire_timeout
        self.application_name = application_name
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        """Create the pool; it connects lazily, so this never waits for the database."""
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=0,
                max_size=self.pool_size,
                init=_setup_connection,
                reset=_keep_connection,
                max_inactive_connection_lifetime=self.idle_seconds,
                server_settings={
                    "application_name": self.application_name,
                    "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS),
                },
            )

    @asynccontextmanager
    async def connection(self, budget: float | None = None) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, waited for at most `acquire_timeout` or the remaining `budget`."""
        if self._pool is None:
            await self.open()
        pool = self._pool  # released to the pool it came from, even if close() runs meanwhile
        wait = self.acquire_timeout if budget is None else max(0.001, min(budget, self.acquire_timeout))
        try:
            connection = await pool.acquire(timeout=wait)
        except TimeoutError:
            if budget is not None and budget <= self.acquire_timeout:
                raise DeadlineExceeded(Reason.DEADLINE_EXCEEDED, "the call ran out of time") from None
            if pool.get_idle_size() == 0 and pool.get_size() >= self.pool_size:
                raise ResourceExhausted(
                    Reason.OVERLOADED, "every database connection is busy", retry_after_seconds=wait
                ) from None
            raise Unavailable(Reason.UNAVAILABLE, "the database does not answer") from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise as_domain_error(error) from None
        try:
            yield connection
        finally:
            await pool.release(connection)

    @asynccontextmanager
    async def transaction(
        self, budget: float | None = None, *, read_only: bool = False
    ) -> AsyncIterator[asyncpg.Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        async with self.connection(budget) as connection:
            limit_ms = max(1, int((BACKGROUND_STATEMENT_SECONDS if budget is None else budget) * 1000))
            mode = " READ ONLY" if read_only else ""
            await connection.execute(
                f"BEGIN{mode}; SET LOCAL statement_timeout = {limit_ms}; SET LOCAL lock_timeout = {limit_ms}"
            )
            try:
                yield connection
            except BaseException:
                await _roll_back(connection)
                raise
            await connection.execute("COMMIT")

    async def ping(self, seconds: float = 2.0) -> None:
        with untraced():
            async with self.connection(seconds) as connection:
                await connection.fetchval("SELECT 1", timeout=seconds)

    async def close(self, seconds: float = 5.0) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                async with asyncio.timeout(seconds):
                    await pool.close()
            except TimeoutError:
                pool.terminate()


async def _roll_back(connection: asyncpg.Connection) -> None:
    """Roll back if the connection still can; if not (lost, cancelled mid-statement), drop it. Never
    raises: the error that ended the transaction is the one to report."""
    try:
        if not connection.is_closed():
            await connection.execute("ROLLBACK")
    except (Exception, asyncio.CancelledError):
        with contextlib.suppress(Exception):
            connection.terminate()


# SQLSTATE classes and codes -> what the caller should do.
_RETRY = {"40001", "40P01"}  # serialization failure, deadlock
_TIMED_OUT = {"57014", "55P03"}  # statement cancelled (statement_timeout), lock_timeout
_UNAVAILABLE_CLASSES = ("08", "53", "57P")  # connection, resources, shutting down


def as_domain_error(error: BaseException) -> DomainError | None:
    """What a database failure means to the caller; None for a bug (INTERNAL)."""
    if isinstance(error, DomainError):
        return error
    if isinstance(error, OSError | asyncpg.InterfaceError | asyncpg.exceptions.ConnectionDoesNotExistError):
        return Unavailable(Reason.UNAVAILABLE, "lost the connection to the database; retry")
    state = getattr(error, "sqlstate", None)
    if not isinstance(state, str):
        return None
    if state in _RETRY:
        return Aborted(Reason.CONCURRENT_MODIFICATION, "concurrent modification; retry with the same key")
    if state in _TIMED_OUT:
        return DeadlineExceeded(Reason.DEADLINE_EXCEEDED, "the call ran out of time")
    if state.startswith(_UNAVAILABLE_CLASSES):
        return Unavailable(Reason.UNAVAILABLE, "the database is unavailable; retry")
    if state.startswith("22"):
        # A value the database cannot store: validation should have caught it; say so in the log.
        log.warning("a value reached the database unvalidated", extra={"fields": {"sqlstate": state}})
        return InvalidArgument(Reason.INVALID_ARGUMENT, "a value is out of range or too long")
    return None
