"""Docker's `local` log driver: length-framed protobuf entries. Pure and I/O-free.

Each entry (daemon/logger/local/local.go, v20.10.24) is a 4-byte big-endian length, a
protobuf LogEntry of that length, and the same length again:

    LogEntry { 1 source string ("stdout"/"stderr"), 2 time_nano int64, 3 line bytes,
               4 partial bool, 5 partial_log_metadata { 1 last bool, 2 id string, 3 ordinal },
               6 attrs (newer dockerd; skipped like any unknown field) }

`line` never carries the newline (the copier strips it; json-file adds it back, local does not)
and keeps the container's bytes as they were, invalid UTF-8 included. A piece of a line longer
than 16 KiB has partial=true; the last piece of such a line also has metadata last=true, and
that one ends the line. A line the container left without a newline at exit is a piece whose
last is false. So: complete = not partial or last.

Resync: when the lengths disagree (damage, or a start in the middle of an entry) the parser
looks for the next offset where a well-framed entry starts. gogo-protobuf writes fields in
order and dockerd always sets the source, so every entry begins `0a 06 "std"`: candidates are
found with bytes.find, not byte by byte. A line whose bytes themselves look like a whole entry
(both lengths, a valid protobuf) could be taken for one by a resync; only resyncs can be misled,
and a container can only mislead them about its own lines.

The resume search must not be misled at all, so it never resyncs: it walks back from a line
boundary (the end of the file) by the trailing lengths (`starts_before`). From a boundary, the
4 bytes before it are the real previous entry's length, whatever its line holds: each step
lands on the real entry's start, so a container's bytes cannot move a resume position.
"""

from __future__ import annotations

import struct

from bridge.core.record import STDERR, STDOUT
from bridge.sources.logfiles.formats.lines import (
    MAX_LINE_BYTES,
    FileFormat,
    FileLine,
    ParserBase,
    Probed,
    in_range,
)

_LENGTH = struct.Struct(">I")
_MARK = b"\n\x06std"  # field 1, length 6, "stdout"/"stderr"
_NEED, _BROKEN = -1, -2
_INT64 = 1 << 64
# what fits before the marker (the length) and the shortest tail that may hold a cut-off one
_BEFORE_MARK, _KEEP = 4, 8

Entry = tuple[int, int, bytes, bool]  # stream, ts_ns, line, complete


def frame_end(data: bytes, pos: int, n: int, cap: int = MAX_LINE_BYTES) -> int:
    """Where the entry framed at `pos` ends: _NEED if not all there, _BROKEN if the leading and
    trailing lengths disagree or are beyond the cap."""
    if n - pos < 4:
        return _NEED
    size: int = _LENGTH.unpack_from(data, pos)[0]
    if size > cap:
        return _BROKEN
    stop = pos + 8 + size
    if stop > n:
        return _NEED
    if data[stop - 4 : stop] != data[pos : pos + 4]:
        return _BROKEN
    return stop


def _varint(p: bytes, pos: int, n: int) -> tuple[int, int]:
    value = shift = 0
    while pos < n and shift < 70:
        b = p[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value & (_INT64 - 1), pos
        shift += 7
    raise ValueError("truncated varint")


def decode(p: bytes, pos: int, n: int) -> Entry:
    """Decodes the LogEntry in p[pos:n]; raises ValueError for anything else."""
    source = b""
    ts = 0
    line = b""
    partial = last = False
    while pos < n:
        tag, pos = _varint(p, pos, n)
        field, wire = tag >> 3, tag & 7
        if field == 0:  # invalid in protobuf; also what an entry's own length starts with
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(p, pos, n)
            if field == 2:
                ts = value - _INT64 if value >> 63 else value
            elif field == 4:
                partial = value != 0
            elif field in (1, 3, 5):
                raise ValueError(f"field {field} is not a varint")
        elif wire == 2:
            size, pos = _varint(p, pos, n)
            stop = pos + size
            if stop > n:
                raise ValueError("field runs past the entry")
            if field == 1:
                source = p[pos:stop]
            elif field == 3:
                line = p[pos:stop]
            elif field == 5:
                last = _last(p, pos, stop)
            elif field in (2, 4):
                raise ValueError(f"field {field} is not a varint")
            pos = stop
        elif wire == 1 or wire == 5:
            pos += 8 if wire == 1 else 4
            if pos > n or field in (1, 2, 3, 4, 5):
                raise ValueError(f"field {field} has a fixed-size wire type")
        else:
            raise ValueError(f"wire type {wire}")
    stream = STDOUT if source == b"stdout" else STDERR if source == b"stderr" else 0
    if not stream:
        raise ValueError(f"source {source[:20]!r}")
    if not in_range(ts):
        raise ValueError(f"time_nano out of range: {ts}")
    return stream, ts, line, not partial or last


def _last(p: bytes, pos: int, n: int) -> bool:
    """PartialLogEntryMetadata.last (1 last bool, 2 id string, 3 ordinal int32)."""
    last = False
    while pos < n:
        tag, pos = _varint(p, pos, n)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(p, pos, n)
            if field == 1:
                last = value != 0
        elif wire == 2:
            size, pos = _varint(p, pos, n)
            pos += size
        elif wire == 1 or wire == 5:
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"partial metadata: wire type {wire}")
    if pos != n:
        raise ValueError("partial metadata runs past its field")
    return last


