"""Finding where to start in a log file without reading all of it.

A binary search on line timestamps: probe the middle of the range, find the first line that
starts after the probe point (after a newline; for `local`, where a well-framed entry decodes),
and keep the half the line's timestamp says. Then read forward from the last line known to be
too old. Reads: O(log(size / 64 KiB)) blocks, each 64 KiB (doubled while a line is longer).

Invariant that makes it correct: `lo` only ever moves to the end of a line that was read and
stamped before `since_ns`, so with lines in timestamp order no line stamped `since_ns` or later
lies before the answer. Damaged lines are skipped by the probes and do not mislead them.
"""

from __future__ import annotations

from bridge.sources.logfiles.formats.lines import MAX_LINE_BYTES, FileFormat, Probed
from bridge.sources.logfiles.rotation.identity import Opened

BLOCK_BYTES = 64 * 1024
_PROBE_LIMIT = 2 * MAX_LINE_BYTES  # a probe gives up on a line longer than this


class Searcher:
    def __init__(self, fmt: FileFormat, block_bytes: int = BLOCK_BYTES) -> None:
        self._fmt = fmt
        self._block = block_bytes
        self.reads = 0  # blocks read, for the O(log n) test and the start-up log line

    def first_ts(self, f: Opened) -> int | None:
        """The timestamp of a file's first good line, or None if it has none (yet)."""
        size = self._block
        while True:
            buf = f.head(size)
            self.reads += 1
            found = self._fmt.probe(buf, True)
            if found is not None:
                return found[2]
            if len(buf) < size or size >= _PROBE_LIMIT:
                return None
            size *= 2

    def search(self, f: Opened, since_ns: int) -> int:
        """The offset of the first line stamped `since_ns` or later in a plain file (or where
        the next line will start, if there is none)."""
        lo, hi = 0, f.size()
        while hi - lo > self._block:
            mid = (lo + hi) // 2
            found = self._probe(f, mid - 1)  # from mid - 1: a line starting at mid counts
            if found is not None and found[0] < hi and found[2] < since_ns:
                lo = found[1]
            else:
                hi = mid
        return self._scan(f, lo, since_ns)

    def _probe(self, f: Opened, at: int) -> Probed | None:
        size = self._block
        while True:
            buf = f.pread(at, size)
            self.reads += 1
            found = self._fmt.probe(buf, False)
            if found is not None:
                return at + found[0], at + found[1], found[2]
            if len(buf) < size or size >= _PROBE_LIMIT:
                return None
            size *= 2

    def _scan(self, f: Opened, start: int, since_ns: int) -> int:
        parser = self._fmt.parser(start)
        at = start
        while True:
            buf = f.pread(at, self._block)
            self.reads += 1
            if not buf:
                return start
            at += len(buf)
            for line in parser.feed(buf):
                if line.ts_ns >= since_ns:
                    return start
                start = line.end
