from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bridge.core.partial import PartialJoiner
from bridge.core.record import STDERR, STDOUT
from bridge.sources.logfiles.formats.k8sfile import K8S_FILE, K8sFileParser

from ..encode import (
    NS,
    T0,
    Rec,
    cuts,
    expected,
    feed_all,
    got,
    k8s_line,
    records,
    rfc3339,
    split_at,
    timestamps,
)

# As conmon writes it (src/ctr_logging.c): local time with its offset, "P" pieces get a newline
# added, "F" lines carry their own, an empty line is "F " and the newline.
SAMPLE = (
    b"2026-12-02T06:05:22.513454705+00:00 stdout F hello\n"
    b"2026-12-02T07:05:22.513454706+01:00 stderr P first half \n"
    b"2026-12-02T07:05:22.513454707+01:00 stderr F and the rest\n"
    b"2026-12-02T01:35:22.000000001-04:30 stdout F \n"
)

messages = st.binary(max_size=60).map(lambda b: b.replace(b"\n", b""))


def test_sample_in_several_zones():
    lines = K8sFileParser().feed(SAMPLE)
    assert [(x.stream, x.timestamp, x.message, x.complete) for x in lines] == [
        (STDOUT, b"2026-12-02T06:05:22.513454705Z", b"hello", True),
        (STDERR, b"2026-12-02T06:05:22.513454706Z", b"first half ", False),
        (STDERR, b"2026-12-02T06:05:22.513454707Z", b"and the rest", True),
        (STDOUT, b"2026-12-02T06:05:22.000000001Z", b"", True),
    ]
    assert lines[0].ts_ns == 1796191522513454705
    assert lines[-1].end == len(SAMPLE)


@given(records(messages), cuts, st.sampled_from([0, 60, -270, 345]))
def test_any_records_at_any_split_come_back(recs, cut, zone):
    data = b"".join(k8s_line(r, zone) for r in recs)
    parser = K8sFileParser(offset=3)
    lines = feed_all(parser, split_at(data, cut))
    assert got(lines) == expected(recs)
    assert parser.malformed == parser.pending_bytes == 0
    assert parser.offset == 3 + len(data)


@given(st.binary(max_size=300), cuts, st.integers(min_value=1, max_value=80))
@example(b"2026-12-02T06:05:22.513454705+00:00 stdout F x\n", [7], 80)
def test_arbitrary_bytes_never_raise_and_any_split_gives_the_same_lines(data, cut, cap):
    whole = K8sFileParser(max_line_bytes=cap)
    one = whole.feed(data)
    split = K8sFileParser(max_line_bytes=cap)
    assert feed_all(split, split_at(data, cut)) == one
    assert (split.malformed, split.oversized, split.offset) == (
        whole.malformed,
        whole.oversized,
        whole.offset,
    )


def test_malformed_lines_are_counted_with_a_reason():
    bad = (
        b"2026-12-02T06:05:22.513454705+00:00 stdin F x\n",
        b"2026-12-02T06:05:22.513454705+00:00 stdout X x\n",
        b"2026-13-02T06:05:22.513454705+00:00 stdout F x\n",
        b"yesterday stdout F x\n",
        b"2026-12-02T06:05:22.513454705+00:00\n",
    )
    parser = K8sFileParser()
    good = k8s_line(Rec(STDOUT, 1, b"ok"))
    assert [x.message for x in parser.feed(good + b"".join(bad) + good)] == [b"ok", b"ok"]
    assert parser.malformed == len(bad)
    assert parser.last_error


def test_a_utc_timestamp_in_z_form_is_taken_too():
    (x,) = K8sFileParser().feed(b"2026-12-02T06:05:22.5Z stdout F x\n")
    assert x.timestamp == b"2026-12-02T06:05:22.500000000Z"


def test_probe():
    a, b = k8s_line(Rec(STDOUT, 1, b"a")), k8s_line(Rec(STDERR, 2, b"b"))
    assert K8S_FILE.probe(a + b, True) == (0, len(a), 1)
    assert K8S_FILE.probe(a[3:] + b, False) == (len(a) - 3, len(a) + len(b) - 3, 2)
    assert K8S_FILE.parser(0).feed(a) != []


@given(
    st.lists(st.tuples(timestamps, st.integers(-14 * 60, 14 * 60)), min_size=1, max_size=20),
    cuts,
)
def test_any_zone_offset_is_the_same_instant_in_utc(stamps, cut):
    # conmon writes local time with tm_gmtoff as +HH:MM; the cached whole second must never
    # carry over from one zone to another.
    data = b"".join(k8s_line(Rec(STDOUT, ts, b"m"), offset) for ts, offset in stamps)
    lines = feed_all(K8sFileParser(), split_at(data, cut))
    assert [(x.ts_ns, x.timestamp) for x in lines] == [(ts, rfc3339(ts)) for ts, _ in stamps]


def test_the_hour_that_repeats_when_summer_time_ends():
    # Europe/Berlin, 2026-10-25: 02:30 local comes twice, first at +02:00, then at +01:00.
    lines = K8sFileParser().feed(
        b"2026-10-25T02:30:00.000000001+02:00 stdout F first\n"
        b"2026-10-25T02:30:00.000000001+01:00 stdout F an hour later\n"
    )
    assert [x.timestamp for x in lines] == [
        b"2026-10-25T00:30:00.000000001Z",
        b"2026-10-25T01:30:00.000000001Z",
    ]
    assert lines[1].ts_ns - lines[0].ts_ns == 3600 * NS


