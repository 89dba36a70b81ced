"""Redis (redis-py asyncio) for hot counters, caches and streams. PostgreSQL stays the source of truth.

Replies are bytes (event payloads are protobuf). Short socket timeouts: a Redis outage makes the calls
that need Redis fail or degrade quickly, and never blocks the rest.
"""

from redis.asyncio import Redis


def connect_redis(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0, health_check_interval=30)
