"""The runtime's protobuf and paging helpers agree with the library on every value."""

from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, strategies as st

from loyalty_runtime.errors import InvalidArgument
from loyalty_runtime.paging import decode_token, encode_token, page_size
from loyalty_runtime.protobuf import timestamp


@given(st.datetimes(timezones=st.timezones()))
def test_timestamps_equal_what_protobuf_itself_makes(moment):
    expected = Timestamp()
    expected.FromDatetime(moment)
    assert timestamp(moment) == expected


def test_timestamps_at_the_ends_of_time():
    for moment in (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)):
        expected = Timestamp()
        expected.FromDatetime(moment)
        assert timestamp(moment) == expected
    assert timestamp(None) is None


@given(st.text())
def test_page_tokens_round_trip(key):
    assert decode_token(encode_token(key)) == key


@pytest.mark.parametrize("token", ["%%%", "abc", "a b=", "\u00e9t\u00e9", "__8="])
def test_page_tokens_not_issued_here_are_refused(token):
    with pytest.raises(InvalidArgument) as raised:
        decode_token(token)
    assert raised.value.violations[0].field == "page_token"


def test_page_sizes():
    assert page_size(0, default=20, maximum=100) == 20
    assert page_size(500, default=20, maximum=100) == 100
    with pytest.raises(InvalidArgument):
        page_size(-1, default=20, maximum=100)
