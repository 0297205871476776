from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.record import Record, footprint
from bridge.transforms.multiline import CONTINUED_FIELD, MultilineMerger
from bridge.transforms.regex import compile_trusted

TS = b"2026-11-28T00:13:57.123456789Z"
PY_TRACE = [
    b"starting",
    b"Traceback (most recent call last):",
    b'  File "app.py", line 3, in <module>',
    b"    main()",
    b"ZeroDivisionError: division by zero",
    b"next line",
]
JAVA_TRACE = [
    b"ERROR request failed",
    b"java.lang.IllegalStateException: boom",
    b"\tat com.example.App.run(App.java:10)",
    b"\tat com.example.App.main(App.java:3)",
    b"Caused by: java.io.IOException: disk",
    b"\t... 2 more",
    b"INFO carrying on",
]


def records(lines, stream=1):
    return [Record(stream, line, TS, (i + 1, 1), (i + 1, 1)) for i, line in enumerate(lines)]


def run(merger, lines, stream=1):
    out = []
    for r in records(lines, stream):
        out.extend(merger.push(r, now=0.0))
    return out + merger.flush()


def test_python_traceback_is_one_record():
    out = run(MultilineMerger.preset("python", 0.5, 1 << 20), PY_TRACE)
    assert [r.message for r in out] == [b"starting", b"\n".join(PY_TRACE[1:5]), b"next line"]
    assert out[1].first == (2, 1) and out[1].last == (5, 1) and out[1].needs_cursor_field


def test_java_stack_trace_is_one_record():
    out = run(MultilineMerger.preset("java", 0.5, 1 << 20), JAVA_TRACE)
    assert [r.message for r in out] == [JAVA_TRACE[0], b"\n".join(JAVA_TRACE[1:6]), JAVA_TRACE[6]]


def test_flush_timeout_releases_an_open_record():
    merger = MultilineMerger.preset("python", 0.5, 1 << 20)
    assert merger.push(records(PY_TRACE[1:3])[0], now=10.0) == []
    assert merger.next_deadline() == 10.5
    assert merger.flush_due(10.4) == []
    assert [r.message for r in merger.flush_due(10.5)] == [PY_TRACE[1]]


def test_streams_merge_separately():
    merger = MultilineMerger.preset("python", 0.5, 1 << 20)
    out = merger.push(Record(1, PY_TRACE[1], TS, (1, 1), (1, 1)), 0)
    out += merger.push(Record(2, b"  stderr indented", TS, (2, 1), (2, 1)), 0)
    assert [r.message for r in out] == [b"  stderr indented"]


@given(
    st.lists(st.sampled_from(PY_TRACE + JAVA_TRACE + [b"", b"  x"]), max_size=40),
    st.integers(16, 400),
)
def test_no_line_is_lost_and_records_respect_the_size_limit(lines, max_bytes):
    lines = [line[:max_bytes] for line in lines]
    out = run(MultilineMerger.preset("python", 0.5, max_bytes), lines)
    assert b"\n".join(r.message for r in out) == b"\n".join(lines)
    assert all(len(r.message) <= max_bytes for r in out)
    assert [r.last for r in out] == sorted(r.last for r in out)


def test_a_record_closes_at_max_lines_and_goes_on_as_a_marked_part():
    merger = MultilineMerger.preset("python", 0.5, 1 << 20, max_lines=3)
    lines = [PY_TRACE[1], b"  a", b"  b", b"  c", b"  d", b"  e", b"  f", b"after"]
    out = []
    for r in records(lines):
        out.extend(merger.push(r, now=0.0))
        assert all(len(o.records) < 3 for o in merger._open.values())
    assert [r.message for r in out] == [
        b"\n".join(lines[:3]),
        b"\n".join(lines[3:6]),
        b"  f",
        b"after",
    ]
    assert [r.extra_fields for r in out] == [
        (),
        ((CONTINUED_FIELD, b"2"),),
        ((CONTINUED_FIELD, b"3"),),
        (),
    ]
    assert [(r.first, r.last) for r in out[:3]] == [
        ((1, 1), (3, 1)),
        ((4, 1), (6, 1)),
        ((7, 1),) * 2,
    ]
    assert merger.merged_records == 2


