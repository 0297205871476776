from __future__ import annotations

import gzip
import itertools
import math
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.record import STDERR, STDOUT
from bridge.sources.logfiles.formats import FORMATS
from bridge.sources.logfiles.formats.jsonfile import JSON_FILE
from bridge.sources.logfiles.formats.lines import FileFormat
from bridge.sources.logfiles.formats.local import LOCAL
from bridge.sources.logfiles.rotation.identity import Opened
from bridge.sources.logfiles.rotation.numbered import NumberedFiles
from bridge.sources.logfiles.rotation.search import BACK_SCAN_BYTES, BLOCK_BYTES, Searcher

from ..encode import NS, T0, Rec, json_line, k8s_line, local_frames
from ..rotating import Reader, Writer, names


def encode(fmt: str, recs: list[Rec]) -> bytes:
    if fmt == "local":
        return local_frames(recs)
    line = json_line if fmt == "json-file" else k8s_line
    return b"".join(line(r) for r in recs)


def starts(fmt: str, recs: list[Rec]) -> list[int]:
    """The offset of each record's line."""
    out, at = [], 0
    for r in recs:
        out.append(at)
        at += len(encode(fmt, [r]))
    return out


def search(path, fmt: FileFormat, since_ns: int, block: int = BLOCK_BYTES) -> tuple[int, int]:
    f = Opened.open(str(path), 0, False)
    try:
        searcher = Searcher(fmt, block)
        return searcher.search(f, since_ns), searcher.reads
    finally:
        f.close()


# Two streams, each in order, written interleaved; a line may reach the file up to GUARD after
# lines of the other stream stamped later (dockerd's per-stream copiers).
GUARD = 50


@st.composite
def two_streams(draw):
    steps = draw(st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=120))
    ts, recs, last = 1_000, [], {STDOUT: 0, STDERR: 0}
    for i, step in enumerate(steps):
        ts += step
        stream = draw(st.sampled_from([STDOUT, STDERR]))
        lag = draw(st.integers(min_value=0, max_value=GUARD))
        stamp = max(ts - lag, last[stream])  # in order within its stream
        last[stream] = stamp
        recs.append(Rec(stream, T0 + stamp, b"m%d" % i))
    return recs


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(two_streams(), st.integers(min_value=0, max_value=5000), st.sampled_from(sorted(FORMATS)))
def test_no_line_at_or_after_since_lies_before_the_answer(tmp_path, recs, since, fmt):
    path = tmp_path / f"search-{fmt}.log"
    path.write_bytes(encode(fmt, recs))
    since_ns = T0 + since
    at, _ = search(path, FORMATS[fmt], since_ns - GUARD, block=64)  # the caller's guard
    offsets = starts(fmt, recs)
    assert at in [*offsets, path.stat().st_size]
    assert all(r.ts_ns < since_ns for r, o in zip(recs, offsets, strict=True) if o < at)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=150),
    st.integers(min_value=0, max_value=400),
    st.sampled_from(sorted(FORMATS)),
)
def test_in_a_sorted_file_it_is_the_first_line_at_or_after_since(tmp_path, steps, since, fmt):
    ts, recs = 0, []
    for i, step in enumerate(steps):
        ts += step  # steps of 0: lines sharing a timestamp
        recs.append(Rec(STDOUT, T0 + ts, b"x" * (i % 7)))
    path = tmp_path / f"sorted-{fmt}.log"
    path.write_bytes(encode(fmt, recs))
    at, _ = search(path, FORMATS[fmt], T0 + since, block=48)
    offsets = starts(fmt, recs)
    first = next((o for r, o in zip(recs, offsets, strict=True) if r.ts_ns >= T0 + since), None)
    assert at == (path.stat().st_size if first is None else first)


