from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.record import STDERR, STDOUT
from bridge.sources.api.frames import (
    DOCKER_PIECE_BYTES,
    SYSTEM_ERROR,
    ChunkedDecoder,
    FrameParser,
    RawStreamParser,
    StreamFormatError,
)

frames_st = st.lists(
    st.tuples(st.sampled_from([STDOUT, STDERR, SYSTEM_ERROR]), st.binary(max_size=300)), max_size=30
)


def encode_frames(frames: list[tuple[int, bytes]]) -> bytes:
    return b"".join(bytes([s, 0, 0, 0]) + len(p).to_bytes(4, "big") + p for s, p in frames)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


@given(frames_st, st.lists(st.integers(min_value=0), max_size=20))
def test_any_frames_split_into_any_chunks_parse_to_the_same_messages(frames, cuts):
    parser = FrameParser()
    out = []
    for chunk in split_at(encode_frames(frames), cuts):
        out.extend(parser.feed(chunk))
    assert out == frames
    assert parser.pending_bytes == 0


def test_bad_frame_header_is_a_stream_error():
    with pytest.raises(StreamFormatError, match="bad frame header"):
        FrameParser().feed(b"\x07\x00\x00\x00\x00\x00\x00\x01x")


def chunked(body_parts: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in body_parts if p) + b"0\r\n\r\n"


@given(
    st.lists(st.binary(min_size=1, max_size=200), max_size=20),
    st.lists(st.integers(min_value=0), max_size=30),
)
def test_chunked_decoder_restores_the_body_whatever_the_read_sizes(parts, cuts):
    decoder = ChunkedDecoder()
    out = b""
    for piece in split_at(chunked(parts), cuts):
        out += decoder.feed(piece)
    assert out == b"".join(parts)
    assert decoder.done


def test_chunked_decoder_rejects_garbage():
    with pytest.raises(StreamFormatError):
        ChunkedDecoder().feed(b"zz\r\nabc")


TS = b"2026-11-28T00:13:57.123456789Z "


@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    st.lists(st.integers(min_value=0), max_size=10),
)
def test_raw_stream_splits_at_newlines(lines, cuts):
    data = b"".join(TS + line + b"\n" for line in lines)
    parser = RawStreamParser()
    out = []
    for chunk in split_at(data, cuts):
        out.extend(parser.feed(chunk))
    out.extend(parser.flush())
    assert out == [(STDOUT, TS + line + b"\n") for line in lines]


def test_raw_stream_cuts_long_lines_where_dockerd_did():
    piece = b"x" * DOCKER_PIECE_BYTES
    data = TS + piece + TS + b"tail\n"
    out = RawStreamParser().feed(data)
    assert out == [(STDOUT, TS + piece), (STDOUT, TS + b"tail\n")]


def test_raw_stream_flush_returns_an_unfinished_last_line():
    parser = RawStreamParser()
    assert parser.feed(TS + b"no newline") == []
    assert parser.flush() == [(STDOUT, TS + b"no newline")]


def test_tty_pieces_are_cut_after_a_timestamp_with_a_zone_offset():
    # a dockerd in another zone stamps "+01:00" instead of "Z": 35 bytes, not 30
    ts1, ts2 = b"2026-11-28T01:13:57.123456789+01:00", b"2026-11-28T01:13:57.123456790+01:00"
    piece = ts1 + b" " + b"A" * DOCKER_PIECE_BYTES
    records = RawStreamParser().feed(piece + ts2 + b" tail\n")
    assert [r for _, r in records] == [piece, ts2 + b" tail\n"]
