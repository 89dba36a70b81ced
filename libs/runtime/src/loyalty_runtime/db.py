"""PostgreSQL through SQLAlchemy 2.0 async and asyncpg: one engine per process, one session per call."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from opentelemetry.trace import TracerProvider
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


class Database:
    def __init__(
        self, url: str, *, pool_size: int = 10, tracer_provider: TracerProvider | None = None
    ) -> None:
        self.engine: AsyncEngine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        if tracer_provider is not None:
            from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

            # A no-op after the first engine of a process; the serving process has one engine.
            SQLAlchemyInstrumentor().instrument(
                engine=self.engine.sync_engine, tracer_provider=tracer_provider
            )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on any error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
