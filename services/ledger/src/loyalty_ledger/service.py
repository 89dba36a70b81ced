"""The ledger as the runtime runs it: one definition (settings, API, schema and migrations, events,
schedules, customer data)."""

from pydantic_settings import SettingsConfigDict

from loyalty.fraud.v1 import events_pb2 as fraud_events
from loyalty.ledger.v1 import ledger_service_pb2
from loyalty.promotion.v1 import events_pb2 as promotion_events
from loyalty_ledger import app
from loyalty_ledger.repository import SCHEMA
from loyalty_ledger.servicer import LedgerServicer
from loyalty_runtime.catalogue import PORTS
from loyalty_runtime.events import Subscription
from loyalty_runtime.jobs import Schedule
from loyalty_runtime.privacy import CustomerData
from loyalty_runtime.server import Api, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings


class LedgerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=PORTS["ledger"].env_prefix)

    grpc_port: int = PORTS["ledger"].grpc_port
    metrics_port: int = PORTS["ledger"].metrics_port
    # Scheduled runs, once per period across replicas: expire due lots, void timed-out holds and
    # mature pending points; recompute tiers as the window moves on. 0 turns a schedule off.
    expiry_interval_seconds: float = 60.0
    tier_interval_seconds: float = 3600.0


DEFINITION = ServiceDefinition(
    name="ledger",
    settings=LedgerSettings,
    apis=[
        Api(
            ledger_service_pb2.DESCRIPTOR.services_by_name["LedgerService"],
            lambda resources: LedgerServicer(resources.units),
        )
    ],
    schema=SCHEMA,
    migrations="loyalty_ledger:migrations",
    events="ledger.events",
    subscriptions=[
        Subscription("promotion.events", promotion_events.RewardGranted, app.post_reward),
        Subscription("promotion.events", promotion_events.RewardReversed, app.reverse_reward),
        Subscription("fraud.events", fraud_events.CaseResolved, app.resolve_review),
    ],
    schedules=[
        Schedule(
            "ledger.expiry", every=lambda settings: settings.expiry_interval_seconds, run=app.scheduled_expiry
        ),
        Schedule(
            "ledger.tiers", every=lambda settings: settings.tier_interval_seconds, run=app.scheduled_tiers
        ),
    ],
    customer_data=CustomerData(
        export=app.export_customer_data, erase=app.erase_customer, merge=app.merge_customers
    ),
)
