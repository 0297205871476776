"""Per-container rate limit: a token bucket, and journald-style suppression notices. Pure.

journald limits per *sending unit*: every container the bridge forwards shares the bridge's
budget, so one noisy container could make journald drop everybody's lines. Limiting each
container here keeps the noisy one's excess out, counted, and announced.
"""

from __future__ import annotations

from bridge.record import Record


class RateLimiter:
    def __init__(self, lines_per_second: float, burst: int, interval: float = 10.0) -> None:
        self._rate = lines_per_second
        self._burst = max(burst, 1)
        self._interval = interval
        self._tokens = float(self._burst)
        self._last = 0.0
        self._dropped = 0
        self._since = 0.0
        self._last_dropped: Record | None = None

    def apply(self, record: Record, now: float) -> Record:
        if self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return record
        if not self._dropped:
            self._since = now
        self._dropped += 1
        self._last_dropped = record
        record.dropped = "rate_limited"
        return record

    def next_deadline(self) -> float | None:
        return self._since + self._interval if self._dropped else None

    def notice(self, now: float, container_name: str, *, force: bool = False) -> Record | None:
        """ "Suppressed N lines" once per interval in which lines were dropped."""
        last = self._last_dropped
        if last is None or not self._dropped or (not force and now < self._since + self._interval):
            return None
        count, self._dropped, self._last_dropped = self._dropped, 0, None
        return Record(
            last.stream,
            f"Suppressed {count} lines from container {container_name}".encode(),
            last.timestamp,
            last.last,
            last.last,
            priority=4,
            extra_fields=((b"N_DROPPED", str(count).encode()),),
        )