# What a hostile container writes into a `local` log: lines that are whole frames, or runs of
# them, stamped at will (far past, far future), alone or amid other bytes.
_forged_entry = st.builds(
    lambda ts, msg: local_frames([Rec(STDOUT, ts, msg)]),
    st.integers(min_value=1, max_value=253402300799 * NS),
    st.binary(max_size=12),
)
_forged_line = st.one_of(
    st.lists(_forged_entry, min_size=1, max_size=4).map(b"".join),
    st.tuples(st.binary(max_size=6), _forged_entry, st.binary(max_size=6)).map(b"".join),
    st.binary(max_size=30),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=30), st.booleans(), _forged_line),
        min_size=1,
        max_size=80,
    ),
    st.integers(min_value=0, max_value=1500),
    st.sampled_from([16, 64, 4096]),
)
def test_local_lines_that_hold_forged_frames_never_move_the_answer(tmp_path, lines, since, block):
    """Whatever the lines hold, the answer is a real entry's start (or the end), and no real
    line stamped at or after `since` lies before it."""
    ts, recs = 0, []
    for step, stderr, message in lines:
        ts += step
        recs.append(Rec(STDERR if stderr else STDOUT, T0 + ts, message))
    path = tmp_path / "forged.log"
    path.write_bytes(encode("local", recs))
    at, _ = search(path, LOCAL, T0 + since, block=block)
    offsets = starts("local", recs)
    first = next((o for r, o in zip(recs, offsets, strict=True) if r.ts_ns >= T0 + since), None)
    assert at == (path.stat().st_size if first is None else first)


