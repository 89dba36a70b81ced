"""Requests built from protobuf descriptors for fuzz tests: every string field of a request type
(nested, repeated and map fields included), random garbage, and valid requests mutated a little."""

import random
import uuid
from collections.abc import Callable, Iterator, Sequence

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from loyalty.common.v1 import options_pb2

DEFAULT_MAX_LENGTH = 200


def max_length(field: FieldDescriptor) -> int:
    return field.GetOptions().Extensions[options_pb2.rules].max_length or DEFAULT_MAX_LENGTH


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


# A string field, where the validator names it, and how to set it on a fresh request.
StringField = tuple[str, FieldDescriptor, Callable[[Message, str], None]]


def string_fields(descriptor: Descriptor, depth: int = 3) -> Iterator[StringField]:
    """Every string field reachable from `descriptor` (one element of each repeated field, one
    entry of each map), with the setter that fills it in a request of that type."""
    if depth == 0:
        return
    for field in descriptor.fields:
        name = field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            if field.is_repeated:
                yield f"{name}[0]", field, lambda m, v, n=name: getattr(m, n).append(v)
            else:
                yield name, field, lambda m, v, n=name: setattr(m, n, v)
        elif _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            yield name, field, lambda m, v, n=name: getattr(m, n)[v].SetInParent()
            for path, inner, setter in string_fields(value_field.message_type, depth - 1):
                yield (
                    f"{name}[k].{path}",
                    inner,
                    lambda m, v, n=name, s=setter: s(getattr(m, n)["k"], v),
                )
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for path, inner, setter in string_fields(field.message_type, depth - 1):
                if field.is_repeated:
                    yield f"{name}[0].{path}", inner, lambda m, v, n=name, s=setter: s(getattr(m, n).add(), v)
                else:
                    yield f"{name}.{path}", inner, lambda m, v, n=name, s=setter: s(getattr(m, n), v)


class Garbage:
    """Random requests: strings with control characters, over-long strings, numbers at the edges,
    enum numbers the contract does not define, nested and repeated fields, random map keys."""

    ALPHABET = "aZ09 _-.@+:/\t\n\r\x00\x01\x1b\x7f\x85\x9b\u00e9\u200b\u202e\U0001f600"
    INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]

    def __init__(self, seed: int, known: Sequence[str] = (), map_keys: Sequence[str] = ()) -> None:
        self.random = random.Random(seed)
        # Values that mean something to the service (ids that exist, field names, identifiers).
        self.known = list(known)
        # Map keys the service knows (attribute names, say), besides random ones.
        self.map_keys = list(map_keys)

    def string(self) -> str:
        roll = self.random.random()
        if roll < 0.15 and self.known:
            return self.random.choice(self.known)
        if roll < 0.2:
            return str(uuid.UUID(int=self.random.getrandbits(128)))
        if roll < 0.3:
            return "x" * self.random.choice([199, 200, 201, 320, 321, 1001, 5000])
        length = self.random.choice([0, 1, 2, 5, 12, 40])
        return "".join(self.random.choice(self.ALPHABET) for _ in range(length))

    def scalar(self, field: FieldDescriptor):
        kind = field.type
        if kind == FieldDescriptor.TYPE_STRING:
            return self.string()
        if kind == FieldDescriptor.TYPE_BYTES:
            return self.random.choice(
                [b"", b"\x00\xff", "é,\n".encode(), self.string().encode("utf-8", "surrogatepass")]
            )
        if kind == FieldDescriptor.TYPE_BOOL:
            return self.random.random() < 0.5
        if kind == FieldDescriptor.TYPE_ENUM:
            return self.random.choice([*field.enum_type.values_by_number, 99, -1])
        if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
            return self.random.choice([*self.INTS[:5], 2, 12, 29, 31, 1990, 9999, 10000])
        if kind == FieldDescriptor.TYPE_UINT32:
            return self.random.choice([0, 1, 2**32 - 1])
        return self.random.choice(self.INTS)

    def fill(self, message: Message, depth: int = 3) -> Message:
        for field in message.DESCRIPTOR.fields:
            if self.random.random() < 0.3:
                continue
            if message.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
                message.seconds = self.random.choice([0, 1_700_000_000, 253_402_300_800, -62_135_596_801])
                message.nanos = self.random.choice([0, 999_999_999, 1_000_000_000, -1])
                return message
            self._fill_field(message, field, depth)
        return message

    def _fill_field(self, message: Message, field: FieldDescriptor, depth: int) -> None:
        value = getattr(message, field.name)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            for _ in range(self.random.randint(0, 3)):
                entry_key = self.random.choice([*self.map_keys, self.string()])
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    if depth > 1:
                        self.fill(value[entry_key], depth - 1)
                else:
                    value[entry_key] = self.scalar(value_field)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth <= 1:
                return
            if field.is_repeated:
                for _ in range(self.random.randint(0, 3)):
                    self.fill(value.add(), depth - 1)
            else:
                self.fill(value, depth - 1)
                value.SetInParent()
        elif field.is_repeated:
            value.extend(self.scalar(field) for _ in range(self.random.randint(0, 3)))
        elif field.containing_oneof is None or self.random.random() < 0.5:
            setattr(message, field.name, self.scalar(field))


class Mutator(Garbage):
    """A valid request with a few mutations: an element of a repeated field given twice, a value
    respelled, cleared, replaced by an edge value or garbage, a map entry added."""

    def mutate(self, request: Message, times: int) -> Message:
        for _ in range(times):
            slots = list(self._slots(request))
            if not slots:
                break
            message, field = self.random.choice(slots)
            self._mutate(message, field)
        return request

    def _slots(self, message: Message) -> Iterator[tuple[Message, FieldDescriptor]]:
        for field in message.DESCRIPTOR.fields:
            yield message, field
            value = getattr(message, field.name)
            if _is_map(field):
                if field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                    for entry in value.values():
                        yield from self._slots(entry)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                if field.is_repeated:
                    for element in value:
                        yield from self._slots(element)
                elif message.HasField(field.name):
                    yield from self._slots(value)

    def _mutate(self, message: Message, field: FieldDescriptor) -> None:
        value = getattr(message, field.name)
        roll = self.random.random()
        if roll < 0.15:
            message.ClearField(field.name)
        elif _is_map(field):
            entries = list(value.values())
            keys = [*self.map_keys, *(k.capitalize() for k in self.map_keys), "unknown"]
            entry_key = self.random.choice([*keys, self.string()])
            if field.message_type.fields_by_name["value"].type != FieldDescriptor.TYPE_MESSAGE:
                value[entry_key] = self.scalar(field.message_type.fields_by_name["value"])
            elif entries and self.random.random() < 0.6:
                value[entry_key].CopyFrom(self.random.choice(entries))
            else:
                self.fill(value[entry_key], 2)
        elif field.is_repeated and len(value) and roll < 0.6:
            value.append(value[self.random.randrange(len(value))])  # the same element twice
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            target = value.add() if field.is_repeated else value
            self.fill(target, 2)
            if not field.is_repeated:
                value.SetInParent()
        elif field.is_repeated:
            value.append(self.scalar(field))
        else:
            setattr(
                message, field.name, self._respelled(value) if isinstance(value, str) else self.scalar(field)
            )

    def _respelled(self, value: str) -> str:
        return self.random.choice(
            [value.upper(), value.lower(), f" {value} ", value * 2, value[:-1], f"{value}.", self.string()]
        )
