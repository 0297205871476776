from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.partial import PartialJoiner

TS = b"2026-11-28T00:13:57.123456789Z"
PIECE = 16 * 1024


def pieces_of(line: bytes) -> list[bytes]:
    body = line + b"\n"
    return [body[i : i + PIECE] for i in range(0, len(body), PIECE)] or [b"\n"]


@given(
    st.lists(st.integers(min_value=0, max_value=5 * PIECE), min_size=1, max_size=5),
    st.integers(1, 8),
)
def test_pieces_rejoin_into_lines_or_marked_partials_covering_every_byte(lengths, max_pieces):
    max_bytes = max_pieces * PIECE
    joiner = PartialJoiner(max_bytes, "id")
    lines = [bytes([65 + i % 26]) * n for i, n in enumerate(lengths)]
    records, k = [], 0
    for line in lines:
        for piece in pieces_of(line):
            k += 1
            records.extend(joiner.push(1, TS, (k, 1), piece))
    assert joiner.flush() == []
    assert b"".join(r.message for r in records) == b"".join(lines)
    assert all(len(r.message) <= max_bytes for r in records)
    # Records cover the lines in order, and every record ends on a piece boundary.
    assert [r.last for r in records] == sorted(r.last for r in records)
    assert records[-1].last == (k, 1)
    for record in records:
        if record.partial is None:
            assert record.message in lines


def test_long_line_becomes_numbered_partials():
    joiner = PartialJoiner(2 * PIECE, "c")
    out = []
    for i, piece in enumerate(pieces_of(b"x" * (5 * PIECE))):
        out.extend(joiner.push(1, TS, (100, i + 1), piece))
    assert [(r.partial.ordinal, r.partial.last) for r in out if r.partial] == [
        (1, False),
        (2, False),
        (3, True),
    ]
    assert out[0].first == (100, 1) and out[0].last == (100, 2)
    assert out[0].needs_cursor_field


def test_streams_are_joined_separately_and_flush_emits_the_unfinished():
    joiner = PartialJoiner(PIECE * 4, "c")
    assert joiner.push(1, TS, (1, 1), b"out-") == []
    err = joiner.push(2, TS, (2, 1), b"err\n")
    assert [r.message for r in err] == [b"err"]
    assert [r.message for r in joiner.push(1, TS, (3, 1), b"done\n")] == [b"out-done"]
    assert joiner.push(1, TS, (4, 1), b"no newline at exit") == []
    final = joiner.flush()
    assert [(r.message, r.partial) for r in final] == [(b"no newline at exit", None)]


def test_single_line_needs_no_cursor_field():
    (record,) = PartialJoiner(PIECE, "c").push(1, TS, (5, 1), b"hi\n")
    assert not record.needs_cursor_field
    (second,) = PartialJoiner(PIECE, "c").push(1, TS, (5, 2), b"hi\n")
    assert second.needs_cursor_field
