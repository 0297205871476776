"""One container's inner journal as a log reader: the follower's entries into the queue.

`InnerJournalReader` implements the Reader protocol of sources/containers.py for the journal a
container keeps of its own (systemd inside). Its thread iterates an `InnerJournalFollower` on the
container's first process and queues the entries as `InnerBatch` items (core/inner.py); the
journal writer sends them with the container's fields and `CONTAINER_STREAM=journal`, and only
then commits their position. Invariants:

- Positions: the stream (`handle.inner`, created on first use) starts where the bridge resumed
  (`start`: the later of the state file and the journal read-back, `position.later`). A reader
  starts after what earlier readers of the same container queued (`InnerStream.read`), never
  before, and only once the previous one has ended (`follow_lock`): a stop and start of the
  container reads the new boot's entries, and none of the old ones, again. `read` moves only
  once a batch is queued, so an entry the follower yielded but that never reached the queue is
  read again by the next reader.
- Exactly once across a bridge crash comes from the writer committing only what journald has
  and from the read-back (sinks/journald/inner_readback.py) of the last entry that arrived.
- Batches: entries are gathered until the follower says nothing more is ready (`more_ready`)
  or a batch holds `BATCH_BYTES`; a stream holds at most `max_inflight_bytes` queued and not
  yet sent, so a journal being caught up cannot fill the shared queue ahead of other
  containers' lines.
- Rate limit: the container's own limit (its transform chain's, label or operator) applies to
  its inner journal too, with a budget of its own. Dropped entries still move the position.
  As journald does, "Suppressed N ..." is written with the next entry that passes once the
  interval is over, or when the journal ends.
- Stopping: `stop()` ends the reader soon (shutdown, exclusion); what it gathered is queued
  first. For a removed container whose process has exited it lets the worker read the journal to
  its end first (bounded by DRAIN_SECONDS): that is the container's last output.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from bridge.core.container import ContainerHandle
from bridge.core.inner import InnerPositionLike
from bridge.core.queue import InnerBatch, PendingQueue
from bridge.core.readiness import readable
from bridge.sources.inner_journal.budget import WorkerBudget
from bridge.sources.inner_journal.follower import InnerJournalFollower
from bridge.sources.inner_journal.gather import Gatherer, StatsReport, rate_limit_of
from bridge.sources.inner_journal.options import DEFAULT_OPTIONS, FollowerStats, WorkerOptions
from bridge.sources.inner_journal.position import InnerPosition
from bridge.sources.inner_journal.protocol import InnerEnd, InnerEntry, InnerEvent, InnerGap
from bridge.sources.reader import failed
from bridge.telemetry import Telemetry

log = logging.getLogger(__name__)

SOURCE = "inner_journal"  # the `source` metric label
BATCH_BYTES = 256 << 10
DRAIN_SECONDS = 30.0
_TURN_POLL = 0.25


class Follower(Protocol):
    """What the reader needs of `InnerJournalFollower` (a fake in the unit tests)."""

    more_ready: bool
    stats: FollowerStats

    def __iter__(self) -> Iterator[InnerEvent]: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...


# (pid, where to resume) -> a follower of that process's journal; raises OSError
FollowerFactory = Callable[[int, InnerPosition | None], Follower]


def as_position(cursor: InnerPositionLike | None) -> InnerPosition | None:
    """A stream's position as the InnerPosition it always is (the readers put only those)."""
    return cursor if isinstance(cursor, InnerPosition) else None


