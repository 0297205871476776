"""PRIORITY from plain text: an sd-daemon `<N>` prefix, or a leading level word. Pure.

Both patterns are anchored and bounded (`\\W{0,2}` then one word), so a line costs at most a
scan of its first few dozen bytes; a level value from JSON is any JSON value, and maps to a
syslog level 0-7 or None, never an exception.
"""

from __future__ import annotations

import re

from bridge.core.record import Record

LEVELS: dict[str, int] = {
    "emerg": 0,
    "emergency": 0,
    "panic": 0,
    "alert": 1,
    "crit": 2,
    "critical": 2,
    "fatal": 2,
    "err": 3,
    "error": 3,
    "warn": 4,
    "warning": 4,
    "notice": 5,
    "info": 6,
    "informational": 6,
    "debug": 7,
    "trace": 7,
}

_PREFIX = re.compile(rb"^<([0-7])>")
_WORD = re.compile(rb"^\W{0,2}(" + b"|".join(k.encode() for k in LEVELS) + rb")\b", re.IGNORECASE)


def level_priority(value: object) -> int | None:
    """A syslog priority from a level name or number, as logging libraries write them."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 7 else None
    if isinstance(value, str):
        text = value.strip().lower()
        # isdigit() alone also takes "²" (int() refuses it) and a 5,000-digit string
        if text.isascii() and text.isdigit() and len(text) <= 3:
            number = int(text)
            return number if 0 <= number <= 7 else None
        return LEVELS.get(text)
    return None


class PriorityDetector:
    def __init__(self, *, prefix: bool, words: bool) -> None:
        self._prefix = prefix
        self._words = words

    def apply(self, record: Record) -> Record:
        if record.priority is not None:
            return record
        message = record.message
        if self._prefix:
            match = _PREFIX.match(message)
            if match:
                record.priority = int(match.group(1))
                record.message = message[3:]
                return record
        if self._words:
            match = _WORD.match(message)
            if match:
                record.priority = LEVELS[match.group(1).decode().lower()]
        return record
