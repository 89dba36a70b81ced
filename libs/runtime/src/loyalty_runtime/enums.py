"""One codec between a protobuf enum and the domain's Python enum, matched by name.

`EnumCodec(pb.HoldState, HoldState)` pairs HOLD_STATE_ACTIVE with HoldState.ACTIVE, and so on. It
refuses to build unless the two sides match exactly (every domain member has a contract value and
every contract value but UNSPECIFIED has a member), so adding a value on one side only fails at
import, and `tests/unit/runtime` round-trips every codec the services declare.
"""

import enum
from typing import Generic, TypeVar

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from loyalty_runtime.errors import InvalidArgument, Reason

E = TypeVar("E", bound=enum.Enum)

CODECS: list["EnumCodec"] = []


def _prefix(proto: EnumTypeWrapper) -> str:
    name = proto.DESCRIPTOR.name
    return "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(name)).upper() + "_"


class EnumCodec(Generic[E]):
    def __init__(self, proto: EnumTypeWrapper, domain: type[E]) -> None:
        prefix = _prefix(proto)
        unspecified = f"{prefix}UNSPECIFIED"
        by_name = {member.name: member for member in domain}
        self.proto = proto
        self.domain = domain
        self._decode: dict[int, E] = {}
        for value in proto.DESCRIPTOR.values:
            if value.name == unspecified:
                continue
            member = by_name.get(value.name.removeprefix(prefix))
            if member is None:
                raise TypeError(f"{domain.__name__} has no member for {value.name}")
            self._decode[value.number] = member
        self._encode: dict[E, int] = {member: number for number, member in self._decode.items()}
        missing = [m.name for m in domain if m not in self._encode]
        if missing:
            raise TypeError(f"{proto.DESCRIPTOR.full_name} has no value for {domain.__name__}.{missing}")
        CODECS.append(self)

    def decode(self, number: int, field: str) -> E:
        """The member for a request's value; UNSPECIFIED (or unknown) is refused as missing."""
        member = self._decode.get(number)
        if member is None:
            raise InvalidArgument(Reason.INVALID_ARGUMENT, f"{field} is required", field=field)
        return member

    def decode_or(self, number: int, default: E | None) -> E | None:
        """The member, or `default` when the request left the field UNSPECIFIED."""
        return default if number == 0 else self.decode(number, "value")

    def encode(self, member: E) -> int:
        return self._encode[member]
