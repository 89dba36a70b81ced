"""The one request validator: what it refuses, with which field, and that it accepts the rest."""

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, strategies as st

from loyalty.common.v1 import customer_pb2, options_pb2
from loyalty.ledger.v1 import ledger_service_pb2 as ledger
from loyalty.profile.v1 import profile_pb2, profile_service_pb2 as profile
from loyalty.testing.v1 import echo_pb2
from loyalty_runtime.errors import InvalidArgument
from loyalty_runtime.validation import DEFAULT_MAX_ITEMS, DEFAULT_MAX_LENGTH, validate


def refused_fields(request) -> list[str]:
    with pytest.raises(InvalidArgument) as raised:
        validate(request)
    return [v.field for v in raised.value.violations]


def limit(message_type, field: str) -> int:
    rules = message_type.DESCRIPTOR.fields_by_name[field].GetOptions().Extensions[options_pb2.rules]
    return rules.max_length or DEFAULT_MAX_LENGTH


def test_a_plain_request_passes():
    validate(echo_pb2.EchoRequest(text="héllo wörld\ttab\nline", time=Timestamp(seconds=1_700_000_000)))


@pytest.mark.parametrize("bad", ["\x00", "a\x01b", "\x1b[31m", "x\x7f"])
def test_control_characters_are_refused(bad):
    assert refused_fields(echo_pb2.EchoRequest(text=bad)) == ["text"]


def test_strings_longer_than_their_limit_are_refused_and_the_limit_itself_passes():
    validate(echo_pb2.EchoRequest(text="x" * DEFAULT_MAX_LENGTH))
    assert refused_fields(echo_pb2.EchoRequest(text="x" * (DEFAULT_MAX_LENGTH + 1))) == ["text"]


def test_nested_and_repeated_fields_are_named_by_their_path():
    value_limit = limit(customer_pb2.Identifier, "value")
    request = profile.EnrolCustomerRequest(
        identifiers=[
            customer_pb2.Identifier(type=customer_pb2.IDENTIFIER_TYPE_EMAIL, value="fine@example.com"),
            customer_pb2.Identifier(type=customer_pb2.IDENTIFIER_TYPE_EMAIL, value="y" * (value_limit + 1)),
        ]
    )
    assert refused_fields(request) == ["identifiers[1].value"]


def test_too_many_items_are_refused():
    rules = (
        profile.EnrolCustomerRequest.DESCRIPTOR.fields_by_name["consents"]
        .GetOptions()
        .Extensions[options_pb2.rules]
    )
    most = rules.max_items or DEFAULT_MAX_ITEMS
    request = profile.EnrolCustomerRequest(consents=[profile_pb2.Consent() for _ in range(most + 1)])
    assert refused_fields(request) == ["consents"]


def test_enum_values_the_contract_does_not_define_are_refused():
    request = profile.CheckConsentRequest(channel=99)
    assert refused_fields(request) == ["channel"]
    validate(profile.CheckConsentRequest(channel=profile_pb2.CONSENT_CHANNEL_SMS))


def test_map_keys_and_values_are_checked_without_echoing_a_bad_key():
    good = profile.EnrolCustomerRequest(attributes={"tier": profile_pb2.AttributeValue(string_value="a\x00")})
    assert refused_fields(good) == ["attributes[tier].string_value"]
    bad_key = profile.EnrolCustomerRequest(attributes={"k\x00": profile_pb2.AttributeValue(string_value="a")})
    assert refused_fields(bad_key) == ["attributes"]


@pytest.mark.parametrize("seconds", [-62_135_596_801, 253_402_300_800])
def test_timestamps_outside_protobufs_range_are_refused(seconds):
    assert refused_fields(echo_pb2.EchoRequest(time=Timestamp(seconds=seconds))) == ["time"]


def test_timestamps_at_the_ends_of_the_range_pass():
    validate(echo_pb2.EchoRequest(time=Timestamp(seconds=-62_135_596_800)))
    validate(echo_pb2.EchoRequest(time=Timestamp(seconds=253_402_300_799, nanos=999_999_999)))


@pytest.mark.parametrize(
    "ttl", [Duration(seconds=315_576_000_001), Duration(seconds=1, nanos=-1), Duration(nanos=1_000_000_000)]
)
def test_durations_outside_the_range_or_with_mixed_signs_are_refused(ttl):
    assert refused_fields(ledger.HoldPointsRequest(ttl=ttl)) == ["ttl"]


@pytest.mark.parametrize(
    "path", ["given_name.", "attributes.a.b.c", "nope", "given_name.x", "", "Given_Name", "a..b"]
)
def test_update_mask_paths_must_name_a_field_of_the_resource(path):
    request = profile.UpdateCustomerRequest(update_mask=FieldMask(paths=[path]))
    assert refused_fields(request) == ["update_mask.paths[0]"]


@pytest.mark.parametrize(
    "path", ["given_name", "attributes", "attributes.favourite_store", "birth_date.year"]
)
def test_update_mask_paths_of_the_resource_pass(path):
    validate(profile.UpdateCustomerRequest(update_mask=FieldMask(paths=[path])))


@given(st.text(max_size=300))
def test_any_text_is_either_accepted_or_refused_with_the_field(text):
    try:
        validate(echo_pb2.EchoRequest(text=text))
    except InvalidArgument as error:
        assert [v.field for v in error.violations] == ["text"]
