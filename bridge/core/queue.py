"""The seam between the sources and the sink: a byte-bounded FIFO of batches.

Readers (one thread per container) put batches of records; the journal writer takes them. The
queue's byte budget is the bridge's memory bound: when journald stalls, the writer waits, the
queue fills, and the readers block in `put` -- they stop reading, and the engine's log files
are the real buffer.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from bridge.core.container import ContainerHandle
from bridge.core.cursor import Position
from bridge.core.inner import InnerEntryLike, InnerPositionLike, InnerStream
from bridge.core.record import Record


@dataclass(slots=True)
class Batch:
    handle: ContainerHandle
    records: list[Record]
    nbytes: int
    # Per stream, the first position of a line the reader still holds (pieces of a long line)
    # once these records are read: everything of that stream before it is in this batch or
    # an earlier one.
    held: Mapping[int, Position] = field(default_factory=dict)
    # The container's fields as its reader made the batch, right after reading the records:
    # the fields their entries carry. A rename refreshes the handle's for the batches read
    # after it, never for those already queued (a line's name is its name when read).
    fields: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.fields = self.handle.fields


@dataclass(slots=True)
class EndOfStream:
    """The container's stream ended for good, or the container is gone: what the transforms
    hold is its last output. Everything the reader read was queued before it."""

    handle: ContainerHandle
    finished_at: str
    nbytes: ClassVar[int] = 0  # holds no lines: never waits for room


@dataclass(slots=True, eq=False)
class InnerBatch:
    """Inner entries of one container, in the inner journal's order, for the writer to send.

    `fields` are the container's fields for these entries, pre-encoded (without the ones the
    inner entry brings itself, SYSLOG_IDENTIFIER first). `last` is where the stream stands once
    every entry here is dealt with: the last entry's position, or later (entries the rate limit
    dropped, the end of the journal after the container exited); None commits nothing more.
    `nbytes` counts against the queue's budget and the stream's own bound.
    """

    handle: ContainerHandle
    stream: InnerStream
    entries: list[InnerEntryLike]
    fields: bytes
    nbytes: int
    last: InnerPositionLike | None = None


Item = Batch | EndOfStream | InnerBatch


class PendingQueue:
    """FIFO of batches bounded by the bytes they hold (one oversize batch may always enter).

    Readers blocked on a full queue are woken once it has drained to three quarters, not after
    every batch the writer finishes: during a catch-up the queue stays full, and waking every
    reader per batch cost more CPU (and GIL hand-overs) than the batches themselves.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._resume_bytes = max_bytes * 3 // 4
        self._items: deque[Item] = deque()
        self._bytes = 0
        self._blocked = 0  # readers waiting for room
        self._unannounced = False  # items put with announce=False, the writer not woken yet
        self._whole = False  # the last wake-up was an announce(): a whole pass is queued
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._room = threading.Condition(lock)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def put(self, item: Item, *, announce: bool = True) -> None:
        """Queues an item, waiting for room; an item without bytes never waits (the events
        thread queues those, and must not block on the budget).

        `announce=False` leaves the writer asleep until `announce()`: a read loop queues a
        pass's batches and wakes the writer once for all of them, after the pass, so that the
        two threads do not take turns on the interpreter lock meanwhile. Waiting for room
        announces first."""
        nbytes = item.nbytes
        with self._room:
            if nbytes and self._bytes and self._bytes + nbytes > self.max_bytes:
                if self._unannounced:
                    self._unannounced = False
                    self._not_empty.notify()
                self._blocked += 1
                try:
                    while self._bytes and self._bytes + nbytes > self.max_bytes:
                        self._room.wait()
                finally:
                    self._blocked -= 1
            self._items.append(item)
            self._bytes += nbytes
            if announce:
                self._whole = False
                self._not_empty.notify()
            else:
                self._unannounced = True

    def announce(self) -> None:
        """Wakes the writer for what was put with `announce=False` (if anything was): all of
        it is there, so the writer need not wait for more (`whole`)."""
        with self._not_empty:
            if self._unannounced:
                self._unannounced = False
                self._whole = True
                self._not_empty.notify()

    @property
    def whole(self) -> bool:
        """The writer's last wake-up came from `announce()`: no point gathering more."""
        return self._whole

    def wait(self, timeout: float) -> bool:
        """Waits up to `timeout` for an item in an empty queue. True: one came meanwhile;
        False: none came, or the queue was not empty to begin with."""
        with self._not_empty:
            if self._items:
                return False
            self._not_empty.wait(timeout)
            return bool(self._items)

    def get_many(self, timeout: float, max_bytes: int) -> list[Item]:
        """Waits up to `timeout` for an item, then takes queued ones while they hold fewer
        than `max_bytes` in all (at least one)."""
        with self._not_empty:
            if not self._items:
                self._not_empty.wait(timeout)
            items, nbytes = self._items, 0
            taken: list[Item] = []
            while items and (not taken or nbytes < max_bytes):
                item = items.popleft()
                taken.append(item)
                nbytes += item.nbytes
            return taken

    def release(self, nbytes: int) -> None:
        """The writer is done with `nbytes` (sent, or given up): readers may put more.

        Negative while the transforms took on more than the writer finished: what they hold
        stays within the budget."""
        with self._room:
            self._bytes -= nbytes
            if self._blocked and self._bytes <= self._resume_bytes:
                self._room.notify_all()

    def empty(self) -> bool:
        with self._not_empty:
            return not self._items
