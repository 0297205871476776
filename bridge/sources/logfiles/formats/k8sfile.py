"""Podman's k8s-file log (conmon), the CRI log format. Pure and I/O-free.

    2026-12-02T06:05:22.513454705+00:00 stdout F hello
    2026-12-02T07:05:22.513454705+01:00 stderr P the first piece of a line, then its newline

What conmon 2.1.6 writes (src/ctr_logging.c, write_k8s_log and set_k8s_timestamp), checked
against Podman 4.3.1 here: per read(2) of the container's pipe (8 KiB, STDIO_BUF_SIZE), one
CLOCK_REALTIME reading, as local time (localtime_r) with nine fractional digits and tm_gmtoff
as +HH:MM (+00:00 on this UTC host), then the stream and, for each line in that buffer, "F"
for a line with its newline or "P" for the piece a read cut (conmon adds the newline), one
space each. So:
- Every record ends with a newline and no message contains one; the newline of an "F" line is
  its own, so an "F" with an empty message ends a line whose text came in "P" pieces.
- All lines of one read share a timestamp (20,000 lines of `seq` gave runs of equal ones):
  the reader's per-stream (timestamp, k) positions count them. stdout and stderr are read by
  one thread, so the file is in timestamp order across streams too.
- A line longer than 8 KiB comes as "P" pieces, each with its own timestamp, then its "F".
  A container that exits mid-line leaves a "P" without an "F" (measured: `printf x` at exit),
  which the reader flushes at the container's end.
- Timestamps in any offset are re-expressed in UTC; each line's own offset is honoured, so
  the hour that repeats when summer time ends stays in order.

Rotation (`--log-opt max-size`): conmon renames a new ctr.log.tmp over ctr.log, which unlinks
the old file (layout.py, rotation/replaced.py). conmon 2.2 adds `--log-rotate`, keeping
ctr.log.1 ..; files handed over by the watcher are still read in order, but not found by those
names.
"""

from __future__ import annotations

from bridge.core.record import STDERR, STDOUT
from bridge.core.timestamps import TimestampParser, parse_general
from bridge.sources.logfiles.formats.lines import (
    MAX_LINE_BYTES,
    FileFormat,
    FileLine,
    NewlineParser,
    in_range,
    newline_probe,
    newline_starts_line,
)

_UTC = b"+00:00"


class K8sFileParser(NewlineParser):
    __slots__ = ("_key", "_key_ns", "_key_utc", "_ts")

    def __init__(self, offset: int = 0, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        super().__init__(offset, max_line_bytes)
        self._ts = TimestampParser()
        self._key = b""  # the whole-second part and zone last converted
        self._key_ns = 0  # ... as nanoseconds since the epoch
        self._key_utc = False

    def line(self, line: bytes, end: int) -> FileLine | None:
        # The fast path: 35-byte timestamp, "stdout"/"stderr", "P"/"F", at fixed places.
        n = len(line)
        if n >= 44 and line[35] == 32 and line[42] == 32 and (n == 44 or line[44] == 32):
            name, t, tag, message = line[36:42], line[:35], line[43], line[45:]
        else:
            fields = line.split(b" ", 3)
            if len(fields) < 3 or fields[2] not in (b"P", b"F"):
                self._bad(f"k8s-file line ending at offset {end}: not TIME STREAM P|F MESSAGE")
                return None
            t, name, tag = fields[0], fields[1], fields[2][0]
            message = fields[3] if len(fields) == 4 else b""
        if tag != 70 and tag != 80:  # "F", "P"
            self._bad(f"k8s-file line ending at offset {end}: tag {tag!r}")
            return None
        stream = STDOUT if name == b"stdout" else STDERR if name == b"stderr" else 0
        if not stream:
            self._bad(f"k8s-file line ending at offset {end}: stream {name[:10]!r}")
            return None
        try:
            ts_ns, timestamp = self._time(t)
        except ValueError as e:
            self._bad(f"k8s-file line ending at offset {end}: {str(e)[:80]}")
            return None
        return FileLine(stream, ts_ns, timestamp, message, tag == 70, end)

    def _time(self, t: bytes) -> tuple[int, bytes]:
        if len(t) == 35 and t[19] == 46 and t[32] == 58:
            key = t[:19] + t[29:]
            if key != self._key:
                self._key_ns = parse_general(key)  # validates the date, time and zone
                self._key = key
                self._key_utc = t[29:] == _UTC
            frac = t[20:29]
            if frac.isdigit():
                ts_ns = self._key_ns + int(frac)
                if self._key_utc and in_range(ts_ns):
                    return ts_ns, t[:29] + b"Z"
                return ts_ns, self._fmt.format(ts_ns)
        if len(t) == 30 and t[29] == 90:
            ts_ns = self._ts.parse(t)
            if in_range(ts_ns):
                return ts_ns, t
        ts_ns = parse_general(t)
        return ts_ns, self._fmt.format(ts_ns)


K8S_FILE = FileFormat("k8s-file", K8sFileParser, newline_probe(K8sFileParser), newline_starts_line)
