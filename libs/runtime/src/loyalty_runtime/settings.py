"""Typed settings read from the environment, one subclass (and env prefix) per service."""

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Fields every service has. A service subclasses it with its prefix and its catalogue ports:

    class ProfileSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="PROFILE_")
        grpc_port: int = PORTS["profile"].grpc_port
        metrics_port: int = PORTS["profile"].metrics_port

    so `PROFILE_DATABASE_URL` sets `database_url`. Tests construct settings directly.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    grpc_host: str = "[::]"
    grpc_port: int = 0
    # 0 turns the Prometheus endpoint off (tests start many servers in one process).
    metrics_port: int = 0
    database_url: str = "postgresql://postgres@127.0.0.1:5432/loyalty"
    # Per process. Replicas x services x this must stay under PostgreSQL's max_connections.
    database_pool_size: int = 5
    # How long a call waits for a free connection before it is refused (RESOURCE_EXHAUSTED), within
    # its own deadline. A burst beyond the pool queues for a connection (a statement lasts about a
    # millisecond) rather than failing at once: at 128 concurrent checkouts 0.5 s refused a third.
    database_acquire_timeout_seconds: float = 5.0
    # A pooled connection idle this long is closed, so an idle replica gives its connections back.
    database_idle_seconds: float = 60.0
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Shared secret that internal callers present; outside callers reach only the gateway.
    internal_token: SecretStr = SecretStr("dev-internal-token")
    default_deadline_seconds: float = 5.0
    # Calls beyond this many in flight are refused at once rather than queued.
    max_concurrent_calls: int = 64
    # After SIGTERM: NOT_SERVING for this long while still serving, then stop accepting calls and
    # give those in flight the grace period to finish.
    drain_delay_seconds: float = 1.0
    grace_period_seconds: float = 10.0
    # Clients re-resolve DNS when the server closes an old connection, so new pods get traffic.
    max_connection_age_seconds: float = 300.0
    # Keepalive policy: clients may ping this often without calls in flight (a faster client gets
    # GOAWAY too_many_pings); the server pings idle clients every keepalive_time_seconds.
    min_client_ping_interval_seconds: float = 5.0
    keepalive_time_seconds: float = 60.0
    keepalive_timeout_seconds: float = 20.0
    # Readiness follows the database: checked this often, NOT_SERVING while it does not answer.
    readiness_interval_seconds: float = 2.0
    # Access log: every failed call and calls slower than this; all calls with log_every_call.
    slow_call_seconds: float = 0.5
    log_every_call: bool = False
    log_level: str = "INFO"
    # A consumer remembers the events it handled this long (a redelivery older than this would be
    # handled again), and stored answers to idempotency keys are kept this long.
    processed_events_retention_hours: float = 24.0
    idempotency_retention_hours: float = 168.0
