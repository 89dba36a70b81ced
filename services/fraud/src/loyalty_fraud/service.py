"""The fraud service as the runtime runs it: settings, its API, its schema and migrations."""

from pydantic_settings import SettingsConfigDict

from loyalty.fraud.v1 import fraud_service_pb2
from loyalty.gateway.v1 import events_pb2 as gateway_events
from loyalty.profile.v1 import events_pb2 as profile_events
from loyalty_fraud import app
from loyalty_fraud.cache import ConfigCache
from loyalty_fraud.counters import Counters
from loyalty_fraud.models import SCHEMA
from loyalty_fraud.servicer import FraudServicer
from loyalty_runtime.catalogue import PORTS
from loyalty_runtime.events import Subscription
from loyalty_runtime.jobs import Schedule
from loyalty_runtime.privacy import PROFILE_EVENTS, CustomerData
from loyalty_runtime.server import Api, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings


class FraudSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=PORTS["fraud"].env_prefix)

    grpc_port: int = PORTS["fraud"].grpc_port
    metrics_port: int = PORTS["fraud"].metrics_port
    # How stale a replica's copy of a tenant's rules may be after another replica changed them.
    config_check_seconds: float = 0.2
    # ...and how stale when Redis lost the version's raise (a failover): PostgreSQL is asked this often.
    config_database_seconds: float = 5.0
    # How often the pattern rules' history older than 90 days is deleted; 0 turns it off.
    retention_interval_seconds: float = 3600.0


DEFINITION = ServiceDefinition(
    name="fraud",
    settings=FraudSettings,
    apis=[
        Api(
            fraud_service_pb2.DESCRIPTOR.services_by_name["FraudService"],
            lambda resources: FraudServicer(
                resources.units,
                Counters(resources.redis),
                ConfigCache(
                    resources.redis,
                    check_seconds=resources.settings.config_check_seconds,
                    database_seconds=resources.settings.config_database_seconds,
                ),
            ),
        )
    ],
    schema=SCHEMA,
    migrations="loyalty_fraud:migrations",
    events="fraud.events",
    subscriptions=[
        Subscription(PROFILE_EVENTS, profile_events.CustomerUpdated, app.customer_updated),
        Subscription("gateway.events", gateway_events.CodeAttemptsLocked, app.code_attempts_locked),
    ],
    schedules=[
        Schedule(
            "fraud.history_retention",
            every=lambda settings: settings.retention_interval_seconds,
            run=lambda resources: app.forget_old_history(resources.units),
        )
    ],
    customer_data=CustomerData(
        export=app.export_customer_data, erase=app.erase_customer, merge=app.merge_customers
    ),
)
