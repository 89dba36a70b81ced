"""What the servicer decodes requests into and the use cases answer (no protobuf beyond the rule)."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from loyalty.segmentation.v1 import condition_pb2


@dataclass(frozen=True)
class CreateSegment:
    display_name: str
    description: str
    static: bool
    rule: condition_pb2.Condition | None
    labels: dict[str, str]


@dataclass(frozen=True)
class UpdateSegment:
    segment_id: uuid.UUID
    fields: frozenset[str]
    display_name: str
    description: str
    rule: condition_pb2.Condition | None
    labels: dict[str, str]
    etag: str


@dataclass(frozen=True)
class DeleteSegment:
    segment_id: uuid.UUID
    etag: str


@dataclass(frozen=True)
class ChangeMembers:
    segment_id: uuid.UUID
    customer_ids: list[str]


@dataclass(frozen=True)
class MembersChanged:
    count: int
    unknown_customer_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RecordPurchase:
    key: str
    customer_id: str
    purchased_at: datetime
    net_total: int
    currency_code: str
    # The basket's categories (each line's most general one), for the categories-bought metric.
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordReturn:
    key: str
    customer_id: str
    checkout_id: str
    returned_at: datetime
    refunded_total: int


@dataclass(frozen=True)
class RecordActivity:
    key: str
    customer_id: str
    activity_type: str
    occurred_at: datetime


@dataclass(frozen=True)
class Upload:
    segment_id: uuid.UUID
    content: bytes


@dataclass(frozen=True)
class Uploaded:
    added: int
    already_members: int
    # (row number, customer id, reason)
    problems: list[tuple[int, str, str]]


@dataclass(frozen=True)
class Estimate:
    rule: condition_pb2.Condition
    sample_size: int


@dataclass(frozen=True)
class Estimated:
    matching: int
    total: int
    sample: list[str]


@dataclass(frozen=True)
class UpdateSettings:
    time_zone: str
    etag: str
