from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.record import STDERR, STDOUT
from bridge.sources.api.frames import (
    DOCKER_PIECE_BYTES,
    SYSTEM_ERROR,
    ChunkedDecoder,
    EngineErrorBody,
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


# Recorded from Podman 4.3.1's compat API: GET /containers/{id}/logs answered `200 OK`, then this
# body, for a container removed meanwhile (its handler had sent the status line already).
PODMAN_GONE_BODY = (
    b'{"cause":"no such container","message":"failed to obtain logs for Container '
    b"'554f38e58810de8ee8075c72736e46604760473358f9020e7c7a29f680a72a9a': container "
    b"554f38e58810de8ee8075c72736e46604760473358f9020e7c7a29f680a72a9a does not exist in "
    b'database: no such container","response":500}\n'
)
# The same race, the other answer: the service's own object of the container already marked
# removed (recorded the same way, with follow=1).
PODMAN_REMOVED_BODY = (
    b'{"cause":"container has already been removed","message":"failed to obtain logs for '
    b"Container 'ea2473b83dc72595e3f7cd167e857bf5bf019a2d341689e9237cdc08b14b40cb': container "
    b'has already been removed","response":500}\n'
)
PODMAN_GONE_MESSAGE = (
    "failed to obtain logs for Container '554f38e58810de8ee8075c72736e46604760473358f9020e7c7a"
    "29f680a72a9a': container 554f38e58810de8ee8075c72736e46604760473358f9020e7c7a29f680a72a9a"
    " does not exist in database: no such container"
)


def parse_all(
    parser: FrameParser | RawStreamParser, chunks: list[bytes]
) -> list[tuple[int, bytes]]:
    out = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    out.extend(parser.flush())
    return out


@pytest.mark.parametrize("parser_type", [FrameParser, RawStreamParser])
def test_podmans_json_error_body_is_read_as_the_error_it_is(parser_type):
    with pytest.raises(EngineErrorBody) as caught:
        parse_all(parser_type(), [PODMAN_GONE_BODY])
    assert caught.value.status_code == 500
    assert caught.value.explanation == PODMAN_GONE_MESSAGE
    assert str(caught.value) == "the engine answered 500: " + PODMAN_GONE_MESSAGE


@given(
    st.lists(st.integers(min_value=0), max_size=10), st.sampled_from([FrameParser, RawStreamParser])
)
def test_the_json_error_split_anywhere_is_the_same_error(cuts, parser_type):
    with pytest.raises(EngineErrorBody) as caught:
        parse_all(parser_type(), split_at(PODMAN_GONE_BODY, cuts))
    assert (caught.value.status_code, caught.value.explanation) == (500, PODMAN_GONE_MESSAGE)


@given(frames_st, st.lists(st.integers(min_value=0), max_size=10))
def test_frames_before_a_json_error_come_out_first(frames, cuts):
    parser, out = FrameParser(), []
    with pytest.raises(EngineErrorBody):
        for chunk in split_at(encode_frames(frames) + PODMAN_GONE_BODY, cuts):
            out.extend(parser.feed(chunk))
        parser.flush()
    assert out == frames


@pytest.mark.parametrize(
    ("body", "status", "explanation"),
    [
        (b'{"message":"x"', None, '{"message":"x"'),  # cut short: the stream ended
        (b"{}", None, "{}"),  # shorter than a frame header
        (b'{"cause":"c","response":"500"}', None, "c"),
        (b'{"message":"a\\nb\\u001b[31m\\u202e"}', None, "a b [31m"),  # one printable line
        (b'{"message":' + b'"' + b"x" * 5000 + b'"}', None, "x" * 300 + "..."),
    ],
)
def test_a_strange_json_error_is_still_one_bounded_line(body, status, explanation):
    with pytest.raises(EngineErrorBody) as caught:
        parse_all(FrameParser(), [body])
    assert (caught.value.status_code, caught.value.explanation) == (status, explanation)


def test_a_body_beyond_any_json_error_is_a_broken_stream():
    parser = FrameParser()
    parser.feed(b'{"message":"')
    with pytest.raises(StreamFormatError, match="neither frames nor a JSON error"):
        for _ in range(100):
            parser.feed(b"x" * 1024)


def test_a_json_error_deeper_than_python_goes_is_an_error_not_a_crash():
    body = b'{"a":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    with pytest.raises(EngineErrorBody) as caught:
        parse_all(FrameParser(), [body])
    assert caught.value.status_code is None


def test_in_a_tty_stream_a_brace_after_the_start_is_the_containers_own():
    line = TS + b'{"cause":"no such container","response":500}\n'
    assert parse_all(RawStreamParser(), [TS + b"first\n", b'{"cause":"x"}\n', line]) == [
        (STDOUT, TS + b"first\n"),
        (STDOUT, b'{"cause":"x"}\n'),
        (STDOUT, line),
    ]


def test_a_container_that_prints_the_json_error_prints_a_line():
    frames = [(STDOUT, TS + PODMAN_GONE_BODY), (STDERR, PODMAN_GONE_BODY)]
    assert parse_all(FrameParser(), [encode_frames(frames)]) == frames
