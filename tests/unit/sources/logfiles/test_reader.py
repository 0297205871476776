"""FileReader's per-line loop on recorded byte streams: files -> parser -> cursor filter -> fast
path or joiner -> queue, on real files rotated the way dockerd rotates them.

The reader runs on the test's thread (`_main`, as its thread would) for a container already
removed: it reads what the files hold, flushes a line left unfinished, queues EndOfStream and
returns, without the Engine API and without waiting for anything.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor, Position
from bridge.core.fields import ContainerInfo
from bridge.core.queue import Batch, EndOfStream, PendingQueue
from bridge.core.record import STDERR, STDOUT, Record
from bridge.sources.logfiles.formats.jsonfile import JSON_FILE
from bridge.sources.logfiles.formats.lines import FileFormat
from bridge.sources.logfiles.reader import _ARMED_SECONDS, FileReader
from bridge.sources.logfiles.readloop import ReadLoop
from bridge.sources.logfiles.rotation import READ_BYTES, Chunk, FileSet
from bridge.sources.logfiles.rotation.identity import FileId
from bridge.sources.logfiles.rotation.numbered import NumberedFiles
from bridge.sources.logfiles.rotation.search import BLOCK_BYTES
from bridge.telemetry import Telemetry

from .encode import T0, Rec, json_line
from .rotating import Writer

CID = "c0ffee" * 10 + "abcd"
MAX_LINE_BYTES = 1 << 20


class NoEngine:
    """The Engine API of a removed container: the reader must not need to ask it anything."""

    def inspect_container(self, container_id: str) -> object:
        raise AssertionError("a removed container's reader asked the engine")


@dataclass
class Chunked:
    """A FileSet that reads at most `sizes[i]` bytes at its i-th read (then the last size
    again): chunk boundaries wherever a test puts them, on top of the file boundaries."""

    files: FileSet
    sizes: list[int]
    reads: int = 0

    @property
    def format(self) -> FileFormat:
        return self.files.format

    @property
    def gaps(self) -> int:
        return self.files.gaps

    @property
    def position(self) -> tuple[FileId, int]:
        return self.files.position

    def read(self, max_bytes: int = READ_BYTES) -> Chunk:
        size = self.sizes[min(self.reads, len(self.sizes) - 1)]
        self.reads += 1
        return self.files.read(min(size, max_bytes))

    def start_at(self, since_ns: int, marks: Mapping[int, int] | None = None) -> tuple[FileId, int]:
        return self.files.start_at(since_ns, marks)

    def settle(self, timeout: float = 1.0) -> bool:
        return self.files.settle(timeout)

    def handed_over(self, timeout: float) -> None:
        self.files.handed_over(timeout)

    def close(self) -> None:
        self.files.close()


@dataclass
class Run:
    records: list[Record]
    end: EndOfStream
    read_cursor: Cursor
    telemetry: Telemetry

    def sample(self, name: str, **labels: str) -> float:
        value = self.telemetry.registry.get_sample_value(f"journald_bridge_{name}", labels)
        return value or 0.0


def read(files: FileSet, cursor: Cursor | None = None) -> Run:
    """What a reader queues for a removed container whose log is `files`, from `cursor`."""
    info = ContainerInfo(CID, "web", "busybox", "sha256:x")
    handle = ContainerHandle.create(info, b"", Cursor(), None)
    handle.read_cursor = cursor
    handle.removed = True
    handle.finished_at = "2026-12-02T08:12:31Z"
    queue = PendingQueue(1 << 30)
    telemetry = Telemetry(CollectorRegistry())
    closed: list[bool] = []
    reader = FileReader(
        NoEngine(),  # type: ignore[arg-type]
        handle,
        files,
        queue,
        telemetry,
        MAX_LINE_BYTES,
        lambda on_change: False,  # no inotify wake-up: a removed container needs none
        lambda: closed.append(True),
    )
    reader._main()
    assert closed == [True] and reader.finished
    items = queue.get_many(0, 1 << 62)
    assert isinstance(items[-1], EndOfStream)
    assert all(isinstance(item, Batch) for item in items[:-1])
    records = [r for item in items[:-1] if isinstance(item, Batch) for r in item.records]
    assert handle.read_cursor is not None
    return Run(records, items[-1], handle.read_cursor, telemetry)


def append(path: str, recs: list[Rec]) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(json_line(r) for r in recs))


def test_a_line_cut_by_a_rotation_comes_out_once_joined(tmp_path):
    """dockerd cut a long line into pieces, and rotated between two of them: the first piece
    is the last line of the file renamed to P.1, the piece that ends the line is the first of
    the new P. The joiner holds the first piece across the rotation."""
    log = Writer(str(tmp_path / f"{CID}-json.log"))
    append(
        log.path,
        [
            Rec(STDOUT, T0, b"before"),
            Rec(STDERR, T0 + 1, b"an error"),
            Rec(STDOUT, T0 + 2, b"the first piece, ", complete=False),
        ],
    )
    files = NumberedFiles(log.path, JSON_FILE)  # the watcher opened P before the rotation
    log.rotate()
    append(
        log.path,
        [
            Rec(STDOUT, T0 + 3, b"then its end"),
            Rec(STDOUT, T0 + 4, b"after"),
        ],
    )

    run = read(files)

    assert [(r.stream, r.message) for r in run.records] == [
        (STDOUT, b"before"),
        (STDERR, b"an error"),
        (STDOUT, b"the first piece, then its end"),
        (STDOUT, b"after"),
    ]
    joined = run.records[2]
    assert (joined.first, joined.last) == ((T0 + 2, 1), (T0 + 3, 1))  # the two pieces
    assert joined.timestamp.startswith(b"2026-12-02T08:12:30.000000002")  # the first piece's
    assert run.read_cursor.streams == {STDOUT: (T0 + 4, 1), STDERR: (T0 + 1, 1)}
    assert run.sample("rotation_gaps_total") == 0
    assert run.sample("lines_dropped_total", reason="malformed") == 0

    # A restart from where this reader got: nothing comes out twice.
    again = NumberedFiles(log.path, JSON_FILE)
    assert read(again, run.read_cursor).records == []


def test_a_line_left_unfinished_at_the_end_is_the_last_output(tmp_path):
    log = Writer(str(tmp_path / f"{CID}-json.log"))
    append(log.path, [Rec(STDOUT, T0, b"piece one ", complete=False)])
    files = NumberedFiles(log.path, JSON_FILE)
    log.rotate()
    append(log.path, [Rec(STDOUT, T0 + 1, b"piece two", complete=False)])

    run = read(files)

    assert [(r.message, r.first, r.last) for r in run.records] == [
        (b"piece one piece two", (T0, 1), (T0 + 1, 1))
    ]
    assert run.end.finished_at == "2026-12-02T08:12:31Z"


# -- every line once, in order, joined: wherever chunks and rotations cut the stream ------------

text = st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=12)


@st.composite
def logs(draw: st.DrawFn, new_time_at_rotation: bool = False) -> tuple[list[Rec], list[int]]:
    """Pieces as dockerd writes them (each a json-file line; a line without its newline goes on
    in the stream's next piece), stamped in order, some at the same nanosecond; and where the
    file was rotated: after which pieces (0 to 3 rotations, no file lost). With
    `new_time_at_rotation`, no timestamp is in two files (see the second xfail below)."""
    recs: list[Rec] = []
    ts = T0
    for _ in range(draw(st.integers(min_value=1, max_value=30))):
        ts += draw(st.sampled_from([0, 0, 1, 1000]))
        complete = draw(st.booleans())
        message = draw(text).encode()
        if not complete and not message:
            message = b"-"  # dockerd writes no empty piece
        recs.append(Rec(draw(st.sampled_from([STDOUT, STDERR])), ts, message, complete))
    # dockerd rotates just before it writes: no rotated file is empty (see the xfail below).
    rotations = sorted(draw(st.sets(st.integers(min_value=1, max_value=len(recs)), max_size=3)))
    if new_time_at_rotation:
        recs = [
            Rec(r.stream, r.ts_ns + sum(i >= cut for cut in rotations), r.message, r.complete)
            for i, r in enumerate(recs)
        ]
    return recs, rotations


def joined(recs: list[Rec]) -> list[tuple[int, bytes, Position, Position]]:
    """What the reader must queue: each line once, joined, when its last piece is read; lines
    left unfinished at the end last, by stream. Positions count pieces per timestamp, per
    stream, as the cursor filter does."""
    out = []
    seen: dict[int, Position] = {}
    pending: dict[int, tuple[list[bytes], Position]] = {}
    for rec in recs:
        ts, k = seen.get(rec.stream, (-1, 0))
        position = (rec.ts_ns, k + 1 if ts == rec.ts_ns else 1)
        seen[rec.stream] = position
        pieces, first = pending.pop(rec.stream, ([], position))
        pieces.append(rec.message)
        if rec.complete:
            out.append((rec.stream, b"".join(pieces), first, position))
        else:
            pending[rec.stream] = (pieces, first)
    for stream in sorted(pending):
        pieces, first = pending[stream]
        out.append((stream, b"".join(pieces), first, seen[stream]))
    return out


def write_rotated(directory: str, recs: list[Rec], rotations: list[int]) -> NumberedFiles:
    """Writes the pieces, rotating after the given ones; the set is opened on the first file
    (as the watcher opens it the moment it appears), so it starts at the oldest."""
    log = Writer(os.path.join(directory, f"{CID}-json.log"), max_files=len(rotations) + 2)
    cuts = [0, *rotations, len(recs)]
    files: NumberedFiles | None = None
    for i, (start, end) in enumerate(itertools.pairwise(cuts)):
        if i:
            log.rotate()
        append(log.path, recs[start:end])
        if files is None:
            files = NumberedFiles(log.path, JSON_FILE)
    assert files is not None
    return files


def got(records: list[Record]) -> list[tuple[int, bytes, Position, Position]]:
    return [(r.stream, r.message, r.first, r.last) for r in records]


@settings(max_examples=150, deadline=None)
@given(logs(), st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=40))
def test_every_line_comes_out_once_in_order_joined_wherever_reads_cut(log, sizes):
    recs, rotations = log
    with tempfile.TemporaryDirectory() as d:
        run = read(Chunked(write_rotated(d, recs, rotations), sizes))
    assert got(run.records) == joined(recs)
    assert run.sample("rotation_gaps_total") == 0
    assert run.sample("lines_dropped_total", reason="malformed") == 0


@settings(max_examples=100, deadline=None)
@given(logs(new_time_at_rotation=True), st.data())
def test_a_restart_from_any_line_repeats_and_loses_nothing(log, data):
    """The cursor after any line read (the journal has every line up to it): a new reader
    positions itself with a binary search and its cursor filter skips what was read."""
    recs, rotations = log
    expected = joined(recs)
    done = data.draw(st.integers(min_value=0, max_value=len(expected)), label="lines written")
    streams: dict[int, Position] = {}
    for stream, _, _, last in expected[:done]:
        streams[stream] = max(last, streams.get(stream, last))
    sizes = data.draw(st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=20))
    with tempfile.TemporaryDirectory() as d:
        files = Chunked(write_rotated(d, recs, rotations), sizes)
        run = read(files, Cursor(streams=streams))
    assert got(run.records) == [
        line for line in expected if line[3] > streams.get(line[0], (-1, 0))
    ]
    assert run.sample("rotation_gaps_total") == 0


def test_an_empty_rotated_file_does_not_end_a_removed_containers_read(tmp_path):
    """An empty rotated file is read through, not taken for "at the end for now" (which would
    end a removed container's read before its newer files)."""
    recs = [Rec(STDOUT, T0, b"one"), Rec(STDOUT, T0 + 1, b"two")]
    run = read(write_rotated(str(tmp_path), recs, [1, 1]))
    assert [r.message for r in run.records] == [b"one", b"two"]


def test_a_restart_at_a_timestamp_two_files_share_loses_nothing(tmp_path):
    """Lines stamped `since` can end the file before the one whose first line is stamped
    `since` (conmon stamps all lines of one read alike and may rotate between them): start_at
    takes the newest file whose first line is strictly before `since`, so the cursor filter sees
    every line at that timestamp and skips exactly the cursor's k."""
    recs = [
        Rec(STDERR, T0, b"x"),
        Rec(STDOUT, T0, b"a"),
        Rec(STDOUT, T0, b"b"),  # the file rotated between a and b, stamped alike
        Rec(STDERR, T0 + 1, b"c"),
    ]
    written = Cursor(streams={STDERR: (T0, 1), STDOUT: (T0, 1)})  # x and a are in the journal
    run = read(write_rotated(str(tmp_path), recs, [2]), written)
    assert [r.message for r in run.records] == [b"b", b"c"]
    assert run.sample("rotation_gaps_total") == 0


def test_a_clock_step_back_loses_no_line_live_or_on_a_restart_inside_its_window(tmp_path, caplog):
    """r27: 100 lines from 10 s, then the clock steps back 3 s and 200 more follow."""
    ms = 1_000_000
    recs = [Rec(STDOUT, T0 + 10_000 * ms + i * 20 * ms, b"line %d" % i) for i in range(100)]
    recs += [Rec(STDOUT, T0 + 9_000 * ms + i * 20 * ms, b"line %d" % (100 + i)) for i in range(200)]
    path = str(tmp_path / "c-json.log")
    append(path, recs)
    run = read(NumberedFiles(path, JSON_FILE))
    assert [r.message for r in run.records] == [r.message for r in recs]
    assert run.sample("clock_steps_total", source="files") == 1
    assert caplog.text.count("stepped back by 2.980 s") == 1
    # A restart from any line of the window (where the crash left the journal's last entry)
    for cut in (99, 100, 130, 148, 149, 150, 299):
        last = run.records[cut].last
        resumed = read(NumberedFiles(path, JSON_FILE), Cursor(0, {STDOUT: last}))
        assert [r.message for r in resumed.records] == [r.message for r in recs[cut + 1 :]], cut


@st.composite
def stepping_logs(draw: st.DrawFn, rotate: bool) -> tuple[list[Rec], list[int]]:
    """Like `logs`, but the wall clock may step back by up to 3 s between two pieces."""
    recs: list[Rec] = []
    ts = T0 + 10 * 10**9
    for _ in range(draw(st.integers(min_value=1, max_value=30))):
        ts += draw(st.sampled_from([0, 1, 1000, -(10**9), -3 * 10**9]))
        complete = draw(st.booleans())
        message = draw(text).encode() or b"-"
        recs.append(Rec(draw(st.sampled_from([STDOUT, STDERR])), ts, message, complete))
    limit = len(recs) if rotate else 0
    rotations = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(1, limit)), max_size=3)))
    return recs, rotations if rotate else []


