"""One validator for every request of every service, derived from the message descriptors.

Why not protovalidate: its rules are CEL expressions evaluated per message (too costly for a call
budget of a few hundred microseconds) and its `validate.proto` comes from the Buf registry, which a
build here cannot reach. What every request needs is generic and follows from the descriptors alone;
the few per-field limits live in the contract as `(loyalty.common.v1.rules)` options
(options.proto), so clients read them where they read the field.

Checked, before the handler runs, for every field set in the request (recursively):
- strings: at most `max_length` characters (default 200), no control characters but tab, LF, CR
  (PostgreSQL cannot store NUL; the others corrupt logs and exports); invalid UTF-8 never gets this
  far, the parser refuses it;
- bytes: at most `max_length` bytes; repeated fields and maps: at most `max_items` items (default 100);
- enums: a value the contract defines (proto3 would otherwise accept any number);
- Timestamp and Duration: inside protobuf's documented range;
- FieldMask `update_mask`: each path names a field of the resource beside it (map keys allowed).
What a field means (a UUID, an E.164 phone) stays with the service's decoding and domain.
"""

import re
from collections.abc import Callable
from functools import cache

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from loyalty.common.v1 import options_pb2
from loyalty_runtime.errors import FieldViolation, InvalidArgument, Reason

DEFAULT_MAX_LENGTH = 200
DEFAULT_MAX_ITEMS = 100
MAX_VIOLATIONS = 10
# Unicode's control characters (C0, DEL and C1) but tab, LF and CR.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
PATH_SEGMENT = re.compile(r"[a-z][a-z0-9_]*")
# 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z (google/protobuf/timestamp.proto).
MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799
MAX_DURATION_SECONDS = 315_576_000_000

Check = Callable[[object, str, list[FieldViolation]], None]


def validate(request: Message) -> None:
    """Raise INVALID_ARGUMENT naming every offending field (the first few) of `request`."""
    violations: list[FieldViolation] = []
    _check_message(request, "", violations)
    if violations:
        raise InvalidArgument(Reason.INVALID_ARGUMENT, violations[0].description, violations=violations)


def _check_message(message: Message, prefix: str, violations: list[FieldViolation]) -> None:
    checks = _checks(message.DESCRIPTOR)
    for field, value in message.ListFields():
        check = checks.get(field.number)
        if check is not None and len(violations) < MAX_VIOLATIONS:
            check(value, prefix + field.name, violations)


@cache
def _checks(descriptor: Descriptor) -> dict[int, Check]:
    """Per message type, once: the check of each field that needs one."""
    checks = {}
    for field in descriptor.fields:
        check = _field_check(descriptor, field)
        if check is not None:
            checks[field.number] = check
    return checks


def _rules(field: FieldDescriptor) -> options_pb2.FieldRules:
    return field.GetOptions().Extensions[options_pb2.rules]


def _field_check(owner: Descriptor, field: FieldDescriptor) -> Check | None:
    rules = _rules(field)
    if _is_map(field):
        return _map_check(field, rules)
    one = _single_check(owner, field, rules)
    if not field.is_repeated:
        return one
    max_items = rules.max_items or DEFAULT_MAX_ITEMS

    def check_repeated(values, path, violations):
        if len(values) > max_items:
            violations.append(FieldViolation(path, f"at most {max_items} items"))
            return
        if one is not None:
            for index, value in enumerate(values):
                one(value, f"{path}[{index}]", violations)

    return check_repeated


def _single_check(owner: Descriptor, field: FieldDescriptor, rules: options_pb2.FieldRules) -> Check | None:
    if field.type == FieldDescriptor.TYPE_STRING:
        return _string_check(rules.max_length or DEFAULT_MAX_LENGTH)
    if field.type == FieldDescriptor.TYPE_BYTES:
        limit = rules.max_length or DEFAULT_MAX_LENGTH

        def check_bytes(value, path, violations):
            if len(value) > limit:
                violations.append(FieldViolation(path, f"at most {limit} bytes"))

        return check_bytes
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = frozenset(field.enum_type.values_by_number)

        def check_enum(value, path, violations):
            if value not in known:
                violations.append(FieldViolation(path, f"{value} is not a {field.enum_type.name} value"))

        return check_enum
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        kind = field.message_type.full_name
        if kind == "google.protobuf.FieldMask":
            return _mask_check(owner, field)
        if kind in _RANGES:
            in_range = _RANGES[kind]

            def check_range(value, path, violations):
                in_range(value.seconds, value.nanos, path, violations)

            return check_range

        def check_nested(value, path, violations):
            _check_message(value, path + ".", violations)

        return check_nested
    return None