class InnerJournalReader:
    """One container's inner-journal reader; see the module."""

    source = SOURCE

    def __init__(
        self,
        handle: ContainerHandle,
        queue: PendingQueue,
        telemetry: Telemetry,
        pid: int,
        start: InnerPosition | None = None,
        *,
        floor_realtime_us: int = 0,
        options: WorkerOptions = DEFAULT_OPTIONS,
        max_inflight_bytes: int | None = None,
        new_follower: FollowerFactory | None = None,
        budget: WorkerBudget | None = None,
    ) -> None:
        self._handle = handle
        self._queue = queue
        self._telemetry = telemetry
        self._pid = pid
        self._stream = handle.inner_stream(start)
        self._floor = floor_realtime_us
        self._options = options
        self._budget = budget
        # A sixteenth of the queue (4 MiB of the default 64): thousands of entries in flight,
        # yet other containers' lines never wait behind more than that of this one's.
        self._max_inflight = max_inflight_bytes or max(BATCH_BYTES, queue.max_bytes // 16)
        self._new_follower = new_follower or self._follower_for
        self._stop = threading.Event()  # end now (shutdown, exclusion, drain deadline)
        self._lock = threading.Lock()
        self._finished = False
        self._start_claimed = False
        self._follower: Follower | None = None
        self._pidfd: int | None = None
        self._drain_timer: threading.Timer | None = None
        self._gatherer = Gatherer(lambda: handle.info.name)
        self._stats = StatsReport(telemetry)
        self._thread = threading.Thread(
            target=self._main, name=f"inner-{handle.info.short_id}", daemon=True
        )

    # --- the Reader protocol --------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._handle.info.name

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    @property
    def finished(self) -> bool:
        with self._lock:
            return self._finished

    @property
    def attached(self) -> bool:
        return self.started and not self.finished

    def start(self) -> None:
        with self._lock:  # once, even when two callers race (sources/reader.py says why)
            if self._start_claimed:
                return
            self._start_claimed = True
        self._thread.start()

    def wake(self) -> bool:
        """True while this reader's process runs (nothing new to follow). False once it has
        exited, even while its journal is still being read to the end: the container's next
        process needs a new reader, which waits for this one and goes on after it."""
        with self._lock:
            if self._finished:
                return False
            return not self._exited()

    def container_stopped(self) -> None:
        """Nothing to do: the worker sees the exit through its pidfd and reads to the end."""

    def stop(self) -> None:
        """Ends the reader soon; see the module for a removed container (a second call ends
        that drain too)."""
        with self._lock:
            follower = self._follower
            drain = (
                self._drain_timer is None
                and self._handle.removed
                and not self._finished
                and self._exited()
            )
            if drain:
                # the container's last output: let the worker finish it, within bounds
                self._drain_timer = threading.Timer(DRAIN_SECONDS, self._abort)
                self._drain_timer.daemon = True
                self._drain_timer.start()
        if not drain:
            self._abort(follower)

    def join(self, timeout: float) -> None:
        if self.started:
            self._thread.join(timeout)

    def committed_position(self) -> InnerPosition | None:
        """What journald has of this container's inner journal: what to persist."""
        return as_position(self._stream.committed)

    # --- the thread -----------------------------------------------------------------------

    def _abort(self, follower: Follower | None = None) -> None:
        self._stop.set()
        if follower is None:
            with self._lock:
                follower = self._follower
        if follower is not None:
            follower.stop()

    def _exited(self) -> bool:
        """Whether the reader's process has exited (called with the lock held)."""
        fd = self._pidfd
        if fd is not None:
            return bool(readable([fd]))
        try:
            fd = os.pidfd_open(self._pid)
        except OSError:
            return True
        try:
            return bool(readable([fd]))
        finally:
            os.close(fd)

    def _main(self) -> None:
        engine = self._handle.info.engine
        self._telemetry.container_attached(engine, SOURCE)
        try:
            if self._take_turn():
                try:
                    self._run()
                finally:
                    self._stream.follow_lock.release()
        except Exception as exc:  # a bug must cost one container, never the bridge
            failed(log, f"container {self.name}: inner journal reader failed", exc)
        finally:
            with self._lock:
                self._finished = True
                if self._pidfd is not None:
                    os.close(self._pidfd)
                    self._pidfd = None
                if self._drain_timer is not None:
                    self._drain_timer.cancel()
            self._telemetry.container_detached(engine, SOURCE)

    def _take_turn(self) -> bool:
        """Waits for an earlier reader of this container to end; False when stopped first."""
        while not self._stream.follow_lock.acquire(timeout=_TURN_POLL):
            if self._stop.is_set():
                return False
        return True

    def _run(self) -> None:
        try:
            pidfd = os.pidfd_open(self._pid)
        except ProcessLookupError:  # exited before its journal could be looked at
            log.debug("container %s: process %d is gone; no inner journal", self.name, self._pid)
            return
        with self._lock:
            self._pidfd = pidfd
        position = as_position(self._stream.resume_from())
        try:
            follower = self._new_follower(self._pid, position)
        except (ProcessLookupError, FileNotFoundError):
            log.debug("container %s: process %d is gone; no inner journal", self.name, self._pid)
            return
        except OSError as exc:
            self._telemetry.inner_journal_error("open")
            log.error(
                "container %s: cannot open its root to read its journal (%s); needs "
                "CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH",
                self.name,
                exc.strerror or exc,
            )
            return
        with self._lock:
            self._follower = follower
        if self._stop.is_set():  # stopped while the follower was being made
            follower.stop()
        try:
            self._follow(follower)
        finally:
            with self._lock:
                self._follower = None
            follower.close()
            self._stats.report(follower.stats)

    def _follow(self, follower: Follower) -> None:
        self._refresh()
        gatherer = self._gatherer
        for event in follower:
            if isinstance(event, InnerEntry):
                if not gatherer.add(event, time.monotonic(), event.realtime_us):
                    labels = None if self._handle.removed else self._handle.metric_labels
                    self._telemetry.lines_dropped("rate_limited", container=labels)
            elif isinstance(event, InnerGap):
                gap = event.gap
                self._telemetry.inner_journal_gap(gap.kind, gap.lost)
            elif isinstance(event, InnerEnd):
                self._flush(event.position, final=True)
                return
            if not follower.more_ready or gatherer.nbytes >= BATCH_BYTES:
                self._flush()
                self._stats.report(follower.stats)
        self._flush(final=True)  # stopped: what the follower yielded is ours to queue

    def _flush(self, end: InnerPosition | None = None, *, final: bool = False) -> None:
        """Queues what was gathered, and the position it reaches (`end`: the drained end)."""
        self._refresh()  # a rename or a reload applies from this batch on
        gathered = self._gatherer.take(end, final=final, now_us=time.time_ns() // 1000)
        if gathered is None:
            return
        last = gathered.last
        stream = self._stream
        batch = InnerBatch(
            self._handle, stream, gathered.entries, self._gatherer.fields, gathered.nbytes, last
        )
        if not stream.wait_for_room(batch.nbytes, self._max_inflight, self._stop):
            return  # stopped while this stream had its share queued: read again next time
        try:
            self._queue.put(batch)
        except BaseException:
            stream.unqueued(batch.nbytes)
            raise
        if last is not None:
            stream.read = last

    def _refresh(self) -> None:
        self._gatherer.refresh(self._handle.fields, rate_limit_of(self._handle))

    def _follower_for(self, pid: int, position: InnerPosition | None) -> Follower:
        return InnerJournalFollower.for_pid(
            pid,
            position=position,
            floor_realtime_us=self._floor,
            name=self.name,
            options=self._options,
            budget=self._budget,
        )
