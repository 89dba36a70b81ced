"""RecordEvent: non-purchase activities an app reports (a review, a share, a cart abandoned, custom),
published as `activity.recorded` through the gateway's outbox, once per idempotency key. The
platform's own event names are reserved, so an app cannot fake a purchase or a tier change."""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from loyalty.gateway.v1 import events_pb2
from loyalty_runtime.errors import InvalidArgument, Reason
from loyalty_runtime.events import ACTIVITY_TYPE, MAX_ACTIVITY_TYPE_LENGTH, is_activity_type
from loyalty_runtime.protobuf import timestamp
from loyalty_runtime.uow import UnitOfWork

MAX_AGE = timedelta(days=30)
MAX_SKEW = timedelta(minutes=5)


def check_event_type(event_type: str) -> str:
    if len(event_type) > MAX_ACTIVITY_TYPE_LENGTH or not ACTIVITY_TYPE.fullmatch(event_type):
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "a dotted, lower-case name such as review.written", field="event_type"
        )
    if not is_activity_type(event_type):
        raise InvalidArgument(
            Reason.RESERVED_EVENT_TYPE, "the platform's own event names are reserved", field="event_type"
        )
    return event_type


@dataclass(frozen=True)
class Activity:
    customer_id: str
    event_type: str
    occur_time: datetime | None
    properties: dict


async def record_activity(uow: UnitOfWork, activity: Activity) -> str:
    occurred = activity.occur_time or uow.now
    if not uow.now - MAX_AGE <= occurred <= uow.now + MAX_SKEW:
        raise InvalidArgument(
            Reason.INVALID_ARGUMENT, "at most 30 days in the past, not in the future", field="occur_time"
        )
    event_id = uuid.uuid4().hex
    uow.concerns(activity.customer_id)
    uow.record(
        events_pb2.ActivityRecorded(
            event_id=event_id,
            customer_id=activity.customer_id,
            activity_type=activity.event_type,
            occur_time=timestamp(occurred),
            properties=activity.properties,
        ),
        key=activity.customer_id,
    )
    return event_id
