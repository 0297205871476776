from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.timestamps import (
    TimestampParser,
    format_rfc3339_nano,
    format_since,
    parse_general,
)


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
    st.integers(min_value=0, max_value=999_999_999),
)
def test_docker_timestamps_parse_to_exact_nanoseconds(moment, nanos):
    moment = moment.replace(microsecond=0, tzinfo=UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S").encode() + b".%09dZ" % nanos
    expected = int(moment.timestamp()) * 1_000_000_000 + nanos
    parser = TimestampParser()
    assert parser.parse(text) == expected
    assert parser.parse(text) == expected  # cached second
    assert parse_general(text) == expected


def test_general_form_with_zone_and_short_fraction():
    base = parse_general(b"2026-11-28T00:00:00Z")
    assert parse_general(b"2026-11-28T01:00:00.5+01:00") == base + 500_000_000
    moment = datetime(2026, 11, 28, tzinfo=UTC) - timedelta(hours=1)
    assert parse_general(b"2026-11-27T23:00:00Z") == int(moment.timestamp()) * 10**9


@pytest.mark.parametrize(
    "bad", [b"", b"yesterday", b"2026-13-01T00:00:00Z", b"2026-11-28T00:00:00.123"]
)
def test_garbage_is_a_value_error(bad):
    with pytest.raises(ValueError):
        TimestampParser().parse(bad)


@given(st.integers(min_value=0, max_value=2**62))
def test_since_round_trips(ns):
    seconds, _, nanos = format_since(ns).partition(".")
    assert int(seconds) * 10**9 + int(nanos) == ns
    assert len(nanos) == 9


@given(st.integers(0, 253_402_300_799 * 10**9 + 999_999_999))
def test_rfc3339_nano_is_read_back_to_the_nanosecond(ns: int) -> None:
    text = format_rfc3339_nano(ns)
    assert len(text) == 30 and parse_general(text.encode()) == ns
