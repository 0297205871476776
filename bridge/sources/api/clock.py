"""The engine's clock, as its answers' `Date` headers tell it, for windows that end before
what the engine has surely written (sources/api/reader.py, Podman).

A remote engine's clock may differ from ours by any amount, so the edge of a window is taken on
the engine's clock: our clock plus the offset the latest `Date` header showed. `Date` has whole
seconds and is truncated, so the offset it gives is at most a second behind the truth: a window
then ends a little early, never late. A missing or unreadable `Date` (a proxy, a hostile answer)
keeps the offset known before, or ours (zero) at first.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Protocol

NS_PER_SECOND = 1_000_000_000


class HasHeaders(Protocol):
    @property
    def headers(self) -> Mapping[str, str]: ...


class EngineClock:
    def __init__(self) -> None:
        self.offset_ns = 0
        self.known = False  # a Date header was read (else: asked once, or our clock)

    def observe(self, response: HasHeaders) -> None:
        local = time.time_ns()
        self.known = True  # asked: a missing Date will not be asked for again
        engine = _date_ns(response.headers.get("Date"))
        if engine is not None:
            self.offset_ns = engine - local

    def now_ns(self) -> int:
        return time.time_ns() + self.offset_ns


def _date_ns(value: object) -> int | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        return None
    seconds = int(parsed.timestamp())
    return seconds * NS_PER_SECOND if 0 < seconds < 1 << 33 else None
