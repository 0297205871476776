from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.cursor import Cursor, CursorFilter


@st.composite
def interleaved_log(draw):
    """Lines of two streams, each with non-decreasing timestamps (bursts share them), merged
    in an arbitrary order -- the way dockerd's two copier goroutines fill one log file."""
    streams = {}
    for stream in (1, 2):
        steps = draw(st.lists(st.integers(min_value=0, max_value=3), max_size=25))
        ts, lines = 1_000, []
        for step in steps:
            ts += step
            lines.append((stream, ts))
        streams[stream] = lines
    order = draw(st.permutations([1] * len(streams[1]) + [2] * len(streams[2])))
    merged, index = [], {1: 0, 2: 0}
    for stream in order:
        merged.append(streams[stream][index[stream]])
        index[stream] += 1
    return [(s, ts, n) for n, (s, ts) in enumerate(merged)]


def docker_since(log, since):
    return [line for line in log if line[1] >= since]


@given(interleaved_log(), st.data())
def test_resume_from_any_point_replays_exactly_the_rest(log, data):
    consumed = data.draw(st.integers(min_value=0, max_value=len(log)))
    first = CursorFilter(Cursor())
    for stream, ts, _ in log[:consumed]:
        assert first.admit(stream, ts) is not None
    positions = {s: p for s in (1, 2) if (p := first.position(s)) is not None}
    cursor = Cursor(0, positions)
    second = CursorFilter(cursor)
    # guard 0: the test's streams are merged without reordering slack, so only the exact bound
    resumed = [
        n for s, ts, n in docker_since(log, cursor.since_ns(guard_ns=10**6)) if second.admit(s, ts)
    ]
    assert resumed == [n for _, _, n in log[consumed:]]
    assert not second.gap_streams


@given(interleaved_log(), st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=4))
def test_repeated_resumes_even_without_progress_replay_exactly_the_rest(log, stops):
    cursor, done, resumed = Cursor(), 0, []
    for stop in sorted(stops):  # each pass reads up to `stop` lines of what Docker returns
        f = CursorFilter(cursor)
        for s, ts, n in docker_since(log, cursor.since_ns(guard_ns=10**6)):
            if done >= stop:
                break
            if f.admit(s, ts):
                resumed.append(n)
                done += 1
        cursor = Cursor(0, {s: p for s in (1, 2) if (p := f.position(s)) is not None})
    f = CursorFilter(cursor)
    resumed += [
        n for s, ts, n in docker_since(log, cursor.since_ns(guard_ns=10**6)) if f.admit(s, ts)
    ]
    assert resumed == [n for _, _, n in log]


def test_a_resumed_filter_reports_the_cursor_until_it_moves():
    f = CursorFilter(Cursor(0, {1: (50, 3)}))
    assert f.position(1) == (50, 3)
    assert f.admit(1, 50) is None
    assert f.position(1) == (50, 3)


def test_lines_sharing_a_timestamp_are_numbered():
    f = CursorFilter(Cursor())
    got = [f.admit(1, 5), f.admit(1, 5), f.admit(1, 6), f.admit(2, 5)]
    assert got == [(5, 1), (5, 2), (6, 1), (5, 1)]
    assert f.position(1) == (6, 1)


def test_floor_drops_older_lines():
    f = CursorFilter(Cursor(floor_ns=100))
    assert f.admit(1, 99) is None
    assert f.admit(1, 100) == (100, 1)


def test_a_vanished_resume_line_is_reported_as_a_gap():
    f = CursorFilter(Cursor(0, {1: (50, 2)}))
    assert f.admit(1, 60) == (60, 1)  # the two lines at 50 were rotated away
    assert f.gap_streams == {1}


def test_since_reads_back_no_further_than_the_guard_for_an_idle_stream():
    cursor = Cursor(0, {1: (10_000_000_000, 1), 2: (1_000, 1)})
    assert cursor.since_ns(guard_ns=2_000_000_000) == 8_000_000_000


def test_merged_takes_the_later_position_per_stream():
    a = Cursor(5, {1: (10, 1), 2: (20, 3)})
    b = Cursor(0, {1: (10, 2), 2: (19, 9)})
    assert a.merged(b) == Cursor(5, {1: (10, 2), 2: (20, 3)})


def test_json_round_trip():
    cursor = Cursor(7, {1: (10, 2), 2: (30, 1)})
    assert Cursor.from_json(cursor.to_json()) == cursor


def test_a_pinned_stream_is_not_raised_by_the_reorder_guard():
    # stderr holds an open record stamped at 100 s; stdout went on to 500 s
    held = Cursor(0, {1: (500 * 10**9, 1), 2: (100 * 10**9, 0)}, frozenset({2}))
    assert held.since_ns() == 100 * 10**9
    unpinned = Cursor(0, {1: (500 * 10**9, 1), 2: (100 * 10**9, 0)})
    assert unpinned.since_ns() == 498 * 10**9


def test_merging_keeps_the_pin_with_the_position_chosen():
    saved = Cursor(0, {1: (10, 1), 2: (5, 0)}, frozenset({2}))
    journal = Cursor(0, {1: (12, 1), 2: (4, 1)})
    merged = saved.merged(journal)
    assert merged.streams == {1: (12, 1), 2: (5, 0)} and merged.pinned == {2}
    newer = saved.merged(Cursor(0, {2: (6, 1)}))
    assert newer.streams[2] == (6, 1) and newer.pinned == frozenset()


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
    )
)
def test_from_json_accepts_a_cursor_or_raises_value_error(data):
    try:
        cursor = Cursor.from_json(data)
    except (ValueError, TypeError):
        return
    assert Cursor.from_json(cursor.to_json()) == cursor


