"""Per-container rate limit: a token bucket, and journald-style suppression notices. Pure.

`TokenBucket` and `Suppressed` are the two halves every rate limit here is made of: the
container's lines (`RateLimiter`, a transform) and its inner journal's entries
(sources/inner_journal/gather.py) each take one of each, so both count and announce alike.

journald limits per *sending unit*: every container the bridge forwards shares the bridge's
budget, so one noisy container could make journald drop everybody's lines. Limiting each
container here keeps the noisy one's excess out, counted, and announced. Invariants:

- `now` is whatever monotonic clock the caller passes (it reads no clock itself); no value of
  it means "never", and time that goes backwards refills nothing.
- The limiter sees every record of its container, in order, dropped or not; one dropped before
  it (`record.dropped` already set) is seen but not charged.
- The "Suppressed N lines" notice carries the timestamp and `last` position of the most recent
  record seen on its stream, so committing it never moves that stream's position backwards.
"""

from __future__ import annotations

from bridge.core.cursor import Position
from bridge.core.record import Record


class TokenBucket:
    """`rate` lines a second, `burst` at once. `now` is the caller's monotonic clock."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(max(burst, 1))
        self._tokens = self._burst
        self._last: float | None = None

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return int(self._burst)

    def take(self, now: float) -> bool:
        """One token, if there is one; time that goes backwards refills nothing."""
        if self._last is not None and now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class Suppressed:
    """What a bucket refused since the last notice, and when the first of it was refused."""

    __slots__ = ("count", "since")

    def __init__(self) -> None:
        self.count = 0
        self.since = 0.0

    def add(self, now: float) -> None:
        if not self.count:
            self.since = now
        self.count += 1

    def due(self, now: float, interval: float) -> bool:
        """A notice is due: something was refused, `interval` seconds ago or more."""
        return self.count > 0 and now >= self.since + interval

    def deadline(self, interval: float) -> float | None:
        return self.since + interval if self.count else None

    def take(self) -> int:
        """The count, for the notice; counting starts again."""
        count, self.count = self.count, 0
        return count


class RateLimiter:
    def __init__(self, lines_per_second: float, burst: int, interval: float = 10.0) -> None:
        self._bucket = TokenBucket(lines_per_second, burst)
        self._interval = interval
        self._suppressed = Suppressed()
        self._notice_stream = 0
        self._seen: dict[int, tuple[bytes, Position]] = {}  # stream -> (timestamp, last)

    @property
    def lines_per_second(self) -> float:
        """The limit, for a container's other streams to apply (its inner journal's)."""
        return self._bucket.rate

    @property
    def burst(self) -> int:
        return self._bucket.burst

    @property
    def interval(self) -> float:
        """Seconds between "Suppressed N" notices."""
        return self._interval

    def apply(self, record: Record, now: float) -> Record:
        self._seen[record.stream] = (record.timestamp, record.last)
        if record.dropped is not None:
            return record
        if self._bucket.take(now):
            return record
        self._suppressed.add(now)
        self._notice_stream = record.stream
        record.dropped = "rate_limited"
        return record

    def next_deadline(self) -> float | None:
        return self._suppressed.deadline(self._interval)

    def notice(self, now: float, container_name: str, *, force: bool = False) -> Record | None:
        """ "Suppressed N lines" once per interval in which lines were dropped."""
        suppressed = self._suppressed
        if not suppressed.count or (not force and not suppressed.due(now, self._interval)):
            return None
        count = suppressed.take()
        timestamp, position = self._seen[self._notice_stream]
        notice = Record(
            self._notice_stream,
            f"Suppressed {count} lines from container {container_name}".encode(errors="replace"),
            timestamp,
            position,
            position,
            priority=4,
            extra_fields=((b"N_DROPPED", str(count).encode()),),
        )
        return notice
