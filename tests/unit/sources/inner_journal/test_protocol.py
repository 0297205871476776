from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.fields import encode_field
from bridge.sources.inner_journal import protocol
from bridge.sources.inner_journal.fields import MAX_INNER_FIELD_BYTES, map_entry
from bridge.sources.inner_journal.position import Gap, InnerPosition
from bridge.sources.inner_journal.protocol import (
    FrameReader,
    InnerGap,
    ProtocolError,
    decode_entry,
    decode_gap,
    decode_native,
    encode_entry,
    encode_gap,
    max_frame_bytes,
)

CURSOR = (
    "s=699699a162ff478aae8f7278f2247e1c;i=33;b=23c38030e34c43a2966f07e9586574dd;"
    "m=adcf9e08;t=661a2411af43b;x=8b435a543bd1bb1b"
)
MID = "6504787f5ea3415483cafb9ed0d18600"

pairs = st.lists(
    st.tuples(
        st.one_of(
            st.sampled_from(["MESSAGE", "PRIORITY", "_PID", "SYSLOG_IDENTIFIER"]),
            st.text(max_size=70),
        ),
        st.binary(max_size=300),
    ),
    max_size=80,
)


@given(pairs, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.sampled_from(["", MID]))
def test_entries_round_trip(fields, realtime, monotonic, machine_id) -> None:
    mapped = map_entry(fields, realtime_us=realtime, max_message_bytes=200)
    data = encode_entry(mapped, realtime, monotonic, CURSOR, machine_id)
    assert len(data) - 5 <= max_frame_bytes(200)
    frames = FrameReader(200).feed(data)
    assert [kind for kind, _ in frames] == [protocol.ENTRY]
    entry = decode_entry(frames[0][1])
    assert (entry.message, entry.priority, entry.fields) == (
        mapped.message,
        mapped.priority,
        mapped.fields,
    )
    assert (entry.realtime_us, entry.monotonic_us) == (realtime, monotonic)
    assert entry.position == InnerPosition(CURSOR, machine_id)
    assert dict(entry.dropped) == mapped.dropped
    assert entry.boot_id == "23c38030e34c43a2966f07e9586574dd"


def test_the_biggest_entry_fits_the_frame_limit() -> None:
    fields = [(f"F{i}", b"x" * 8000) for i in range(40)] + [("MESSAGE", b"m" * 5000)]
    fields += [(f"S{i}", b"") for i in range(100)]
    mapped = map_entry(fields, realtime_us=2**64 - 1, max_message_bytes=4096)
    assert sum(len(n) + len(v) for n, v in mapped.fields) > MAX_INNER_FIELD_BYTES - 9000
    data = encode_entry(mapped, 2**64 - 1, 2**64 - 1, CURSOR, MID)
    assert len(data) - 5 <= max_frame_bytes(4096)


@given(st.lists(st.binary(min_size=0, max_size=40), max_size=20), st.data())
def test_frames_survive_any_split(payloads, data) -> None:
    stream = b"".join(protocol.frame(protocol.LOG, p) for p in payloads)
    stream += protocol.frame(protocol.HEARTBEAT, b"")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = FrameReader(1 << 20)
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got.extend(reader.feed(stream[start:end]))
    assert got == [(protocol.LOG, p) for p in payloads] + [(protocol.HEARTBEAT, b"")]
    assert reader.pending == 0


def test_unknown_kinds_and_oversized_frames_are_refused() -> None:
    with pytest.raises(ProtocolError):
        FrameReader(100).feed(b"Z\x00\x00\x00\x00")
    with pytest.raises(ProtocolError):
        FrameReader(100).feed(protocol.ENTRY + (max_frame_bytes(100) + 1).to_bytes(4, "little"))
    with pytest.raises(ProtocolError):
        FrameReader(100).feed(protocol.LOG + (1 << 20).to_bytes(4, "little"))


@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_protocol_error(payload) -> None:
    for decode in (decode_entry, decode_gap):
        with contextlib.suppress(ProtocolError):
            decode(payload)


@given(st.binary(max_size=200), st.integers(0, 10000))
def test_a_damaged_entry_raises_protocol_error(noise, at) -> None:
    data = encode_entry(map_entry([("MESSAGE", b"hi"), ("_PID", b"1")], 1), 1, 2, CURSOR, MID)[5:]
    at %= len(data)
    damaged = data[:at] + noise + data[at + len(noise) :]
    with contextlib.suppress(ProtocolError):
        decode_entry(damaged)


def test_gaps_round_trip() -> None:
    gap = Gap("vacuumed", 4, InnerPosition(CURSOR, MID), CURSOR)
    frames = FrameReader(100).feed(encode_gap(gap))
    assert decode_gap(frames[0][1]) == InnerGap(gap)
    for bad in (b"[]", b'{"kind":"x"}', b'{"kind":"reset","lost":-1,"first":"c","saved":{}}'):
        with pytest.raises(ProtocolError):
            decode_gap(bad)


names = st.from_regex(rb"[A-Z][A-Z0-9_]{0,63}", fullmatch=True)


@given(st.lists(st.tuples(names, st.binary(max_size=50)), max_size=30))
def test_native_fields_round_trip(fields) -> None:
    blob = b"".join(encode_field(n, v) for n, v in fields)
    assert decode_native(blob) == tuple(fields)


@given(st.binary(max_size=300))
def test_native_garbage_decodes_or_raises_protocol_error(blob) -> None:
    with contextlib.suppress(ProtocolError):
        decode_native(blob)


def test_native_binary_fields_are_bounded() -> None:
    with pytest.raises(ProtocolError):
        decode_native(b"A\n" + (2**64 - 1).to_bytes(8, "little") + b"x\n")
    with pytest.raises(ProtocolError):
        decode_native(b"A\n\x01")
    with pytest.raises(ProtocolError):
        decode_native(b"A=1")
    assert decode_native(b"A\n" + (3).to_bytes(8, "little") + b"a\nb\nB=\n") == (
        (b"A", b"a\nb"),
        (b"B", b""),
    )
