"""Conversions between Python values and protobuf well-known types, shared by every servicer."""

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(moment: datetime | None) -> Timestamp | None:
    """A Timestamp for `moment`; None (field left unset) when there is none."""
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