@settings(max_examples=150, deadline=None)
@given(st.booleans().flatmap(lambda rotate: stepping_logs(rotate)), st.data())
def test_after_clock_steps_every_line_comes_out_once_and_a_restart_anywhere_resumes(log, data):
    recs, rotations = log
    sizes = data.draw(st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=20))
    with tempfile.TemporaryDirectory() as d:
        run = read(Chunked(write_rotated(d, recs, rotations), sizes))
        lines = [(r.stream, r.message) for r in run.records]
        assert lines == [(s, m) for s, m, _, _ in joined(recs)]
        done = data.draw(st.integers(min_value=0, max_value=len(run.records)), label="written")
        streams: dict[int, Position] = {}
        for r in run.records[:done]:
            streams[r.stream] = max(r.last, streams.get(r.stream, r.last))
    with tempfile.TemporaryDirectory() as d:
        again = read(Chunked(write_rotated(d, recs, rotations), sizes), Cursor(streams=streams))
    assert [(r.stream, r.message) for r in again.records] == [
        (r.stream, r.message) for r in run.records if r.last > streams.get(r.stream, (-1, 0))
    ]


def test_a_restart_inside_a_window_that_spans_a_rotation(tmp_path):
    """start_at picks the newest file whose first line is stamped before `since`, the one after
    the rotation; the line that set the highest stamp is in the file before it, where the
    search's look for a step's window goes on (its window reaches the file's start)."""
    recs = [Rec(STDOUT, T0 + 10 * 10**9, b"before the step")]
    recs += [Rec(STDOUT, T0 + 7 * 10**9, b"after the step %d" % i) for i in range(2)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run = read(write_rotated(str(tmp_path / "a"), recs, [1]))
    resumed = Cursor(streams={STDOUT: run.records[0].last})
    again = read(write_rotated(str(tmp_path / "b"), recs, [1]), resumed)
    assert [r.message for r in again.records] == [b"after the step 0", b"after the step 1"]


@pytest.mark.parametrize("rotate", [False, True])
def test_a_restart_deep_inside_a_long_window_after_a_large_step(tmp_path, rotate):
    """A step back by 60 s, then a window of 20 s of stamps and 4.6 MB of lines (past the
    back-scan's usual bounds), optionally rotated in its middle: a restart from its late lines
    looks back for the line that set the mark (Cursor.marks) and loses nothing."""
    ms, pad = 1_000_000, b"x" * 150
    recs = [Rec(STDOUT, T0 + 100_000 * ms + i * 20 * ms, b"before %d" % i) for i in range(100)]
    recs += [Rec(STDOUT, T0 + 40_000 * ms + i * ms, b"in %d %s" % (i, pad)) for i in range(20_000)]
    recs.append(Rec(STDOUT, T0 + 200_000 * ms, b"after the window"))
    (tmp_path / "a").mkdir()
    run = read(write_rotated(str(tmp_path / "a"), recs, [10_100] if rotate else []))
    assert len(run.records) == len(recs)
    for cut in (15_000, 20_099):
        last = run.records[cut].last
        assert len(last) == 5  # inside the window
        d = tmp_path / f"b{cut}"
        d.mkdir()
        again = read(
            write_rotated(str(d), recs, [10_100] if rotate else []), Cursor(0, {STDOUT: last})
        )
        assert [r.message for r in again.records] == [r.message for r in recs[cut + 1 :]], cut
        assert again.sample("rotation_gaps_total") == 0


def test_a_restart_just_after_a_large_step_reads_no_more_than_a_usual_one(tmp_path):
    """The binary search's answer lies before the mark's line (before the step, lines stamped
    between the resume line and the mark): the mark is found ahead of it, reading what the
    reader reads next anyway (the newest file, here), and the scan back keeps the usual bound
    instead of going through every older file for it."""
    ms, pad = 1_000_000, b"x" * 150
    recs = [Rec(STDOUT, T0 + i * 5 * ms, b"old %d %s" % (i, pad)) for i in range(40_000)]
    hw = recs[-1].ts_ns
    recs += [Rec(STDOUT, hw - 60_000 * ms + i * 5 * ms, b"in %d" % i) for i in range(200)]
    rotations = [10_000, 20_000, 30_000]
    for d in "abcd":
        (tmp_path / d).mkdir()
    run = read(write_rotated(str(tmp_path / "a"), recs, rotations))
    cut = len(recs) - 100
    cursor = Cursor(0, {STDOUT: run.records[cut].last})
    files = write_rotated(str(tmp_path / "b"), recs, rotations)
    files.start_at(cursor.since_ns(), cursor.marks())
    plain = write_rotated(str(tmp_path / "c"), recs, rotations)
    plain.start_at(cursor.since_ns())
    newest = os.path.getsize(tmp_path / "b" / f"{CID}-json.log")
    ahead = -(-newest // BLOCK_BYTES)  # the blocks the look ahead may read
    assert files.search_reads <= plain.search_reads + ahead + 1, (files.search_reads, ahead)
    again = read(write_rotated(str(tmp_path / "d"), recs, rotations), cursor)
    assert [r.message for r in again.records] == [r.message for r in recs[cut + 1 :]]


class StepByStep:
    """A read loop the test runs by hand, with a one-shot write watch it fires by hand."""

    def __init__(self) -> None:
        self.armed: list[Callable[[], None]] = []  # the watch's callbacks while it is armed

    def follow(self, on_change: Callable[[], None]) -> bool:
        self.armed.append(on_change)
        return True

    def write_event(self) -> None:
        """A write: the one-shot watch fires once, and is gone."""
        callbacks, self.armed = self.armed, []
        for cb in callbacks:
            cb()

    def add(self, task: object) -> None: ...

    def wake(self, task: object) -> None: ...

    def after_each_pass(self, fn: Callable[[], None]) -> None: ...

    def forget(self, on_write: Callable[[], None]) -> None: ...


def test_on_the_read_loop_a_reader_never_waits_without_its_wake_up_armed(tmp_path):
    """A catch-up yields between steps; a write that wakes the reader meanwhile uses up its
    one-shot watch, which must be armed again before the reader waits (not only after a
    wait): else the next line alone waits for the safety-net timer."""
    path = str(tmp_path / f"{CID}-json.log")
    open(path, "wb").close()
    loop = StepByStep()
    info = ContainerInfo(CID, "web", "busybox", "sha256:x")
    handle = ContainerHandle.create(info, b"", Cursor(), None)
    queue = PendingQueue(1 << 30)
    reader = FileReader(
        NoEngine(),  # type: ignore[arg-type]
        handle,
        NumberedFiles(path, JSON_FILE),
        queue,
        Telemetry(CollectorRegistry()),
        MAX_LINE_BYTES,
        loop.follow,
        lambda: None,
        loop=loop,  # type: ignore[arg-type]
    )
    reader.start()
    # at the end: armed, waiting
    assert reader.step() == pytest.approx(_ARMED_SECONDS) and loop.armed
    burst = 5 * READ_BYTES // 100  # a catch-up of several steps
    append(path, [Rec(STDOUT, T0 + i, b"x" * 90) for i in range(burst)])
    loop.write_event()
    waits = [reader.step()]
    assert waits == [0.0]  # a catch-up's first step: the others' turn
    append(path, [Rec(STDOUT, T0 + burst, b"alone")])
    loop.write_event()  # written during the catch-up: the watch armed on waking is used up
    while waits[-1] == 0.0:
        waits.append(reader.step())
    assert waits[-1] == pytest.approx(_ARMED_SECONDS)
    assert loop.armed, "the reader waits with no wake-up armed"
    messages = [r.message for item in queue.get_many(0, 1 << 62) for r in item.records]
    assert messages[-1] == b"alone" and len(messages) == burst + 1


class SlowToSettle(Chunked):
    """A file set whose wait for the watcher takes until the test says."""

    def __init__(self, files: FileSet) -> None:
        super().__init__(files, [READ_BYTES])
        self.release = threading.Event()
        self.waiting = threading.Event()

    def handed_over(self, timeout: float) -> None:
        self.waiting.set()
        self.release.wait(10)


class Ticker:
    def __init__(self) -> None:
        self.steps = 0

    def step(self) -> float | None:
        self.steps += 1
        return 0.01


def test_on_the_read_loop_a_container_that_ends_holds_no_other_reader_back(tmp_path):
    """Its wait for the watcher (settle) runs on a helper thread; the loop steps the others
    meanwhile, and the reader ends once the wait is over."""
    path = str(tmp_path / f"{CID}-json.log")
    append(path, [Rec(STDOUT, T0, b"last words")])
    files = SlowToSettle(NumberedFiles(path, JSON_FILE))
    info = ContainerInfo(CID, "web", "busybox", "sha256:x")
    handle = ContainerHandle.create(info, b"", Cursor(), None)
    handle.removed = True
    queue = PendingQueue(1 << 30)
    loop = ReadLoop(gather_seconds=0.001)
    loop.start()
    other = Ticker()
    try:
        loop.add(other)
        reader = FileReader(
            NoEngine(),  # type: ignore[arg-type]
            handle,
            files,
            queue,
            Telemetry(CollectorRegistry()),
            MAX_LINE_BYTES,
            lambda on_change: False,
            lambda: None,
            loop=loop,
        )
        reader.start()
        assert files.waiting.wait(5)
        before = other.steps
        time.sleep(0.2)
        assert other.steps > before + 5, "the loop waited with the settling reader"
        assert not reader.finished
        files.release.set()
        reader.join(5)
        assert reader.finished
        items = queue.get_many(0, 1 << 62)
        assert [r.message for i in items if isinstance(i, Batch) for r in i.records] == [
            b"last words"
        ]
        assert isinstance(items[-1], EndOfStream)
    finally:
        files.release.set()
        loop.stop()
