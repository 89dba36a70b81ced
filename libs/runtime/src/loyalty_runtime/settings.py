"""Typed settings read from the environment, one subclass (and env prefix) per service."""

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Fields every service has. A service subclasses it with its own prefix and default ports:

    class ProfileSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="PROFILE_")
        grpc_port: int = 50052

    so `PROFILE_DATABASE_URL` sets `database_url`. Tests construct settings directly.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    grpc_host: str = "[::]"
    grpc_port: int = 0
    # 0 turns the Prometheus endpoint off (tests start many servers in one process).
    metrics_port: int = 0
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/loyalty"
    database_pool_size: int = 10
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Shared secret that internal callers present; outside callers reach only the gateway.
    internal_token: SecretStr = SecretStr("dev-internal-token")
    default_deadline_seconds: float = 5.0
    grace_period_seconds: float = 10.0
    # Clients re-resolve DNS when the server closes an old connection, so new pods get traffic.
    max_connection_age_seconds: float = 300.0
    log_level: str = "INFO"
