"""Conversions between Python values and protobuf well-known types, shared by every servicer."""

from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(moment: datetime | None) -> Timestamp | None:
    """A Timestamp for `moment`; None (field left unset) when there is none."""
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def moment(message: Message, field: str) -> datetime | None:
    """The aware datetime of a Timestamp field, or None when the request left it unset. The validator
    has already checked the range."""
    if not message.HasField(field):
        return None
    return getattr(message, field).ToDatetime(tzinfo=UTC)