def test_a_1000_line_stack_trace_with_the_default_cap_is_two_entries():
    merger = MultilineMerger.preset("java", 0.5, 1 << 20)
    lines = [JAVA_TRACE[1]] + [b"\tat com.example.F%d.run(F.java:1)" % i for i in range(999)]
    out = run(merger, [*lines, JAVA_TRACE[6]])
    assert [len(r.message.split(b"\n")) for r in out] == [500, 500, 1]
    assert b"\n".join(r.message for r in out[:2]) == b"\n".join(lines)
    assert out[1].extra_fields == ((CONTINUED_FIELD, b"2"),)


def test_a_part_goes_on_at_the_byte_cap_too():
    merger = MultilineMerger(compile_trusted("^T"), compile_trusted("^ "), 0.5, 20)
    a, b, c, d = (b" " + ch * 8 for ch in (b"a", b"b", b"c", b"d"))
    out = run(merger, [b"T", a, b, c, d, b"x"])
    assert [r.message for r in out] == [b"T\n" + a, b + b"\n" + c, d, b"x"]
    assert [r.extra_fields for r in out] == [
        (),
        ((CONTINUED_FIELD, b"2"),),
        ((CONTINUED_FIELD, b"3"),),
        (),
    ]


def test_after_the_flush_time_a_continuation_line_no_longer_goes_on_a_capped_record():
    merger = MultilineMerger.preset("python", 0.5, 1 << 20, max_lines=2)
    out = merger.push(Record(1, PY_TRACE[1], TS, (1, 1), (1, 1)), 0.0)
    out += merger.push(Record(1, b"  a", TS, (2, 1), (2, 1)), 0.0)
    out += merger.push(Record(1, b"  late", TS, (3, 1), (3, 1)), 0.6)
    assert [(r.message, r.extra_fields) for r in out] == [
        (PY_TRACE[1] + b"\n  a", ()),
        (b"  late", ()),
    ]
    assert merger.held_bytes == 0


def test_a_flood_of_continuation_lines_after_a_start_is_bounded():
    """A flood of continuation lines: at most max_lines held (r8), and one entry per max_lines
    lines, not one per line (300,000 lines gave 300,002 entries)."""
    merger = MultilineMerger.preset("python", 0.5, 1 << 20)
    merger.push(Record(1, PY_TRACE[1], TS, (0, 1), (0, 1)), 0.0)
    peak = released = 0
    for n in range(1, 300_001):
        released += len(merger.push(Record(1, b" ", TS, (n, 1), (n, 1)), 0.0))
        peak = max(peak, len(merger._open[1].records) if 1 in merger._open else 0)
        assert merger.held_bytes == footprint(merger._open[1].records if 1 in merger._open else [])
    released += len(merger.flush())
    assert peak == 499 and released == 601  # 300,001 lines: 600 full records and one more


@given(
    st.lists(
        st.tuples(st.sampled_from([*PY_TRACE, b"", b"  x"]), st.sampled_from([1, 2])),
        max_size=60,
    ),
    st.integers(2, 6),
)
def test_held_bytes_and_held_first_match_what_is_held(lines, max_lines):
    merger = MultilineMerger.preset("python", 0.5, 1 << 20, max_lines)
    out = []
    for n, (line, stream) in enumerate(lines, 1):
        out.extend(merger.push(Record(stream, line, TS, (n, 1), (n, 1)), 0.0))
        held = [r for o in merger._open.values() for r in o.records]
        assert merger.held_bytes == footprint(held)
        assert merger.held_first() == {s: o.records[0].first for s, o in merger._open.items()}
        assert all(len(o.records) < max_lines for o in merger._open.values())
    out.extend(merger.flush())
    assert merger.held_bytes == 0 and merger.held_first() == {}
    for stream in (1, 2):  # nothing lost or reordered within a stream
        sent = [line for line, s in lines if s == stream]
        got = [r.message for r in out if r.stream == stream]
        assert b"\n".join(got) == b"\n".join(sent)
        assert [r.last for r in out if r.stream == stream] == sorted(
            r.last for r in out if r.stream == stream
        )


def test_release_hands_back_the_held_lines_unmerged():
    merger = MultilineMerger.preset("python", 0.5, 1 << 20)
    held = records(PY_TRACE[1:4])
    for r in held:
        merger.push(r, 0.0)
    assert merger.release(1) == held and merger.held_bytes == 0 and merger.release(1) == []