def test_from_json_refuses_numbers_that_are_not_positions():
    for bad in (float("inf"), -1, 1 << 64, 1.5, True, "12"):
        with pytest.raises(ValueError):
            Cursor.from_json({"floor_ns": 0, "streams": {"1": [bad, 1]}})


# --- the wall clock stepping back -----------------------------------------------------------


@st.composite
def stepping_log(draw):
    """Like `interleaved_log`, but each stream's clock may step back (negative steps), any
    number of times, also inside the window of an earlier step."""
    streams = {}
    for stream in (1, 2):
        steps = draw(st.lists(st.integers(min_value=-6, max_value=3), max_size=25))
        ts, lines = 1_000, []
        for step in steps:
            ts += step
            lines.append((stream, ts))
        streams[stream] = lines
    order = draw(st.permutations([1] * len(streams[1]) + [2] * len(streams[2])))
    merged, index = [], {1: 0, 2: 0}
    for stream in order:
        merged.append(streams[stream][index[stream]])
        index[stream] += 1
    return [(s, ts, n) for n, (s, ts) in enumerate(merged)]


def file_from(log, since):
    """What a file reader reads after its search: every line from the first stamped `since`
    or later, whatever comes after it (search.py finds that place, steps or not)."""
    for i, (_, ts, _) in enumerate(log):
        if ts >= since:
            return log[i:]
    return []


@given(stepping_log())
def test_a_live_filter_admits_every_line_whatever_the_clock_does(log):
    f = CursorFilter(Cursor())
    positions = {1: [], 2: []}
    for stream, ts, _ in log:
        position = f.admit(stream, ts)
        assert position is not None
        positions[stream].append(position)
    for ps in positions.values():
        assert ps == sorted(set(ps)), "positions must strictly increase along a stream"


@given(stepping_log(), st.data())
def test_resume_inside_or_after_a_step_replays_exactly_the_rest(log, data):
    consumed = data.draw(st.integers(min_value=0, max_value=len(log)))
    first = CursorFilter(Cursor())
    for stream, ts, _ in log[:consumed]:
        first.admit(stream, ts)
    cursor = Cursor(0, {s: p for s in (1, 2) if (p := first.position(s)) is not None})
    cursor = Cursor.from_json(cursor.to_json())  # as the state file keeps it
    second = CursorFilter(cursor)
    since = cursor.since_ns(guard_ns=10**6)
    resumed = [n for s, ts, n in file_from(log, since) if second.admit(s, ts) is not None]
    assert resumed == [n for _, _, n in log[consumed:]]
    assert not second.gap_streams


@given(stepping_log(), st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=4))
def test_repeated_resumes_through_steps_lose_and_repeat_nothing(log, stops):
    cursor, done, resumed = Cursor(), 0, []
    for stop in sorted(stops):
        f = CursorFilter(cursor)
        for s, ts, n in file_from(log, cursor.since_ns(guard_ns=10**6)):
            if done >= stop:
                break
            if f.admit(s, ts) is not None:
                resumed.append(n)
                done += 1
        cursor = f.advanced(cursor)
    f = CursorFilter(cursor)
    resumed += [n for s, ts, n in file_from(log, cursor.since_ns(guard_ns=10**6)) if f.admit(s, ts)]
    assert resumed == [n for _, _, n in log]


def test_a_step_back_admits_the_lines_and_is_counted():
    """r27: 100 lines, then the clock steps back 3 s and 200 more follow: none is dropped."""
    ms = 10**6
    stamps = [10_000 * ms + i * 20 * ms for i in range(100)]
    stamps += [9_000 * ms + i * 20 * ms for i in range(200)]
    f = CursorFilter(Cursor())
    admitted = [f.admit(1, ts) for ts in stamps]
    assert None not in admitted
    assert f.steps == 1 and f.last_step_ns == (11_980 - 9_000) * ms
    hw = stamps[99]
    assert admitted[100] == (hw, 1, 1, 9_000 * ms, 1)
    assert admitted[199] == (hw, 1, 1, 10_980 * ms, 1)  # the window's lines, in order
    assert admitted[250] == (12_000 * ms, 1)  # the clock caught up: plain positions again
    assert admitted == sorted(admitted)


def test_a_window_position_round_trips_and_is_treated_as_exact_by_since():
    window = (100, 1, 1, 40, 2)
    cursor = Cursor(0, {1: window, 2: (90, 1)})
    assert Cursor.from_json(cursor.to_json()) == cursor
    assert cursor.in_step()
    assert cursor.since_ns(guard_ns=5) == 40  # not raised to newest - guard


def test_from_json_refuses_a_malformed_window_position():
    for bad in ([100, 1, 0, 40, 1], [100, 1, 1, 100, 1], [1, 2, 3], [1, 2, 3, 4, 5, 6]):
        with pytest.raises(ValueError):
            Cursor.from_json({"floor_ns": 0, "streams": {"1": bad}})


def test_merged_prefers_the_later_position_across_a_step():
    before = Cursor(0, {1: (100, 1)})
    inside = Cursor(0, {1: (100, 1, 1, 40, 1)})
    after = Cursor(0, {1: (101, 1)})
    assert before.merged(inside).streams[1] == (100, 1, 1, 40, 1)
    assert inside.merged(after).streams[1] == (101, 1)
    assert inside.merged(before).streams[1] == (100, 1, 1, 40, 1)
