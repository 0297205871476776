"""The seam for inner-journal entries: what a reader shares with the writer, as protocols.

A container that keeps a journal of its own (systemd inside) has, besides stdout and stderr, a
third stream: its inner journal. Its entries travel the same queue as stdout's batches, as
`InnerBatch` items (core/queue.py), and the same writer sends them; only their position is
different: the inner journal's cursor, not a `(timestamp, k)`. Core stays journal-agnostic: an
entry and a position are whatever satisfies `InnerEntryLike` and `InnerPositionLike`
(sources/inner_journal's `InnerEntry` and `InnerPosition`).

Invariants:
- `InnerStream.committed` is the position of the last inner entry journald has (sent, refused
  for good, or dropped by the rate limit on purpose); only the writer moves it, in queue order,
  so it never runs ahead of what was sent. It starts at the position the bridge resumed from, so
  it is always what to persist.
- `InnerStream.read` is how far the container's readers got: every entry up to it is queued or
  committed. A container has one stream for its life in the bridge (stop, start, a new reader
  per start) and at most one reader following it at a time (`follow_lock`).
- What one stream has queued and not yet sent (`inflight_bytes`) is bounded by its reader
  (`wait_for_room`), so an inner journal being caught up cannot fill the shared queue and make
  every other container's lines wait behind it.
"""

from __future__ import annotations

import threading
from typing import Protocol


class InnerPositionLike(Protocol):
    """A position in an inner journal (sources/inner_journal/position.py's `InnerPosition`)."""

    @property
    def cursor(self) -> str: ...

    def to_json(self) -> dict[str, object]: ...


class InnerEntryLike(Protocol):
    """One inner entry, mapped and capped (sources/inner_journal/protocol.py's `InnerEntry`).

    `native_fields` are journald native-protocol fields, already encoded: a sink appends them.
    """

    @property
    def message(self) -> bytes: ...

    @property
    def priority(self) -> int | None: ...

    @property
    def native_fields(self) -> bytes: ...

    @property
    def realtime_us(self) -> int: ...

    @property
    def position(self) -> InnerPositionLike: ...


class InnerStream:
    """One container's inner journal: where it resumes, how far it got; see the module."""

    def __init__(self, start: InnerPositionLike | None = None) -> None:
        self.start = start
        self.committed: InnerPositionLike | None = start  # the writer's
        self.read: InnerPositionLike | None = start  # the readers'
        self.follow_lock = threading.Lock()
        self._room = threading.Condition()
        self._inflight = 0

    def resume_from(self) -> InnerPositionLike | None:
        """Where the next reader starts: after everything queued or committed."""
        return self.read

    def committed_json(self) -> dict[str, object] | None:
        """The position to persist (the state file's `inner`), or None when there is none."""
        committed = self.committed
        return None if committed is None else committed.to_json()

    def commit(self, position: InnerPositionLike) -> None:
        """The writer: everything up to `position` is in the journal (or dropped on purpose)."""
        self.committed = position

    # --- the bound on what one stream has queued -------------------------------------------

    @property
    def inflight_bytes(self) -> int:
        return self._inflight

    def wait_for_room(self, nbytes: int, limit: int, stopping: threading.Event) -> bool:
        """Blocks while this stream's queued bytes would pass `limit` (one batch always fits
        when nothing is in flight); counts `nbytes` in. False when `stopping` was set first."""
        with self._room:
            while self._inflight and self._inflight + nbytes > limit:
                if stopping.is_set():
                    return False
                self._room.wait(0.25)
            self._inflight += nbytes
            return True

    def unqueued(self, nbytes: int) -> None:
        """The writer is done with a batch (sent, or lost to an error): the reader may go on."""
        with self._room:
            self._inflight = max(0, self._inflight - nbytes)
            self._room.notify_all()