def test_local_a_clock_step_back_leads_to_the_first_line_stamped_since_in_file_order(tmp_path):
    # stamped 100..199, then the clock steps back: 50..299. A resume at b149 (a position inside
    # the step's window, core/cursor.py) searches for 149: the place is a149, before the step,
    # from where the cursor filter finds the window again (a150..b149 are skipped by position).
    recs = [Rec(STDOUT, T0 + t * NS // 1000, b"a%d" % t) for t in range(100, 200)]
    recs += [Rec(STDOUT, T0 + t * NS // 1000, b"b%d" % t) for t in range(50, 300)]
    path = tmp_path / "step.log"
    path.write_bytes(encode("local", recs))
    at, _ = search(path, LOCAL, T0 + 149 * NS // 1000, block=256)
    assert path.read_bytes()[at:].startswith(encode("local", [recs[49]]))  # a149


@pytest.mark.parametrize("tail", [b"", b"\x00\x00\x01\x00\n\x06stdout"])
def test_local_damage_or_an_unfinished_last_entry_parses_from_the_start(tmp_path, tail):
    recs = [Rec(STDOUT, T0 + i, b"m%d" % i) for i in range(200)]
    data = encode("local", recs)
    cut = starts("local", recs)[120]
    damaged = data[:cut] + b"\x00\x00\x00\x09garbage!!" + data[cut:] if not tail else data
    path = tmp_path / "damaged-local.log"
    path.write_bytes(damaged + tail)
    at, _ = search(path, LOCAL, T0 + 150, block=256)
    assert path.read_bytes()[at:].startswith(encode("local", [recs[150]]))


def test_damaged_lines_do_not_mislead_it(tmp_path):
    recs = [Rec(STDOUT, T0 + i, b"m%d" % i) for i in range(200)]
    data = encode("json-file", recs)
    cut = data.index(b"m100")
    path = tmp_path / "damaged.log"
    path.write_bytes(data[:cut] + b"\x00garbage\n{not json}\n" + data[cut:])
    at, _ = search(path, JSON_FILE, T0 + 150, block=256)
    assert path.read_bytes()[at:].startswith(json_line(recs[150]))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_50_mb_file_is_searched_in_o_log_n_reads_or_reads_only_what_follows(tmp_path, fmt, capsys):
    """Newline formats: O(log n) reads. local walks back: it reads the bytes after the answer
    (which the reader reads next anyway) and no more."""
    # 50 MB of lines of 115-140 bytes, one stamped every millisecond; every fifth on stderr
    one = len(encode(fmt, [Rec(STDOUT, T0, b"%060d" % 0)]))
    count = 50_000_000 // one
    recs = [Rec(STDOUT + (i % 5 == 0), T0 + i * NS // 1000, b"%060d" % i) for i in range(count)]
    pieces = [encode(fmt, [r]) for r in recs]
    offsets = list(itertools.accumulate((len(p) for p in pieces), initial=0))
    path = tmp_path / "big.log"
    path.write_bytes(b"".join(pieces))
    size = path.stat().st_size
    bound = 2 * math.ceil(math.log2(size / BLOCK_BYTES)) + 4
    for i in (0, 1, count // 3, count - 2, count):
        t = time.perf_counter()
        at, reads = search(path, FORMATS[fmt], T0 + i * NS // 1000)
        took = time.perf_counter() - t
        assert at == offsets[i]
        if fmt == "local":  # and the look for a clock step's window before the answer
            bound = math.ceil((size - at) / BLOCK_BYTES) + 2 + BACK_SCAN_BYTES // (256 << 10)
        assert reads <= bound, (reads, bound)
        with capsys.disabled():
            print(
                f"\n{fmt} {size / 1e6:.0f} MB, since line {i}: {reads} reads, {took * 1e3:.2f} ms"
            )


def test_start_at_picks_the_file_then_the_line(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    log = Writer(str(d / "c-json.log"))
    for _ in range(3):
        log.lines(100)
        log.rotate()
    log.lines(100)  # line-i is stamped T0 + i ms; P.3 holds 0-99 .. P holds 300-399
    with NumberedFiles(log.path, JSON_FILE) as fs:
        fid, at = fs.start_at(T0 + 150 * NS // 1000)
        assert fid.ino == os.stat(log.path + ".2").st_ino
        r = Reader(fs)
        assert r.drain() == names(250, 150)
        assert fs.search_reads <= 6
    with NumberedFiles(log.path, JSON_FILE) as fs:
        fs.start_at(0)  # before everything: the oldest file, from its start
        assert Reader(fs).drain() == names(400)
    with NumberedFiles(log.path, JSON_FILE) as fs:
        fid, at = fs.start_at(T0 + 10**6 * NS)  # after everything: the end of the current file
        assert (fid.ino, at) == (os.stat(log.path).st_ino, os.path.getsize(log.path))
        assert Reader(fs).drain() == []


def test_start_at_in_a_compressed_file_starts_at_its_beginning(tmp_path):
    log = Writer(str(tmp_path / "x.log"))
    log.lines(50)
    log.rotate(compress=True)
    log.lines(50)
    with NumberedFiles(log.path, JSON_FILE) as fs:
        fid, at = fs.start_at(T0 + 20 * NS // 1000)
        assert fid.compressed and at == 0
        assert Reader(fs).drain() == names(100)
    with gzip.open(log.path + ".1.gz") as f:
        assert f.read().count(b"\n") == 50


def test_start_at_after_the_directory_is_gone_uses_the_held_file(tmp_path):
    d = tmp_path / "gone"
    d.mkdir()
    log = Writer(str(d / "gone-json.log"))
    fd = os.open(log.path, os.O_RDONLY)
    log.lines(30)
    os.remove(log.path)
    d.rmdir()
    with NumberedFiles(log.path, JSON_FILE, fd=fd) as fs:
        fs.start_at(T0 + 10 * NS // 1000)
        assert Reader(fs).drain() == names(20, 10)


MS = NS // 1000


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.integers(min_value=0, max_value=40) | st.integers(min_value=-5000, max_value=-1),
        min_size=1,
        max_size=150,
    ),
    st.integers(min_value=-6000, max_value=6000),
    st.sampled_from(sorted(FORMATS)),
)
def test_after_a_clock_step_back_it_is_still_the_first_line_at_or_after_since(
    tmp_path, steps, since, fmt
):
    """The wall clock stepped back (negative steps, up to 5 s) while the container wrote: the
    lines of a step's window, stamped below `since`, must not mislead the binary search past
    the earlier lines stamped `since` or later (they would be skipped on resume)."""
    ts, recs = 0, []
    for i, step in enumerate(steps):
        ts += step
        recs.append(Rec(STDOUT, T0 + ts * MS, b"y" * (i % 5)))
    path = tmp_path / f"stepped-{fmt}.log"
    path.write_bytes(encode(fmt, recs))
    at, _ = search(path, FORMATS[fmt], T0 + since * MS, block=48)
    offsets = starts(fmt, recs)
    first = next(
        (o for r, o in zip(recs, offsets, strict=True) if r.ts_ns >= T0 + since * MS), None
    )
    assert at == (path.stat().st_size if first is None else first)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_a_step_back_in_a_large_file_is_found_in_a_bounded_scan(tmp_path, fmt):
    """10,000 lines every 10 ms, then the clock steps back 5 s and 2,000 more follow: resuming
    at the last line before the step finds it, not a place inside the step's window."""
    recs = [Rec(STDOUT, T0 + i * 10 * MS, b"%040d" % i) for i in range(10_000)]
    back = recs[-1].ts_ns - 5 * NS
    recs += [Rec(STDOUT, back + i * 10 * MS, b"%040d" % (10_000 + i)) for i in range(2_000)]
    path = tmp_path / f"step-{fmt}.log"
    path.write_bytes(encode(fmt, recs))
    since = recs[9_999].ts_ns - 2 * NS  # the reorder guard below the last line before the step
    at, reads = search(path, FORMATS[fmt], since)
    assert at == starts(fmt, recs)[9_799]  # stamped exactly `since`
    if fmt != "local":  # local reads what follows the answer (see the 50 MB test)
        assert reads <= 2 * math.ceil(math.log2(path.stat().st_size / BLOCK_BYTES)) + 4


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_a_steps_window_that_reaches_a_files_start_goes_on_in_the_files_before(tmp_path, fmt):
    """Lines to 10 s, a rotation, lines from 9 s (the clock stepped back), another rotation:
    resuming at 9.5 s (the guard below the last line before the step), the newest file whose
    first line is before it is the one after the step, but the lines stamped 9.5 s or later
    are in the one before, back past a file of the window."""
    pieces = [
        [Rec(STDOUT, T0 + i * 100 * MS, b"a%d" % i) for i in range(101)],  # 0 .. 10 s
        [Rec(STDOUT, T0 + 9 * NS + i * MS, b"b%d" % i) for i in range(5)],  # from 9 s
        [Rec(STDOUT, T0 + 9 * NS + (5 + i) * MS, b"c%d" % i) for i in range(5)],
    ]
    path = str(tmp_path / "x.log")
    for i, piece in enumerate(pieces):
        if i:
            if os.path.exists(path + ".1"):
                os.rename(path + ".1", path + ".2")
            os.rename(path, path + ".1")
        with open(path, "wb") as f:
            f.write(encode(fmt, piece))
    with NumberedFiles(path, FORMATS[fmt]) as fs:
        fid, at = fs.start_at(T0 + 9_500 * MS)
        assert fid.ino == os.stat(path + ".2").st_ino
        assert at == starts(fmt, pieces[0])[95]
        assert fs.search_reads <= 8


def test_without_a_step_the_look_into_the_file_before_is_bounded_as_within_a_file(tmp_path):
    log = Writer(str(tmp_path / "x.log"))
    log.lines(20_000)  # 20 s of lines, one a millisecond, about 1.4 MB
    log.rotate()
    log.lines(10)  # a new file, all of it within a step's reach of `since`
    with NumberedFiles(log.path, JSON_FILE) as fs:
        fid, _ = fs.start_at(T0 + 20_005 * MS)
        assert fid.ino == os.stat(log.path).st_ino
        assert Reader(fs).drain() == names(5, 20_005)
        # the file's first line, the search in it, then the look back: at most BACK_SCAN_BYTES,
        # as in one file (the lines of the 10 s before `since` are more than that here)
        assert fs.search_reads <= 3 + BACK_SCAN_BYTES // (256 * 1024)
