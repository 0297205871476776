"""Per-container rate limit: a token bucket, and journald-style suppression notices. Pure.

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


class RateLimiter:
    def __init__(self, lines_per_second: float, burst: int, interval: float = 10.0) -> None:
        self._rate = lines_per_second
        self._burst = float(max(burst, 1))
        self._interval = interval
        self._tokens = self._burst
        self._last: float | None = None
        self._dropped = 0
        self._since = 0.0  # when the first line of the current notice was dropped
        self._notice_stream = 0
        self._seen: dict[int, tuple[bytes, Position]] = {}  # stream -> (timestamp, last)

    @property
    def lines_per_second(self) -> float:
        """The limit, for a container's other streams to apply (its inner journal's)."""
        return self._rate

    @property
    def burst(self) -> int:
        return int(self._burst)

    @property
    def interval(self) -> float:
        """Seconds between "Suppressed N" notices."""
        return self._interval

    def apply(self, record: Record, now: float) -> Record:
        self._seen[record.stream] = (record.timestamp, record.last)
        if record.dropped is not None:
            return record
        if self._last is not None and now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return record
        if not self._dropped:
            self._since = now
        self._dropped += 1
        self._notice_stream = record.stream
        record.dropped = "rate_limited"
        return record

    def next_deadline(self) -> float | None:
        return self._since + self._interval if self._dropped else None

    def notice(self, now: float, container_name: str, *, force: bool = False) -> Record | None:
        """ "Suppressed N lines" once per interval in which lines were dropped."""
        if not self._dropped or (not force and now < self._since + self._interval):
            return None
        count = self._dropped
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
        self._dropped = 0
        return notice
