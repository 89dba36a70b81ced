"""Garbage requests for any RPC, derived from its descriptor, and a way to see whether a call wrote
anything: what tests/service/test_garbage_in.py drives every mutating RPC of every built service with.

`mutations(valid)` keeps a valid request but replaces one field (at any depth) with a hostile value of
its type, so the garbage gets past decoding into every layer; `garbage(descriptor)` builds requests
from scratch; `corrupt(bytes)` flips bytes of a serialised request (invalid UTF-8, bad lengths)."""

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

NASTY_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\x00b",
            "\r\nx-injected: 1",
            "\x1b[2J",
            "'; DROP TABLE accounts; --",
            "%s%n%x",
            "../../etc/passwd",
            "\u202e\u200b\ufeff",
            "😀" * 70,
            "x" * 201,
            "y" * 65,
            "z" * 5000,
            "00000000-0000-0000-0000-000000000000",
            "not-a-uuid",
            "NaN",
            "-1",
            "1e309",
        ]
    ),
)
INT_LIMITS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(low: int, high: int):
    edges = [low, high, 0, -1, 1, 2**31 - 1, 2**53, 10**15, 10**15 + 1]
    return st.one_of(st.sampled_from([e for e in edges if low <= e <= high]), st.integers(low, high))


def scalar(field: FieldDescriptor):
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return NASTY_TEXT
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=300)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        return _integers(-3, 40)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(
            allow_nan=True, allow_infinity=True, width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64
        )
    return _integers(*INT_LIMITS[kind])


def garbage(descriptor: Descriptor, depth: int = 3):
    """Requests of this type with hostile values in arbitrary fields."""
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.Timestamp":
        return st.builds(cls, seconds=_integers(-(2**40), 2**40), nanos=_integers(-(2**31), 2**31 - 1))
    if descriptor.full_name == "google.protobuf.Duration":
        return st.builds(cls, seconds=_integers(-(2**40), 2**40), nanos=_integers(-(2**31), 2**31 - 1))
    if descriptor.full_name == "google.protobuf.FieldMask":
        paths = st.one_of(
            NASTY_TEXT, st.sampled_from(["given_name", "given_name.", "attributes.a.b.c", "a..b"])
        )
        return st.builds(cls, paths=st.lists(paths, max_size=3))

    @st.composite
    def build(draw):
        message = cls()
        for field in descriptor.fields:
            if draw(st.booleans()):
                _set(message, field, draw(_values(field, depth)))
        return message

    return build()


def _values(field: FieldDescriptor, depth: int):
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            return st.dictionaries(NASTY_TEXT, _one(value_field, depth - 1), max_size=3)
        one = (
            garbage(field.message_type, depth - 1)
            if depth > 0
            else st.just(message_factory.GetMessageClass(field.message_type)())
        )
    else:
        one = scalar(field)
    if field.is_repeated:
        return st.one_of(st.lists(one, max_size=3), st.lists(one, min_size=101, max_size=102))
    return one


def _one(field: FieldDescriptor, depth: int):
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return garbage(field.message_type, max(depth, 0))
    return scalar(field)


def _set(message: Message, field: FieldDescriptor, value) -> None:
    target = getattr(message, field.name)
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
        for key, item in value.items():
            if isinstance(item, Message):
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        target.extend(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _paths(
    descriptor: Descriptor, prefix: tuple[str, ...] = (), depth: int = 3
) -> list[tuple[tuple[str, ...], FieldDescriptor]]:
    found = []
    for field in descriptor.fields:
        path = (*prefix, field.name)
        found.append((path, field))
        nested = field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated
        if nested and depth > 0 and not field.message_type.full_name.startswith("google.protobuf"):
            found += _paths(field.message_type, path, depth - 1)
    return found


def mutations(valid: Message):
    """`valid` with one field, anywhere in it, replaced by a hostile value of that field's type."""
    paths = _paths(valid.DESCRIPTOR)

    @st.composite
    def mutate(draw):
        path, field = draw(st.sampled_from(paths))
        message = type(valid)()
        message.CopyFrom(valid)
        owner = message
        for name in path[:-1]:
            owner = getattr(owner, name)
        owner.ClearField(field.name)
        _set(owner, field, draw(_values(field, 2)))
        return message

    return mutate()


@st.composite
def corrupt(draw, serialised: bytes):
    """The bytes of a request with a few bytes replaced, cut short or extended."""
    data = bytearray(serialised or b"\x0a\x00")
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


async def snapshot(connection, schema: str) -> list[tuple]:
    """Row count and newest row version of every table of `schema`: a call that wrote, changed or
    deleted anything changes it."""
    tables = await connection.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename <> 'alembic_version' ORDER BY 1",
        schema,
    )
    if not tables:
        return []
    query = " UNION ALL ".join(
        f"SELECT '{t['tablename']}', count(*), coalesce(max(xmin::text::bigint), 0) FROM {schema}.{t['tablename']}"
        for t in tables
    )
    return [tuple(row) for row in await connection.fetch(query)]
