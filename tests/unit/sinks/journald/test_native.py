from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.record import PartialMark, Record
from bridge.sinks.journald.native import encode_field, encode_record, parse_cursor_field


def decode(datagram: bytes) -> list[tuple[bytes, bytes]]:
    """journald's parser for the native protocol (journald-native.c), for checking."""
    fields, pos = [], 0
    while pos < len(datagram):
        end = datagram.index(b"\n", pos)
        line = datagram[pos:end]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            pos = end + 1
        else:
            name = line
            size = int.from_bytes(datagram[end + 1 : end + 9], "little")
            value = datagram[end + 9 : end + 9 + size]
            assert datagram[end + 9 + size : end + 10 + size] == b"\n"
            pos = end + 10 + size
        fields.append((name, value))
    return fields


@given(st.binary(max_size=300))
def test_any_message_bytes_survive_encoding(message):
    assert decode(encode_field(b"MESSAGE", message)) == [(b"MESSAGE", message)]


TS = b"2026-11-28T00:13:57.123456789Z"


def test_record_fields():
    record = Record(2, b"line\nwith newline", TS, (5, 1), (5, 1))
    fields = dict(decode(encode_record(record, b"CONTAINER_NAME=web\n")))
    assert fields == {
        b"MESSAGE": b"line\nwith newline",
        b"PRIORITY": b"3",
        b"SYSLOG_TIMESTAMP": TS,
        b"CONTAINER_STREAM": b"stderr",
        b"CONTAINER_NAME": b"web",
    }


def test_partial_and_cursor_fields():
    record = Record(1, b"x", TS, (5, 1), (5, 3), PartialMark("p1", 2, False), priority=4)
    fields = dict(decode(encode_record(record, b"")))
    assert fields[b"PRIORITY"] == b"4"
    assert fields[b"CONTAINER_PARTIAL_MESSAGE"] == b"true"
    assert (fields[b"CONTAINER_PARTIAL_ID"], fields[b"CONTAINER_PARTIAL_ORDINAL"]) == (b"p1", b"2")
    assert fields[b"CONTAINER_PARTIAL_LAST"] == b"false"
    assert parse_cursor_field(fields[b"JOURNALD_BRIDGE_CURSOR"]) == (5, 3)


records_st = st.builds(
    Record,
    stream=st.sampled_from([1, 2]),
    message=st.binary(max_size=60),
    timestamp=st.just(TS),
    first=st.tuples(st.integers(1, 3), st.integers(1, 2)),
    last=st.tuples(st.integers(1, 3), st.integers(1, 2)),
    partial=st.none() | st.builds(PartialMark, st.just("p"), st.integers(1, 3), st.booleans()),
    priority=st.none() | st.integers(0, 7),
    extra_fields=st.lists(
        st.tuples(st.sampled_from([b"USER", b"LEVEL"]), st.binary(max_size=10)), max_size=2
    ).map(tuple),
)


@given(records_st)
def test_every_record_encodes_to_the_fields_it_holds(record):
    """The one-join shortcut for common entries and the general path agree field by field."""
    fields = decode(encode_record(record, b"CONTAINER_NAME=web\n"))
    names = [name for name, _ in fields]
    assert fields[0] == (b"MESSAGE", record.message)
    priority = record.priority if record.priority is not None else (3 if record.stream == 2 else 6)
    assert (b"PRIORITY", b"%d" % priority) in fields
    assert (b"SYSLOG_TIMESTAMP", TS) in fields
    assert (b"CONTAINER_NAME", b"web") in fields
    exact = record.first == record.last and record.first[1] == 1
    assert (b"JOURNALD_BRIDGE_CURSOR" in names) is not exact
    assert (b"CONTAINER_PARTIAL_ID" in names) is (record.partial is not None)
    for pair in record.extra_fields:
        assert pair in fields


def test_an_entry_inside_a_clock_steps_window_carries_its_whole_position():
    window = (100, 1, 1, 40, 2)
    record = Record(1, b"x", TS, window, window)
    fields = dict(decode(encode_record(record, b"")))
    assert fields[b"JOURNALD_BRIDGE_CURSOR"] == b"100:1:1:40:2"
    assert parse_cursor_field(fields[b"JOURNALD_BRIDGE_CURSOR"]) == window
    plain = Record(1, b"x", TS, (100, 1), (100, 1))
    assert b"JOURNALD_BRIDGE_CURSOR" not in dict(decode(encode_record(plain, b"")))


@given(st.text(max_size=40) | st.binary(max_size=40))
def test_a_cursor_field_parses_to_a_position_or_raises_value_error(value):
    try:
        position = parse_cursor_field(value)
    except (ValueError, UnicodeDecodeError):
        return
    assert len(position) in (2, 5)
    assert parse_cursor_field(b":".join(b"%d" % n for n in position)) == position
