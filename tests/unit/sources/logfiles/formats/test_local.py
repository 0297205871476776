from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bridge.core.record import STDERR, STDOUT
from bridge.sources.logfiles.formats.local import LOCAL, LocalParser, decode

from ..encode import (
    Rec,
    cuts,
    expected,
    feed_all,
    got,
    local_entry,
    local_frames,
    records,
    split_at,
)

_ID1 = b"aa18f085eb95ed86a1415862e7efbf5fbbef870eb390d10408fc16a4f06d6e6a"
_ID2 = b"8857d84fa528bfef0beffcb725d3eba442250cb25de11ee64ead64d9b564709c"
# Captured from dockerd 20.10.24, `--log-driver local` (local-logs/container.log of `sh -c 'echo
# hello; printf "\377x\n"; echo err >&2; printf no-newline; sleep 0.2; head -c 20000 /dev/zero |
# tr "\0" a; echo; sleep 0.3; printf tail-no-nl'`): no newline in `line`, "\377x" kept as it
# was, a 20010-byte line cut at 16 KiB into two partial entries (the second with last=true, both
# with the first piece's time), and the unfinished last line a partial entry with last unset.
REAL = (
    b"\x00\x00\x00\x19\n\x06stdout\x10\x93\x89\x92\xfa\xc5\xb3\xd8\xf6\x18\x1a\x05hello\x00\x00\x00\x19"
    b"\x00\x00\x00\x16\n\x06stdout\x10\xf1\xd4\xa9\xfa\xc5\xb3\xd8\xf6\x18\x1a\x02\xffx\x00\x00\x00\x16"
    b"\x00\x00\x00\x17\n\x06stderr\x10\xd0\xb4\xa2\xfa\xc5\xb3\xd8\xf6\x18\x1a\x03err\x00\x00\x00\x17"
    b"\x00\x00@^\n\x06stdout\x10\xb2\xcd\xdc\xda\xc6\xb3\xd8\xf6\x18\x1a\x80\x80\x01no-newline"
    + b"a" * 16374
    + b" \x01*D\x12@"
    + _ID1
    + b"\x18\x01\x00\x00@^"
    b"\x00\x00\x0e\x89\n\x06stdout\x10\xb2\xcd\xdc\xda\xc6\xb3\xd8\xf6\x18\x1a\xaa\x1c"
    + b"a" * 3626
    + b" \x01*F\x08\x01\x12@"
    + _ID1
    + b"\x18\x02\x00\x00\x0e\x89"
    b"\x00\x00\x00f\n\x06stdout\x10\xd7\xe2\xb1\xff\xc7\xb3\xd8\xf6\x18\x1a\ntail-no-nl"
    b" \x01*D\x12@" + _ID2 + b"\x18\x01\x00\x00\x00f"
)


def test_real_dockerd_file():
    parser = LocalParser()
    lines = parser.feed(REAL)
    assert [(x.stream, x.message[:10], len(x.message), x.complete) for x in lines] == [
        (STDOUT, b"hello", 5, True),
        (STDOUT, b"\xffx", 2, True),
        (STDERR, b"err", 3, True),
        (STDOUT, b"no-newline", 16384, False),
        (STDOUT, b"a" * 10, 3626, True),
        (STDOUT, b"tail-no-nl", 10, False),
    ]
    assert lines[0].timestamp == b"2026-12-02T08:12:30.631814291Z"
    assert lines[0].ts_ns == 1796199150631814291
    assert lines[3].timestamp == lines[4].timestamp
    assert [x.end for x in lines][-1] == len(REAL) == 20419
    assert parser.malformed == parser.pending_bytes == 0


@given(records(st.binary(max_size=60)), cuts)
def test_any_entries_at_any_split_come_back(recs, cut):
    data = local_frames(recs)
    parser = LocalParser(offset=7)
    lines = feed_all(parser, split_at(data, cut))
    assert got(lines) == expected(recs)
    assert parser.malformed == parser.pending_bytes == 0
    assert parser.offset == 7 + len(data)


@given(st.binary(max_size=400), cuts, st.integers(min_value=0, max_value=100))
@example(local_frames([Rec(STDOUT, 1, b"x")]) * 2, [3, 30], 100)
@example(b"\x00\x00\x00\x05\n\x06stdout", [], 100)
def test_arbitrary_bytes_never_raise_and_any_split_gives_the_same_lines(data, cut, cap):
    whole = LocalParser(max_line_bytes=cap)
    one = whole.feed(data)
    split = LocalParser(max_line_bytes=cap)
    assert feed_all(split, split_at(data, cut)) == one
    assert (split.malformed, split.offset) == (whole.malformed, whole.offset)


