"""How a service that keeps customer data takes part in GDPR export, erasure and merges.

(Declarations only here; see the module that wires them.)
"""

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CustomerData:
    """`export(uow, customer_id)` returns the service's records about the customer (protobuf
    messages); `erase(uow, customer_id)` forgets their personal data; `merge(uow, survivor_id,
    merged_id)` moves a duplicate's data to the survivor. The profile service, where erasure and
    merges start, has neither."""

    export: Callable[..., Awaitable[Sequence[object]]]
    erase: Callable[..., Awaitable[None]] | None = None
    merge: Callable[..., Awaitable[None]] | None = None
