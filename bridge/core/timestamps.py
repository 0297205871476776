"""Docker's RFC3339Nano timestamps <-> integer nanoseconds since the epoch.

The log stream prefixes every message with a UTC timestamp carrying exactly nine fractional
digits. The parser keeps the last whole-second prefix it converted, because consecutive lines
almost always fall in the same second and `calendar.timegm` is the expensive part.
"""

from __future__ import annotations

import calendar
import re
import time

NS_PER_SECOND = 1_000_000_000
# Never the start of a timestamp that passed the shape check (its byte 19 is "."), so the first
# parse always converts.
_NO_PREFIX = b"\0" * 20

_GENERAL = re.compile(
    rb"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$"
)


class TimestampParser:
    """Converts timestamps to nanoseconds; one instance per reader thread (it caches)."""

    __slots__ = ("_base_ns", "_prefix")

    def __init__(self) -> None:
        self._prefix = _NO_PREFIX  # the whole-second part last converted
        self._base_ns = 0  # ... as nanoseconds since the epoch

    def parse(self, ts: bytes) -> int:
        """Nanoseconds since the epoch; raises ValueError for anything that is not RFC3339."""
        # Once per line: indexing and startswith instead of slices, which allocate.
        if len(ts) == 30 and ts[19] == 46 and ts[29] == 90:  # "." and "Z"
            if not ts.startswith(self._prefix):
                prefix = ts[:19]
                self._base_ns = _seconds(prefix) * NS_PER_SECOND
                self._prefix = prefix
            frac = ts[20:29]
            if frac.isdigit():
                return self._base_ns + int(frac)
        return parse_general(ts)


def _seconds(prefix: bytes) -> int:
    match = _GENERAL.match(prefix + b"Z")
    if match is None:
        raise ValueError(f"not an RFC3339 timestamp: {prefix[:40]!r}")
    return _epoch(match)


def _epoch(match: re.Match[bytes]) -> int:
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        raise ValueError(f"timestamp out of range: {match.group(0)[:40]!r}")
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def parse_general(ts: bytes) -> int:
    """Any RFC3339 timestamp with up to nine fractional digits and a zone."""
    match = _GENERAL.match(ts)
    if match is None:
        raise ValueError(f"not an RFC3339 timestamp: {ts[:40]!r}")
    seconds = _epoch(match)
    frac = (match.group(7) or b"").ljust(9, b"0")
    zone = match.group(8)
    if zone != b"Z":
        sign = 1 if zone[:1] == b"+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * NS_PER_SECOND + int(frac)


def format_since(ns: int) -> str:
    """The `since` query value Docker accepts: SECONDS.NANOS (inclusive bound)."""
    return f"{ns // NS_PER_SECOND}.{ns % NS_PER_SECOND:09d}"


def format_rfc3339_nano(ns: int) -> str:
    """`ns` as UTC RFC3339 with nine fractional digits: what Podman parses to the nanosecond
    (its SECONDS.NANOS goes through a float64, which keeps about a quarter microsecond)."""
    seconds, frac = divmod(ns, NS_PER_SECOND)
    day = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{day}.{frac:09d}Z"