def _string_check(limit: int) -> Check:
    def check_string(value, path, violations):
        if len(value) > limit:
            violations.append(FieldViolation(path, f"at most {limit} characters"))
        elif CONTROL.search(value):
            violations.append(FieldViolation(path, "control characters are not allowed"))

    return check_string


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and field.is_repeated
        and field.message_type.GetOptions().map_entry
    )


def _map_check(field: FieldDescriptor, rules: options_pb2.FieldRules) -> Check:
    entry = field.message_type
    key_check = _string_check(DEFAULT_MAX_LENGTH)
    value_field = entry.fields_by_name["value"]
    value_check = _single_check(entry, value_field, _rules(value_field))
    max_items = rules.max_items or DEFAULT_MAX_ITEMS

    def check_map(entries, path, violations):
        if len(entries) > max_items:
            violations.append(FieldViolation(path, f"at most {max_items} entries"))
            return
        for key, value in entries.items():
            if not isinstance(key, str):
                continue
            before = len(violations)
            key_check(key, path, violations)
            if len(violations) > before:
                continue  # the key itself is bad: do not echo it into a field path
            if value_check is not None:
                value_check(value, f"{path}[{key}]", violations)

    return check_map


def _mask_check(owner: Descriptor, field: FieldDescriptor) -> Check:
    """Paths of an update mask name fields of the one resource message beside it (AIP-134)."""
    resources = [
        f
        for f in owner.fields
        if f is not field and f.type == FieldDescriptor.TYPE_MESSAGE and not f.is_repeated
    ]
    resource = resources[0].message_type if len(resources) == 1 else None

    def check_mask(mask, path, violations):
        if len(mask.paths) > DEFAULT_MAX_ITEMS:
            violations.append(FieldViolation(path, f"at most {DEFAULT_MAX_ITEMS} paths"))
            return
        for index, mask_path in enumerate(mask.paths):
            if not _resolves(resource, mask_path):
                violations.append(
                    FieldViolation(f"{path}.paths[{index}]", "not a field of the resource being updated")
                )

    return check_mask


def _resolves(resource: Descriptor | None, path: str) -> bool:
    if len(path) > DEFAULT_MAX_LENGTH or CONTROL.search(path):
        return False
    segments = path.split(".")
    if resource is None:  # no single resource beside the mask: only the syntax can be checked
        return all(PATH_SEGMENT.fullmatch(segment) for segment in segments)
    current = resource
    index = 0
    while index < len(segments):
        segment = segments[index]
        if current is None or not PATH_SEGMENT.fullmatch(segment):
            return False
        field = current.fields_by_name.get(segment)
        if field is None:
            return False
        index += 1
        if _is_map(field):
            if index < len(segments):  # a map key, then into the value if it is a message
                if not segments[index] or len(segments[index]) > DEFAULT_MAX_LENGTH:
                    return False
                index += 1
            value = field.message_type.fields_by_name["value"]
            current = value.message_type if value.type == FieldDescriptor.TYPE_MESSAGE else None
            if current is None and index < len(segments):
                return False
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated:
            current = field.message_type
        elif index < len(segments):
            return False
    return True


def _check_timestamp(seconds: int, nanos: int, path: str, violations: list[FieldViolation]) -> None:
    if not (MIN_SECONDS <= seconds <= MAX_SECONDS and 0 <= nanos <= 999_999_999):
        violations.append(FieldViolation(path, "a time between years 1 and 9999"))


def _check_duration(seconds: int, nanos: int, path: str, violations: list[FieldViolation]) -> None:
    same_sign = seconds == 0 or nanos == 0 or (seconds > 0) == (nanos > 0)
    if not (abs(seconds) <= MAX_DURATION_SECONDS and abs(nanos) <= 999_999_999 and same_sign):
        violations.append(FieldViolation(path, "a duration within ±10,000 years"))


_RANGES = {"google.protobuf.Timestamp": _check_timestamp, "google.protobuf.Duration": _check_duration}
