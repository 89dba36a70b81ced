"""Conversions between Python values and protobuf well-known types, shared by every servicer."""

from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(moment: datetime | None) -> Timestamp | None:
    """A Timestamp for an aware `moment`; None (field left unset) when there is none. (Built from
    its POSIX time: Timestamp.FromDatetime costs several times as much on every answer.)"""
    if moment is None:
        return None
    since = moment - EPOCH  # exact integer arithmetic, unlike the float of moment.timestamp()
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def moment(message: Message, field: str) -> datetime | None:
    """The aware datetime of a Timestamp field, or None when the request left it unset. The validator
    has already checked the range."""
    if not message.HasField(field):
        return None
    return getattr(message, field).ToDatetime(tzinfo=UTC)