class LocalParser(ParserBase):
    __slots__ = ("_need", "_scanning")

    def __init__(self, offset: int = 0, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        super().__init__(offset, max_line_bytes)
        self._scanning = False  # looking for the next entry after damage
        self._need = 0  # bytes the held entry needs before it is worth parsing again

    def reset(self, offset: int) -> int:
        self._scanning = False
        self._need = 0
        return super().reset(offset)

    def feed(self, data: bytes) -> list[FileLine]:
        if self._parts and self._held + len(data) < self._need:
            self._hold(data)
            return []
        data = self._joined(data)
        out: list[FileLine] = []
        fmt, cap = self._fmt.format, self._max
        pos, n, base = 0, len(data), self._base
        need = 0
        while pos < n:
            if self._scanning:
                mark = data.find(_MARK, pos + _BEFORE_MARK)
                if mark < 0:
                    pos = max(pos, n - _KEEP)
                    break
                pos = mark - _BEFORE_MARK
            stop = frame_end(data, pos, n, cap)
            if stop == _NEED:
                if not self._scanning and n - pos >= 4:
                    need = 8 + int(_LENGTH.unpack_from(data, pos)[0])
                break
            if stop > 0 and (fast := _common(data, pos + 4, stop - 4)) is not None:
                stream, ts, line = fast
                out.append(FileLine(stream, ts, fmt(ts), line, True, base + stop))
                self._scanning = False
                pos = stop
                continue
            try:
                if stop == _BROKEN:
                    raise ValueError("the lengths before and after it disagree or pass the cap")
                stream, ts, line, complete = decode(data, pos + 4, stop - 4)
                out.append(FileLine(stream, ts, fmt(ts), line, complete, base + stop))
            except ValueError as e:
                if self._scanning:  # not an entry after all: look further
                    pos += 1
                    continue
                self._bad(f"local entry at offset {base + pos}: {e}")
                if stop == _BROKEN:
                    self._scanning = True
                    pos += 1
                    continue
            self._scanning = False
            pos = stop
        self._base = base + pos
        self._need = need
        if pos < n:
            self._hold(data[pos:])
        return out


_Q = struct.Struct("<Q")
_OUT_ERR = {b"out": STDOUT, b"err": STDERR}
_CONTINUED = 0x8080808080808080


def _common(p: bytes, pos: int, n: int) -> tuple[int, int, bytes] | None:
    """The usual entry in p[pos:n], decoded without a loop: `0a 06 "std(out|err)" 10 <time in
    9 bytes> 1a <length in 1 byte> line` and nothing else (not partial). None otherwise."""
    if n - pos < 20 or not p.startswith(_MARK, pos) or p[pos + 8] != 16 or p[pos + 18] != 26:
        return None
    if p[pos + 19] >= 128 or pos + 20 + p[pos + 19] != n or p[pos + 17] >= 128:
        return None
    x = _Q.unpack_from(p, pos + 9)[0]
    stream = _OUT_ERR.get(p[pos + 5 : pos + 8], 0)
    if x & _CONTINUED != _CONTINUED or not stream:
        return None
    # the 7-bit groups of the first 8 bytes, gathered pairwise: 14, 28, then 56 bits
    x &= 0x7F7F7F7F7F7F7F7F
    x = (x & 0x007F007F007F007F) | ((x & 0x7F007F007F007F00) >> 1)
    x = (x & 0x00003FFF00003FFF) | ((x & 0x3FFF00003FFF0000) >> 2)
    x = (x & 0x000000000FFFFFFF) | ((x & 0x0FFFFFFF00000000) >> 4)
    ts = x | p[pos + 17] << 56
    if not in_range(ts):
        return None
    return stream, ts, p[pos + 20 : n]


def probe(buf: bytes, aligned: bool) -> Probed | None:
    """The first well-formed entry in buf: at 0 and onwards if aligned, else wherever one is."""
    pos, n = 0, len(buf)
    scanning = not aligned
    while pos < n:
        if scanning:
            mark = buf.find(_MARK, pos + _BEFORE_MARK)
            if mark < 0:
                return None
            pos = mark - _BEFORE_MARK
        stop = frame_end(buf, pos, n)
        if stop == _NEED:
            return None
        if stop != _BROKEN:
            try:
                _, ts, _, _ = decode(buf, pos + 4, stop - 4)
            except ValueError:
                pass
            else:
                return pos, stop, ts
            if not scanning:
                pos = stop  # a damaged entry in a good frame: the next one starts after it
                continue
        scanning = True
        pos += 1
    return None


def starts_before(buf: bytes, stop: int, limit: int) -> list[int]:
    """The starts of up to `limit` entries read backwards by their trailing lengths from the
    entry boundary buf[stop]; fewer where buf does not hold the next one whole, or its two
    lengths disagree or pass the cap (damage). Framing only: nothing is decoded."""
    out: list[int] = []
    unpack = _LENGTH.unpack_from
    while stop >= 8 and len(out) < limit:
        size: int = unpack(buf, stop - 4)[0]
        start = stop - 8 - size
        if start < 0 or size > MAX_LINE_BYTES or buf[start : start + 4] != buf[stop - 4 : stop]:
            break
        out.append(start)
        stop = start
    return out


def starts_line(before: bytes, after: bytes) -> bool:
    """An entry starts at the offset: the one after it decodes, or the one before it ends there."""
    if not before:
        return True
    if after:
        found = probe(after, True)
        return found is not None and found[0] == 0
    starts = starts_before(before, len(before), 1)
    return bool(starts) and probe(before[starts[0] :], True) is not None


def _parser(offset: int) -> LocalParser:
    return LocalParser(offset)


LOCAL = FileFormat("local", _parser, probe, starts_line, starts_before)