def test_lines_of_one_read_share_a_timestamp():
    # conmon stamps every line of one read(2) with one clock reading: the file has equal
    # timestamps, which the reader's (timestamp, k) positions tell apart.
    data = b"".join(k8s_line(Rec(STDOUT, T0, b"%d" % i)) for i in range(3))
    assert {x.ts_ns for x in K8sFileParser().feed(data)} == {T0}


# --- recorded byte streams: containerd 1.6.20 (CRI) and conmon 2.1.6 (Podman, CRI-O) ---------
# Both ran the same script: hello; err on stderr; "crlf\r\n"; "lone\rcr\r\r\n"; an empty line;
# a line of 40,000 "a"; then (containerd) "before " and, after a kubelet-style
# rotation (rename, ReopenContainerLog), "after\n"; "out"; and `printf x` at exit.
RECORDED = Path(__file__).parent / "recorded"
CONTAINERD = (
    (RECORDED / "containerd-before-reopen.log").read_bytes(),
    (RECORDED / "containerd-after-reopen.log").read_bytes(),
)
CONMON = (RECORDED / "conmon.log").read_bytes()


def _entries(files: tuple[bytes, ...], cut: list[int]) -> list[tuple[int, bytes]]:
    """What the reader makes of the files in order: a parser reset at each file (as at a
    "rotated" restart), one joiner for the whole log, flushed at the end (the container ended)."""
    joiner = PartialJoiner(1 << 20)
    out = []
    for i, data in enumerate(files):
        parser = K8sFileParser()
        for line in feed_all(parser, split_at(data, cut)):
            body = line.message + b"\n" if line.complete else line.message
            out += joiner.push(line.stream, line.timestamp, (line.ts_ns, i), body)
        assert parser.malformed == parser.pending_bytes == 0
    out += joiner.flush()
    return [(r.stream, r.message) for r in out]


WRITTEN = [
    (STDOUT, b"hello"),
    (STDOUT, b"crlf"),  # containerd drops "\r\n" as a unit, as the kubelet's reader expects
    (STDOUT, b"lone\rcr\r"),
    (STDOUT, b""),
    (STDERR, b"err"),
    (STDOUT, b"a" * 40000),
    (STDOUT, b"before after"),  # a "P" flushed into the old file at the reopen, its "F" in the new
    (STDOUT, b"out"),
    (STDOUT, b"x"),  # a "P" with no "F": the container exited mid-line
]


@given(cuts)
def test_containerd_recording_at_any_split_gives_each_line_once(cut):
    assert _entries(CONTAINERD, cut) == WRITTEN


@given(cuts)
def test_conmon_recording_at_any_split_gives_each_line_once(cut):
    # conmon keeps a CR before the newline; stdout and stderr interleave in its reads.
    assert sorted(_entries((CONMON,), cut)) == sorted(
        [
            (STDOUT, b"hello"),
            (STDOUT, b"crlf\r"),
            (STDOUT, b"lone\rcr\r\r"),
            (STDOUT, b""),
            (STDERR, b"err"),
            (STDOUT, b"a" * 40000),
            (STDOUT, b"out"),
            (STDOUT, b"x"),
        ]
    )


def test_containerd_pieces_are_16_kib_and_timestamps_vary_in_width():
    lines = K8sFileParser().feed(CONTAINERD[0])
    assert [len(x.message) for x in lines if not x.complete][:2] == [16384, 16384]
    widths = {len(line.split(b" ", 1)[0]) for line in CONTAINERD[0].splitlines()}
    assert len(widths) > 1  # trailing zeros trimmed (RFC3339Nano)
    assert all(x.timestamp.endswith(b"Z") and len(x.timestamp) == 30 for x in lines)


@pytest.mark.parametrize(
    ("stamp", "expect"),
    [
        (b"2024-01-01T12:00:00.9411043Z", b"2024-01-01T12:00:00.941104300Z"),
        (b"2024-01-01T12:00:00.1Z", b"2024-01-01T12:00:00.100000000Z"),
        (b"2024-01-01T12:00:00Z", b"2024-01-01T12:00:00.000000000Z"),
        (b"2024-01-01T13:00:00.5+01:00", b"2024-01-01T12:00:00.500000000Z"),
    ],
)
def test_containerd_timestamp_widths_and_zones(stamp, expect):
    (x,) = K8sFileParser().feed(stamp + b" stderr F m\n")
    assert (x.timestamp, x.stream, x.message) == (expect, STDERR, b"m")


def test_tags_after_a_colon_are_ignored_as_the_kubelet_does():
    lines = K8sFileParser().feed(
        b"2024-01-01T12:00:00.1Z stdout P:x:y a\n2024-01-01T12:00:00.2Z stdout F:z b\n"
    )
    assert [(x.message, x.complete) for x in lines] == [(b"a", False), (b"b", True)]
    parser = K8sFileParser()
    assert (
        parser.feed(b"2024-01-01T12:00:00Z stdout :F m\n2024-01-01T12:00:00Z stdout FF m\n") == []
    )
    assert parser.malformed == 2
