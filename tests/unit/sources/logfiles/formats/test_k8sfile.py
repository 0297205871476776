from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

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
