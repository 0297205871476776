"""What the inner-journal reader makes of the follower's entries before it queues them. Pure.

`Gatherer` collects one batch at a time: the entries that pass the container's rate limit, the
"Suppressed N" notice, the bytes they hold, and the position the batch reaches. It reads no
clock (`now` is passed in) and does no I/O. Invariants:

- Every entry handed to `add` moves `last`, whether it passes or is dropped: a dropped entry is
  consumed, so a batch's position covers it, and it is never read again.
- Entries keep the inner journal's order; a notice sits at the position of the last entry it
  counts (never past an entry not yet consumed).
- The rate limit is the container's own (`rate_limit_of`: its transform chain's, from the
  operator's config and its labels), with a budget of its own for the inner journal. As journald
  does, the notice goes out with the next entry that passes once the limit's interval is over
  (`transforms.rate_limit_interval_seconds`), or when the batch is the journal's last (`final`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.core.container import ContainerHandle
from bridge.core.fields import encode_field
from bridge.core.inner import InnerEntryLike
from bridge.sources.inner_journal.fields import INNER_PREFIX, is_pass_through
from bridge.sources.inner_journal.options import FollowerStats
from bridge.sources.inner_journal.position import InnerPosition
from bridge.sources.inner_journal.protocol import InnerEntry, ProtocolError, decode_native
from bridge.telemetry import FIELD_CAPS, Telemetry
from bridge.transforms.ratelimit import Suppressed, TokenBucket

# Memory one queued entry holds besides its message and fields (the entry, its position and
# cursor string; 600 bytes measured with tracemalloc): what counts against the queue's budget.
ENTRY_OVERHEAD_BYTES = 640
Limit = tuple[float, int, float]  # lines/s, burst, seconds between notices


def inner_container_fields(fields: bytes) -> tuple[bytes, bytes]:
    """The container's pre-encoded fields for its inner entries, and its SYSLOG_IDENTIFIER.

    Left out: SYSLOG_IDENTIFIER and every name an inner entry passes as it is (the entry's own
    value stands; journald would keep both), and `INNER_*` (a label must not pass for an inner
    field). To move to core/fields.py, computed once per field set like `handle.fields`.
    """
    try:
        pairs = decode_native(fields)
    except ProtocolError:  # cannot happen for what encode_pairs wrote; keep the fields whole
        return fields, b""
    kept: list[bytes] = []
    tag = b""
    for name, value in pairs:
        text = name.decode("ascii", "replace")
        if text == "SYSLOG_IDENTIFIER":
            tag = value
        elif not is_pass_through(text) and not text.startswith(INNER_PREFIX):
            kept.append(encode_field(name, value))
    return b"".join(kept), tag


def rate_limit_of(handle: ContainerHandle) -> Limit | None:
    """The container's rate limit as its transforms have it, or None."""
    pending = handle.next_chain  # a reload's new chain, not yet swapped in by the writer
    chain = handle.chain if pending is False else pending
    limiter = chain.rate_limit if chain is not None else None
    if limiter is None:
        return None
    return limiter.lines_per_second, limiter.burst, limiter.interval


@dataclass(frozen=True, slots=True)
class Notice:
    """The "Suppressed N" entry: the bridge's, at the last dropped entry's position."""

    message: bytes
    native_fields: bytes
    realtime_us: int
    position: InnerPosition
    priority: int | None = 4


@dataclass
class Gathered:
    """One batch's worth: entries to send, their bytes, and how far the batch reaches."""

    entries: list[InnerEntryLike] = field(default_factory=list)
    nbytes: int = 0
    last: InnerPosition | None = None


class Gatherer:
    """Collects one container's inner entries into batches; see the module."""

    def __init__(self, container_name: Callable[[], str]) -> None:
        self._name = container_name
        self._batch = Gathered()
        self._fields_of: bytes | None = None  # the handle's fields the two below come from
        self.fields = b""
        self._tag = b""
        self._limit: Limit | None = None
        self._bucket: TokenBucket | None = None
        self._suppressed = Suppressed()
        self._last_seen: InnerPosition | None = None  # across batches, for a notice

    @property
    def nbytes(self) -> int:
        return self._batch.nbytes

    def refresh(self, container_fields: bytes, limit: Limit | None) -> None:
        """The handle's current fields (a rename replaces them whole) and rate limit."""
        if container_fields is not self._fields_of:
            self.fields, self._tag = inner_container_fields(container_fields)
            self._fields_of = container_fields
        if limit != self._limit:
            self._limit = limit
            self._bucket = None if limit is None else TokenBucket(limit[0], limit[1])

    def add(self, entry: InnerEntry, now: float, now_us: int) -> bool:
        """Takes one entry; False when the rate limit dropped it."""
        batch = self._batch
        previous = self._last_seen  # the last one dropped, when a notice is due
        batch.last = self._last_seen = entry.position
        bucket = self._bucket
        if bucket is not None:
            if not bucket.take(now):
                self._suppressed.add(now)
                return False
            interval = self._limit[2] if self._limit is not None else 0.0
            if previous is not None and self._suppressed.due(now, interval):
                self._notice(previous, now_us)
        batch.entries.append(entry)
        batch.nbytes += len(entry.message) + len(entry.native_fields) + ENTRY_OVERHEAD_BYTES
        return True

    def take(
        self, end: InnerPosition | None = None, *, final: bool = False, now_us: int = 0
    ) -> Gathered | None:
        """The batch so far (None when it holds nothing and reaches nowhere new), and a new one.

        `end`: where the journal ended (after the container exited), past the last entry.
        `final`: no more entries follow, so a pending notice goes now.
        """
        if final and self._suppressed.count and self._last_seen is not None:
            self._notice(self._last_seen, now_us)
        batch = self._batch
        if end is not None:
            batch.last = end
        if not batch.entries and batch.last is None:
            return None
        self._batch = Gathered()
        return batch

    def _notice(self, position: InnerPosition, now_us: int) -> None:
        count = self._suppressed.take()
        text = f"Suppressed {count} inner journal entries from container {self._name()}"
        fields = (b"SYSLOG_IDENTIFIER=" + self._tag + b"\n" if self._tag else b"") + (
            b"N_DROPPED=%d\n" % count
        )
        notice = Notice(text.encode(errors="replace"), fields, now_us, position)
        self._batch.entries.append(notice)
        self._batch.nbytes += len(notice.message) + len(fields) + ENTRY_OVERHEAD_BYTES
        if self._batch.last is None:  # a batch of the notice alone reaches its position
            self._batch.last = position


class StatsReport:
    """Turns the follower's running totals into metric increments."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry
        self._seen: dict[str, int] = {}

    def report(self, stats: FollowerStats) -> None:
        now: dict[str, int] = {
            "error:stall": stats.stalls,
            "error:protocol": stats.protocol_errors,
            "error:exit": stats.exits,
        }
        for kind, count in stats.problems.items():
            now[f"error:{kind}"] = count
        for reason, count in stats.fields_dropped.items():
            # the caps, as for labels and JSON keys; renamed or refused names are not counted
            if reason in FIELD_CAPS:
                now[f"fields:{reason}"] = count
        for key, count in now.items():
            grown = count - self._seen.get(key, 0)
            if grown > 0:
                what, _, kind = key.partition(":")
                if what == "error":
                    self._telemetry.inner_journal_error(kind, grown)
                else:
                    self._telemetry.fields_dropped(kind, grown)
        self._seen = now
