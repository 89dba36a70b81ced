"""Redis (redis-py asyncio) for hot counters, caches and streams. PostgreSQL stays the source of truth."""

from opentelemetry.trace import TracerProvider
from redis.asyncio import Redis


def connect_redis(url: str, *, tracer_provider: TracerProvider | None = None) -> Redis:
    client = Redis.from_url(url, decode_responses=True, health_check_interval=30)
    if tracer_provider is not None:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor.instrument_client(client, tracer_provider=tracer_provider)
    return client
