"""The segmentation service as the runtime runs it: one definition (settings, API, schema and
migrations, events, subscriptions, schedule, customer data)."""

from pydantic_settings import SettingsConfigDict

from loyalty.profile.v1 import events_pb2 as profile_events
from loyalty.segmentation.v1 import segmentation_service_pb2
from loyalty_runtime.catalogue import PORTS
from loyalty_runtime.events import Subscription
from loyalty_runtime.jobs import Schedule
from loyalty_runtime.privacy import PROFILE_EVENTS, CustomerData
from loyalty_runtime.server import Api, ServiceDefinition
from loyalty_runtime.settings import ServiceSettings
from loyalty_segmentation import app
from loyalty_segmentation.cache import MembershipCache
from loyalty_segmentation.repository import SCHEMA
from loyalty_segmentation.servicer import SegmentationServicer


class SegmentationSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SEGMENTATION_")
    grpc_port: int = PORTS["segmentation"].grpc_port
    metrics_port: int = PORTS["segmentation"].metrics_port
    # Time-based rules ("no purchase in 90 days") turn true with no event: recompute every live rule
    # segment this often, once per period across replicas. 0 turns it off.
    refresh_interval_seconds: float = 3600.0


DEFINITION = ServiceDefinition(
    name="segmentation",
    settings=SegmentationSettings,
    apis=[
        Api(
            segmentation_service_pb2.DESCRIPTOR.services_by_name["SegmentationService"],
            lambda resources: SegmentationServicer(resources.units, MembershipCache(resources.redis)),
        )
    ],
    schema=SCHEMA,
    migrations="loyalty_segmentation:migrations",
    events="segmentation.events",
    subscriptions=[Subscription(PROFILE_EVENTS, profile_events.CustomerCreated, app.customer_created)],
    schedules=[
        Schedule(
            "segmentation.refresh",
            every=lambda settings: settings.refresh_interval_seconds,
            run=lambda resources: app.scheduled_refresh(resources, MembershipCache(resources.redis)),
        )
    ],
    customer_data=CustomerData(
        export=app.export_customer_data, erase=app.erase_customer, merge=app.merge_customers
    ),
)
