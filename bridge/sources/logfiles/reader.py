"""The log-file source: one reader per container, from the engine's own log files.

A reader gets the container's `FileSet` (the current file, often opened the moment it
appeared, and its rotated predecessors), positions it at the handle's cursor with a binary
search (never a scan of the whole log), and reads: parser -> cursor filter -> partial-line
joiner -> queue, exactly like the API source, so positions mean the same whichever source read
a line. At the end of the file it arms a one-shot inotify wake-up (watch.py) and waits.

Its reading is a generator of steps (`_steps`): each step reads to the end of what the files
hold and yields how long it may wait. The engine's read loop (readloop.py) runs the steps of
every container's reader on one thread, so a line that comes alone costs no thread hand-over
of its own; a catch-up yields every `_CHUNKS_PER_STEP` chunks, so others are read meanwhile.
Without a loop (tests, tools, the Kubernetes source) a reader runs its steps on a thread of its
own.

When does a container's log end? When the engine says it stopped (`die`, or the writer closed
the file), the reader reads to the end and asks the engine: not running means one last
EndOfStream with its FinishedAt, as the API source does; removed means the same without asking.
A removed container's file is still readable through the descriptor held since it appeared:
everything it wrote is read before the reader ends. Before either, the file set settles (the
watcher hands over every file the kernel has announced: Podman's replaced files have no name).

A line the container left unfinished at its end is its last output: the joiner's pieces come
out as one record at that EndOfStream (ReaderThread._last_output). conmon writes a `P` line
without its `F` when a container dies mid-line, and dockerd a piece without a newline. Its
position is its last piece's, so once the journal has it, a restart's cursor skips every piece
and there is nothing left to flush: it comes out once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator

import docker
import docker.errors

from bridge.core.container import ContainerHandle
from bridge.core.cursor import CursorFilter
from bridge.core.queue import PendingQueue
from bridge.core.record import Record
from bridge.sources.engine_api import ENGINE_ERRORS, ContainerStatus, container_status
from bridge.sources.logfiles.formats.lines import FileLine, LineParser
from bridge.sources.logfiles.readloop import ReadLoop
from bridge.sources.logfiles.rotation import SETTLE_SECONDS, FileSet
from bridge.sources.reader import ReaderThread
from bridge.telemetry import Telemetry

log = logging.getLogger(__name__)

# Without a wake-up armed (no watch on the file), how often to look for more; with one, a
# safety net against a lost event: hundreds of idle readers must cost next to nothing.
_POLL_SECONDS = 0.25
_ARMED_SECONDS = 30.0
# The engine is asked whether the container still runs when it says it stopped (`die`), and
# otherwise this rarely, should a `die` be missed: an inspect is the costliest thing here.
_STATE_CHECK_SECONDS = 300.0
# On a thread of its own, after a wake-up, wait this long before reading: a writer's lines of
# the next moments come in one read and one batch instead of a wake-up, a read and a batch each
# (the read loop gathers its wake-ups instead).
_LINGER_SECONDS = 0.002
# A catch-up yields to the other readers of the loop after this many chunks (of READ_BYTES).
_CHUNKS_PER_STEP = 4

# Arms a one-shot wake-up for the container's log; False when none can be armed.
Follow = Callable[[Callable[[], None]], bool]


class FileReader(ReaderThread):
    source = "files"

    def __init__(
        self,
        api: docker.APIClient | None,
        handle: ContainerHandle,
        files: FileSet,
        queue: PendingQueue,
        telemetry: Telemetry,
        max_line_bytes: int,
        follow: Follow,
        on_close: Callable[[], None],
        *,
        status: ContainerStatus | None = None,
        status_of: Callable[[], ContainerStatus | None] | None = None,
        loop: ReadLoop | None = None,
    ) -> None:
        """`api` answers whether the container still runs; a source without an Engine API (the
        Kubernetes one asks CRI) passes `status_of` instead. `loop`: the steps run there, not
        on a thread of its own."""
        super().__init__(handle, queue, telemetry, max_line_bytes)
        self._api = api
        self._status_of = status_of
        self._files = files
        self._follow = follow
        self._on_close = on_close
        self._loop = loop
        self._stepping: Iterator[float] | None = None  # on the loop
        self._done = threading.Event()  # the loop ran its last step
        self._changed = threading.Event()  # on a thread of its own: woken
        # The engine said it stopped, or it was not running when the reader was made: ask the
        # engine at the end of the file. Asked anyway now and then, should a `die` be missed.
        self._check_state = status is not None and not status.running
        self._next_state_check = time.monotonic() + _STATE_CHECK_SECONDS
        self._armed: bool | None = None  # a wake-up is armed (True), could not be (False)
        self._malformed_seen = 0

    @property
    def started(self) -> bool:
        return self._stepping is not None or super().started

    def _begin(self) -> None:
        if self._loop is None:
            super()._begin()
            return
        self._stepping = self._life()
        self._announce = False  # the loop wakes the writer once a pass
        self._loop.after_each_pass(self._queue.announce)
        self._loop.add(self)

    def join(self, timeout: float) -> None:
        if self._loop is None:
            super().join(timeout)
        elif self._stepping is not None:
            self._done.wait(timeout)

    def step(self) -> float | None:
        """The read loop's call: one step; None once the reader is done."""
        assert self._stepping is not None
        try:
            return next(self._stepping)
        except StopIteration:
            self._done.set()
            return None

    def container_stopped(self) -> None:
        self._check_state = True
        self._on_change()

    def stop(self) -> None:
        super().stop()
        self._on_change()

    def _on_change(self) -> None:
        # The wake-up was one-shot: whatever this reader does now (a catch-up's next step,
        # say), it arms again before it waits.
        self._armed = None
        if self._loop is not None and self._stepping is not None:
            self._loop.wake(self)
        else:
            self._changed.set()

    def _wait(self, seconds: float) -> None:
        if self._changed.wait(seconds):
            time.sleep(_LINGER_SECONDS)

    def _steps(self) -> Iterator[float]:
        try:
            yield from self._follow_files()
        finally:
            if self._loop is not None:
                self._loop.forget(self._on_change)  # the directory's watch, if nobody else's
            self._files.close()
            self._on_close()

    def _follow_files(self) -> Iterator[float]:
        handle = self._handle
        cursor = handle.read_cursor or handle.start
        since = cursor.since_ns()
        if since > 0:
            self._files.start_at(since, cursor.marks())
        cursor_filter = CursorFilter(cursor)
        parser: LineParser = self._files.format.parser(self._files.position[1])
        gaps = self._files.gaps
        chunks = 0
        try:
            while True:
                chunk = self._files.read()
                if chunk.restart and parser.reset(chunk.offset):
                    self._malformed("the file ended in the middle of a line")
                if self._files.gaps != gaps:
                    gaps = self._files.gaps
                    self._rotation_gap()
                if chunk.data:
                    self._put(self._records(parser.feed(chunk.data), cursor_filter))
                    if cursor_filter.steps != self._steps_seen:
                        self._clock_stepped(cursor_filter)
                    self._count_malformed(parser)
                    if self._stop.is_set() and not handle.removed:
                        return  # shutdown mid-file: the rest is read at the next start
                    if (
                        chunk.at_live_end
                        and self._armed
                        and not cursor_filter.gap_streams
                        and self._quiet()
                    ):
                        # Armed before this read: what comes after it wakes the reader, so
                        # a line that comes alone costs one read, not a second to see the end.
                        yield from self._waited()
                        chunks = 0
                        continue
                    chunks += 1
                    if chunks % _CHUNKS_PER_STEP == 0:
                        yield 0.0  # a catch-up: the others' turn
                    continue
                if cursor_filter.gap_streams:
                    self._rotation_gap()
                if (yield from self._at_end()):
                    return
                chunks = 0
        finally:
            handle.read_cursor = cursor_filter.advanced(cursor)

    def _at_end(self) -> Generator[float, None, bool]:
        """At the end of the file for now: True when the log ended for good (or on stop)."""
        if self._handle.removed:
            # read to the end of what the descriptors hold: that is all there is
            return not (yield from self._settled())
        if self._stop.is_set():
            return True  # shutdown or exclusion: the rest is read again
        now = time.monotonic()
        if self._check_state or now >= self._next_state_check:
            self._check_state = False
            self._next_state_check = now + _STATE_CHECK_SECONDS
            status = yield from self._asked_status()
            if status is not None and not status.running:
                if (yield from self._settled()):
                    self._check_state = True  # read the files handed over, then ask again
                    return False
                return self._finish(status.finished_at)
        if self._armed is None:
            self._changed.clear()
            self._armed = self._follow(self._on_change)
            return False  # read once more: a write just before the watch was armed has no event
        return (yield from self._waited())

    def _quiet(self) -> bool:
        """Nothing for `_at_end` to do but wait: not removed, not stopping, no state to ask."""
        return not (
            self._handle.removed
            or self._stop.is_set()
            or self._check_state
            or time.monotonic() >= self._next_state_check
        )

    def _waited(self) -> Generator[float, None, bool]:
        """Waits for the wake-up. Woken (or the wait ran out), it arms again before reading,
        so the reads that follow are all a wake-up costs (a write after this wakes it once
        more), not a read to the end, then an arming, then a read once more."""
        yield _ARMED_SECONDS if self._armed else _POLL_SECONDS
        if self._loop is None:
            self._changed.clear()
        self._armed = self._follow(self._on_change)
        return False

    def _settled(self) -> Generator[float, None, bool]:
        """`FileSet.settle()`. On the read loop its wait for the watcher runs on a helper
        thread first, and the reader waits for it: under load that wait takes a while, and
        on the loop's thread it held every other container's lines back at each container's
        end."""
        loop = self._loop
        if loop is None:
            return self._files.settle()
        done = threading.Event()

        def wait() -> None:
            try:
                self._files.handed_over(SETTLE_SECONDS)
            finally:
                done.set()
                loop.wake(self)

        loop.aside(wait)
        while not done.is_set():
            yield _POLL_SECONDS
        return self._files.settle(0)

    def _asked_status(self) -> Generator[float, None, ContainerStatus | None]:
        """The engine's answer. On the read loop it is asked on a helper thread, and the reader
        waits for it meanwhile: an inspect would hold every other reader back."""
        loop = self._loop
        if loop is None:
            return self._status()
        answer: list[ContainerStatus | Exception | None] = []

        def ask() -> None:
            try:
                answer.append(self._status())
            except Exception as exc:  # ContainerGone above all: raised where it means something
                answer.append(exc)
            loop.wake(self)

        loop.aside(ask)
        while not answer:
            yield _POLL_SECONDS
        if isinstance(result := answer[0], Exception):
            raise result
        return result

    def _status(self) -> ContainerStatus | None:
        """The engine's view of the container; None when it cannot say now."""
        if self._status_of is not None:
            return self._status_of()
        if self._api is None:
            return None
        try:
            return container_status(self._api, self._handle.id)
        except ENGINE_ERRORS:
            return None

    def _records(self, lines: list[FileLine], cursor_filter: CursorFilter) -> list[Record]:
        # Once per line: locals and the whole-line shortcut, which skips the joiner. A near
        # twin of the API source's `_records` (sources/api/reader.py) on purpose: a
        # shared helper would cost a call per line.
        records: list[Record] = []
        append = records.append
        admit = cursor_filter.admit
        joiner = self._joiner
        idle = joiner.idle
        for line in lines:
            stream = line.stream
            position = admit(stream, line.ts_ns)
            if position is None:
                continue
            if idle and line.complete:  # a whole line, nothing pending: no joiner needed
                append(Record(stream, line.message, line.timestamp, position, position))
            else:
                body = line.message + b"\n" if line.complete else line.message
                records.extend(joiner.push(stream, line.timestamp, position, body))
                idle = joiner.idle
        return records

    def _count_malformed(self, parser: LineParser) -> None:
        bad = parser.malformed + parser.oversized
        if bad > self._malformed_seen:
            for _ in range(bad - self._malformed_seen):
                self._malformed(parser.last_error or "malformed")
            self._malformed_seen = bad
