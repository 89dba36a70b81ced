"""Error reasons are the contract's ErrorReason values, and every proto <-> domain enum codec
round-trips exactly."""

import enum
import importlib
import re
from pathlib import Path

import pytest

from loyalty.common.v1 import errors_pb2
from loyalty.ledger.v1 import ledger_pb2
from loyalty_runtime.catalogue import SERVICES
from loyalty_runtime.enums import CODECS, EnumCodec
from loyalty_runtime.errors import InvalidArgument, NotFound, Reason

ROOT = Path(__file__).resolve().parents[3]
SOURCES = [*ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py")]
ERRORS = "InvalidArgument|NotFound|AlreadyExists|FailedPrecondition|Aborted|PermissionDenied|Unauthenticated|DeadlineExceeded|Unimplemented|Unavailable|ResourceExhausted|DomainError"


def test_every_reason_raised_in_the_code_is_defined_in_errors_proto():
    defined = {
        v.name.removeprefix("ERROR_REASON_")
        for v in errors_pb2.DESCRIPTOR.enum_types_by_name["ErrorReason"].values
    }
    used = {name for path in SOURCES for name in re.findall(r"\bReason\.([A-Z][A-Z0-9_]*)", path.read_text())}
    assert used, "the scan found no reasons at all"
    assert used <= defined, sorted(used - defined)


def test_no_error_is_raised_with_a_free_string_reason():
    pattern = re.compile(rf"\b(?:{ERRORS})\(\s*[\"']")
    offenders = [f"{p.relative_to(ROOT)}" for p in SOURCES if pattern.search(p.read_text())]
    assert offenders == []
    with pytest.raises(TypeError):
        NotFound("CUSTOMER_NOT_FOUND")


def test_reason_names_are_the_contracts_without_the_prefix():
    assert Reason.CUSTOMER_NOT_FOUND == errors_pb2.ERROR_REASON_CUSTOMER_NOT_FOUND
    assert Reason.CUSTOMER_NOT_FOUND.name == "CUSTOMER_NOT_FOUND"


def import_every_service() -> None:
    for entry in SERVICES:
        for module in ("service", "servicer"):
            try:
                importlib.import_module(f"{entry.package}.{module}")
            except ModuleNotFoundError as missing:
                if missing.name != f"{entry.package}.{module}":
                    raise


def test_every_codec_round_trips_every_value():
    import_every_service()
    assert CODECS, "no service declares an enum codec"
    for codec in CODECS:
        for member in codec.domain:
            assert codec.decode(codec.encode(member), "f") is member
        for value in codec.proto.DESCRIPTOR.values:
            if value.number == 0:
                with pytest.raises(InvalidArgument):
                    codec.decode(0, "f")
            else:
                assert codec.encode(codec.decode(value.number, "f")) == value.number
        with pytest.raises(InvalidArgument):
            codec.decode(max(v.number for v in codec.proto.DESCRIPTOR.values) + 1, "f")


def test_a_codec_whose_sides_differ_is_refused_at_import():
    class TooFew(enum.Enum):
        ACTIVE = "a"

    class TooMany(enum.Enum):
        ACTIVE = "a"
        CAPTURED = "c"
        RELEASED = "r"
        EXPIRED = "e"
        FORGOTTEN = "f"

    for domain in (TooFew, TooMany):
        with pytest.raises(TypeError):
            EnumCodec(ledger_pb2.HoldState, domain)