# Junk that cannot pass for an entry: no zero byte (every length it starts is beyond the cap) and
# no 0x0a (it holds no entry's first bytes). Whatever it is cut into, it costs nothing else.
junk_st = st.binary(min_size=1, max_size=40).map(
    lambda b: b.replace(b"\0", b"j").replace(b"\n", b"j")
)


@given(records(st.binary(max_size=30)), junk_st, st.integers(min_value=0), cuts)
def test_damage_costs_only_itself(recs, junk, where, cut):
    frames = [local_frames([r]) for r in recs]
    at = where % (len(frames) + 1)
    data = b"".join(frames[:at]) + junk + b"".join(frames[at:])
    parser = LocalParser()
    lines = feed_all(parser, split_at(data, cut))
    assert got(lines) == expected(recs)
    assert parser.malformed == (1 if at < len(frames) or len(junk) >= 4 else 0)


def test_garbage_between_entries_is_counted_once_and_skipped():
    a, b = local_frames([Rec(STDOUT, 1, b"a")]), local_frames([Rec(STDERR, 2, b"b")])
    parser = LocalParser()
    lines = parser.feed(a + b"\x00\x00\x00\x03xyz\x00\x00\x00\x04" + b"garbage" * 50 + b)
    assert [x.message for x in lines] == [b"a", b"b"]
    assert parser.malformed == 1
    assert "disagree" in parser.last_error
    assert lines[1].end == len(a) + 11 + 350 + len(b)


def test_a_well_framed_but_undecodable_entry_is_skipped_without_losing_sync():
    bad = b"\x00\x00\x00\x03\x0f\xff\xff\x00\x00\x00\x03"  # wire type 7
    also_bad = local_entry(Rec(STDOUT, 1, b"x"))[:4] + b"\n\x06stdin!" + b"\x00" * 11
    a = local_frames([Rec(STDOUT, 1, b"a")])
    parser = LocalParser()
    assert [x.message for x in parser.feed(a + bad + a)] == [b"a", b"a"]
    assert parser.malformed == 1
    assert parser.feed(also_bad[:4] + also_bad[4:23] + also_bad[:4]) == []


def test_an_entry_longer_than_the_cap_is_damage_and_parsing_resyncs():
    a = local_frames([Rec(STDOUT, 1, b"a")])
    huge = (10_000_000).to_bytes(4, "big") + b"\n\x06stdout..."
    parser = LocalParser()
    assert [x.message for x in parser.feed(a + huge + a)] == [b"a", b"a"]
    assert parser.malformed == 1
    assert parser.pending_bytes == 0


def test_unknown_fields_and_newer_attrs_are_skipped():
    attrs = b"\x32\x0a\x0a\x03app\x12\x05web"  # 6: LogAttr{key, value}
    fixed = b"\x39" + b"\x00" * 8 + b"\x45" + b"\x00" * 4  # field 7 fixed64, field 8 fixed32
    entry = local_entry(Rec(STDERR, 5, b"x"), extra=attrs + fixed)
    (line,) = LocalParser().feed(entry)
    assert (line.stream, line.ts_ns, line.message) == (STDERR, 5, b"x")


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # no source
        b"\n\x05stdin",  # another stream
        b"\x10\x01",  # no source
        b"\n\x06stdout\x10",  # a varint cut short
        b"\n\x06stdout\x1a\x05ab",  # a field running past the entry
        b"\n\x06stdout\x10" + b"\xff" * 9 + b"\x01",  # time_nano -1
        b"\x00\x00\n\x06stdout",  # field number 0
        b"\n\x06stdout\x0f",  # wire type 7
        b"\x0d\x00\x00\x00\x00",  # field 1 as fixed32
    ],
)
def test_decode_rejects_what_is_not_a_log_entry(payload):
    with pytest.raises(ValueError):
        decode(payload, 0, len(payload))


def test_probe_and_line_starts():
    frames = [local_frames([Rec(STDOUT, t, b"m%d" % t)]) for t in (1, 2, 3)]
    data = b"".join(frames)
    n = len(frames[0])
    assert LOCAL.probe(data, True) == (0, n, 1)
    assert LOCAL.probe(data[1:], False) == (n - 1, 2 * n - 1, 2)
    assert LOCAL.probe(data[: n - 1], True) is None
    assert LOCAL.starts_line(data[:n], data[n:])
    assert LOCAL.starts_line(data, b"")
    assert LOCAL.starts_line(b"", data)
    assert not LOCAL.starts_line(data[:3], data[3:])
    assert not LOCAL.starts_line(data[: n + 3], b"")
