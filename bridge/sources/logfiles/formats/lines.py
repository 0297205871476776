"""What every log-file parser produces, and what they share. Pure and I/O-free.

Invariants every parser keeps (each tested with Hypothesis at every split point):
- `feed(data)` returns the lines/entries that became complete and keeps an incomplete tail;
  however the file's bytes are split into `feed` calls, the same lines come out.
- It never raises, whatever the bytes. A malformed line or entry is skipped and counted
  (`malformed`, with the last reason in `last_error`), and parsing goes on at the next one.
- It holds at most about `MAX_LINE_BYTES` of an unfinished line; a longer one is dropped and
  counted (`oversized`) and parsing resyncs where the next line or frame starts.
- `FileLine.end` is the file offset just after the line, the unit of an exact resume position.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bridge.core.timestamps import NS_PER_SECOND

# dockerd cuts lines at 16 KiB, and json-file escaping can grow a piece sixfold: a real line is
# far below this. What is longer is damage (or not a log file), and must not be held in memory.
MAX_LINE_BYTES = 1024 * 1024 + 64 * 1024

# 0001-01-01 .. 9999-12-31 can be written as RFC3339; the journal wants nothing before 1970.
_MAX_NS = 253402300800 * NS_PER_SECOND


@dataclass(slots=True)
class FileLine:
    """One line (or one piece of a long line) read from an engine's log file."""

    stream: int  # bridge.core.record.STDOUT / STDERR
    ts_ns: int  # nanoseconds since the epoch
    # RFC3339Nano in UTC with exactly nine fractional digits and "Z", as the Engine API stream
    # writes it: SYSLOG_TIMESTAMP is then the same whichever source read the line.
    timestamp: bytes
    message: bytes  # without the trailing newline
    complete: bool  # False for a piece of a longer line, to be joined with the stream's next
    end: int  # offset in the file just after this line or entry


class LineParser(Protocol):
    malformed: int
    oversized: int
    last_error: str

    @property
    def offset(self) -> int:
        """The file offset of the next byte `feed` expects."""
        ...

    @property
    def pending_bytes(self) -> int: ...

    def feed(self, data: bytes) -> list[FileLine]: ...

    def reset(self, offset: int) -> int:
        """Drops the held tail (the file ended or restarted) and goes on at `offset`.

        Returns how many bytes were dropped: a file that ends in the middle of a line lost it.
        """
        ...


# (start, end, ts_ns) of a line found in a buffer, relative to the buffer.
Probed = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class FileFormat:
    """Everything the rotation-aware file set needs to know about one log format."""

    name: str
    parser: Callable[[int], LineParser]  # a new parser whose first byte is at this offset
    # The first complete, well-formed line in `buf`. With aligned=False, buf[0] may be in the
    # middle of a line: only a line that provably starts after it counts.
    probe: Callable[[bytes, bool], Probed | None]
    # Whether an offset is a line start, given up to 128 KiB before it and after it.
    starts_line: Callable[[bytes, bytes], bool]
    # For a format whose lines may hold bytes that look like a line start (local: a container's
    # line can hold whole frames), so that a probe from an arbitrary offset cannot be trusted:
    # the starts of up to `limit` lines read backwards from the line boundary buf[stop] (the
    # line that ends there, the one that ends where it starts, ...), fewer where buf does not
    # hold the next one whole or it is damaged. The search then walks back from the end of the
    # file instead of probing its middle.
    starts_before: Callable[[bytes, int, int], list[int]] | None = None


