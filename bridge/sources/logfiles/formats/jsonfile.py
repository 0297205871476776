"""Docker's json-file log: one JSON object a line. Pure and I/O-free.

    {"log":"1\\n","stream":"stdout","time":"2026-12-02T06:04:38.014497171Z"}

What dockerd writes (daemon/logger/jsonfilelog/jsonlog/jsonlogbytes.go, v20.10.24): the keys in
the order log, stream, attrs (only with `--log-opt labels/env/tag...`), time; `log` is the line
with its newline, or a piece of a longer line without one (a piece is at most 16 KiB); invalid
UTF-8 has become U+FFFD and `< > &` are escaped as \\u003c...; the time is Go's RFC3339Nano in
UTC, which trims trailing zeros of the fraction (".85669979Z", or no fraction at all).

Most lines need no JSON decoding at all: when the message holds no backslash but the final
"\\n" escape, its bytes in the file are the message. Everything else goes through json.loads.
`FileLine.timestamp` is the time with the fraction padded back to nine digits.
"""

from __future__ import annotations

import json

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

_HEAD = b'{"log":"'
_STDOUT_TIME = b'","stream":"stdout","time":"'
_STDERR_TIME = b'","stream":"stderr","time":"'
_STREAMS = {"stdout": STDOUT, "stderr": STDERR}
_TAILS = {b'out","time":"': STDOUT, b'err","time":"': STDERR}


class JsonFileParser(NewlineParser):
    __slots__ = ("_prefix", "_prefix_ns", "_ts")

    def __init__(self, offset: int = 0, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        super().__init__(offset, max_line_bytes)
        self._ts = TimestampParser()
        # the last whole second seen in a line's time, with its ".": "2026-12-02T08:21:05."
        self._prefix = b"\0"
        self._prefix_ns = 0

    def _lines(self, data: bytes, pos: int, stop: int, base: int, out: list[FileLine]) -> None:
        # The fast path, on indices into the block, for a line that is
        #   {"log":"<no backslash>[\n]","stream":"std...","time":"<RFC3339Nano>"}
        # Dockerd only writes valid JSON, so a message without a backslash has no quote either:
        # its bytes in the file are the message. About twelve C-level steps a line.
        find, startswith, append, cap = data.find, data.startswith, out.append, self._max
        prefix, base_ns = self._prefix, self._prefix_ns
        while pos < stop:
            nl = find(b"\n", pos)
            e = nl - 60  # where `","stream":"stdout","time":"` starts if the time has 30 bytes
            if e < pos + 8 or nl - pos > cap or not startswith(_HEAD, pos):
                stream = 0
            elif startswith(_STDOUT_TIME, e):
                stream = STDOUT
            elif startswith(_STDERR_TIME, e):
                stream = STDERR
            else:  # Go trimmed the fraction's zeros: the time is shorter
                e = data.rfind(b'","stream":"std', pos + 8, nl - 30)
                stream = _TAILS.get(data[e + 15 : e + 28], 0) if e >= 0 else 0
            if stream and data[nl - 1] == 125 and data[nl - 2] == 34:  # "}
                s = pos + 8
                bs = find(b"\\", s, e)
                complete = bs == e - 2 and data[e - 1] == 110  # the only escape: the final \n
                t = data[e + 28 : nl - 2]
                if complete or bs < 0:
                    if len(t) == 30 and startswith(prefix, e + 28) and t[29] == 90:
                        frac = t[20:29]
                        ts_ns = base_ns + int(frac) if frac.isdigit() else -1
                    else:
                        try:
                            ts_ns, t = self._time(t)
                        except ValueError:
                            ts_ns = -1
                        else:
                            if len(t) == 30 and t[29] == 90:  # cache its second for the next
                                prefix, base_ns = t[:20], ts_ns - int(t[20:29])
                                self._prefix, self._prefix_ns = prefix, base_ns
                    if ts_ns >= 0:
                        message = data[s : e - 2] if complete else data[s:e]
                        append(FileLine(stream, ts_ns, t, message, complete, base + nl + 1))
                        pos = nl + 1
                        continue
            if nl - pos > cap:
                self._too_long(f"line longer than {cap} bytes at offset {base + pos}")
            else:
                record = self._decoded(data[pos:nl], base + nl + 1)
                if record is not None:
                    append(record)
            pos = nl + 1

    def line(self, line: bytes, end: int) -> FileLine | None:
        out: list[FileLine] = []
        before = self.malformed
        self._lines(line + b"\n", 0, len(line) + 1, end - len(line) - 1, out)
        return out[0] if out and self.malformed == before else None

    def _decoded(self, line: bytes, end: int) -> FileLine | None:
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:  # RecursionError: [[[[... nested deep
            self._bad(f"json-file line ending at offset {end}: {str(e)[:80]}")
            return None
        if not isinstance(obj, dict):
            self._bad(f"json-file line ending at offset {end}: not an object")
            return None
        log, stream, t = obj.get("log", ""), obj.get("stream"), obj.get("time")
        number = _STREAMS.get(stream) if isinstance(stream, str) else None
        if not isinstance(log, str) or number is None or not isinstance(t, str):
            self._bad(f"json-file line ending at offset {end}: no log, stream or time")
            return None
        try:
            ts_ns, timestamp = self._time(t.encode("ascii"))
        except ValueError as e:  # UnicodeEncodeError is one
            self._bad(f"json-file line ending at offset {end}: {str(e)[:80]}")
            return None
        # surrogatepass: a "\\ud800" escape cannot come from dockerd, but must not raise either
        message = log.encode("utf-8", "surrogatepass")
        if complete := message.endswith(b"\n"):
            message = message[:-1]
        return FileLine(number, ts_ns, timestamp, message, complete, end)

    def _time(self, t: bytes) -> tuple[int, bytes]:
        n = len(t)
        if n == 30 and t[19] == 46 and t[29] == 90:
            ts_ns = self._ts.parse(t)
        elif 20 <= n < 30 and t[n - 1] == 90 and (n == 20 or (t[19] == 46 and n > 21)):
            t = t[:19] + b"." + t[20 : n - 1].ljust(9, b"0") + b"Z"  # Go trimmed the zeros
            ts_ns = self._ts.parse(t)
        else:
            ts_ns = parse_general(t)  # an offset instead of "Z": written by another tool
            return ts_ns, self._fmt.format(ts_ns)
        if not in_range(ts_ns):
            raise ValueError(f"timestamp out of range: {t[:40]!r}")
        return ts_ns, t


JSON_FILE = FileFormat(
    "json-file", JsonFileParser, newline_probe(JsonFileParser), newline_starts_line
)