class ParserBase:
    """Offset tracking, the held tail and error accounting shared by the parsers.

    The tail is kept as a list of the pieces that arrived, joined once its end is there, so a
    long line fed in many small reads costs O(length), not O(length^2).
    """

    __slots__ = ("_base", "_fmt", "_held", "_max", "_parts", "last_error", "malformed", "oversized")

    def __init__(self, offset: int = 0, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._parts: list[bytes] = []  # an incomplete line or entry from earlier feeds
        self._held = 0  # ... its length
        self._base = offset  # file offset of the first held byte
        self._fmt = TimestampFormatter()
        self.malformed = 0
        self.oversized = 0
        self.last_error = ""

    @property
    def offset(self) -> int:
        return self._base + self._held

    @property
    def pending_bytes(self) -> int:
        return self._held

    def reset(self, offset: int) -> int:
        dropped = self._held
        self._parts = []
        self._held = 0
        self._base = offset
        return dropped

    def _hold(self, data: bytes) -> None:
        self._parts.append(data)
        self._held += len(data)

    def _joined(self, data: bytes) -> bytes:
        """The held bytes followed by `data`; the hold is emptied (`_base` stays)."""
        if not self._parts:
            return data
        self._parts.append(data)
        joined = b"".join(self._parts)
        self._parts = []
        self._held = 0
        return joined

    def _bad(self, reason: str) -> None:
        self.malformed += 1
        self.last_error = reason

    def _too_long(self, reason: str) -> None:
        self.oversized += 1
        self.last_error = reason


class NewlineParser(ParserBase):
    """A format of one line per record, ended by a newline (json-file, k8s-file).

    A line longer than the cap (newline excluded) is dropped whether it arrives whole or
    in pieces, so the outcome does not depend on the read sizes.
    """

    __slots__ = ("_skip",)

    def __init__(self, offset: int = 0, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        super().__init__(offset, max_line_bytes)
        self._skip = False  # dropping the rest of an oversized line, up to its newline

    def reset(self, offset: int) -> int:
        self._skip = False
        return super().reset(offset)

    def line(self, line: bytes, end: int) -> FileLine | None:
        """Parses one line without its newline; None (and counted) if it is malformed."""
        raise NotImplementedError

    def feed(self, data: bytes) -> list[FileLine]:
        if self._skip:
            nl = data.find(b"\n")
            if nl < 0:
                self._base += len(data)
                return []
            self._skip = False
            self._base += nl + 1
            data = data[nl + 1 :]
        if self._parts and self._held + len(data) <= self._max and data.find(b"\n") < 0:
            self._hold(data)  # still no end: just hold it
            return []
        data = self._joined(data)
        out: list[FileLine] = []
        n, base = len(data), self._base
        pos = data.rfind(b"\n") + 1
        if pos:
            self._lines(data, 0, pos, base, out)
        if n - pos > self._max:
            self._too_long(f"line longer than {self._max} bytes at offset {base + pos}")
            self._skip = True
            self._base = base + n
        else:
            self._base = base + pos
            if pos < n:
                self._hold(data[pos:])
        return out

    def _lines(self, data: bytes, pos: int, stop: int, base: int, out: list[FileLine]) -> None:
        """Parses the lines in data[pos:stop], which ends with a newline, into `out`."""
        parse, cap = self.line, self._max
        while pos < stop:
            nl = data.find(b"\n", pos)
            if nl - pos > cap:
                self._too_long(f"line longer than {cap} bytes at offset {base + pos}")
            else:
                record = parse(data[pos:nl], base + nl + 1)
                if record is not None:
                    out.append(record)
            pos = nl + 1


def newline_probe(parser: Callable[[], NewlineParser]) -> Callable[[bytes, bool], Probed | None]:
    """The probe of a newline-ended format: unaligned, the first line starts after a newline."""

    def probe(buf: bytes, aligned: bool) -> Probed | None:
        parse = parser().line
        pos = 0 if aligned else buf.find(b"\n") + 1
        if pos == 0 and not aligned:
            return None
        nl = buf.find(b"\n", pos)
        while nl >= 0:
            if nl - pos <= MAX_LINE_BYTES:
                record = parse(buf[pos:nl], nl + 1)
                if record is not None:
                    return pos, nl + 1, record.ts_ns
            pos = nl + 1
            nl = buf.find(b"\n", pos)
        return None

    return probe


def newline_starts_line(before: bytes, after: bytes) -> bool:
    return not before or before.endswith(b"\n")


class TimestampFormatter:
    """Nanoseconds -> RFC3339Nano UTC; caches the whole-second prefix, like TimestampParser."""

    __slots__ = ("_prefix", "_sec")

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = b""

    def format(self, ns: int) -> bytes:
        """Raises ValueError outside years 1970..9999."""
        if not 0 <= ns < _MAX_NS:
            raise ValueError(f"timestamp out of range: {ns}")
        sec, frac = divmod(ns, NS_PER_SECOND)
        if sec != self._sec:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec)).encode()
            self._sec = sec
        return b"%s%09dZ" % (self._prefix, frac)


def in_range(ns: int) -> bool:
    return 0 <= ns < _MAX_NS
