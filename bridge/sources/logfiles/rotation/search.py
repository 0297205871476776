"""Finding where to start in a log file without reading all of it.

Newline formats (json-file, k8s-file), where a container's bytes never hold a raw newline: a
binary search on line timestamps. Probe the middle of the range, find the first line that
starts after the probe point (after a newline), and keep the half the line's timestamp says.
Then read forward from the last line known to be too old. Reads: O(log(size / 64 KiB)) blocks,
each 64 KiB (doubled while a line is longer). `lo` only ever moves to the end of a line that
was read and stamped before `since_ns`, so with lines in timestamp order no line stamped
`since_ns` or later lies before the answer. Damaged lines are skipped by the probes.

`local`, where a line may hold bytes that frame and decode like entries: a probe from an
arbitrary offset can land on a container's forged entry, so there is none. The search walks
back from the end of the file, entry by entry, by the trailing lengths (`starts_before`), to
the last entry stamped before `since_ns`, decoding one entry in `_STRIDE` on the way. Each step
from a boundary lands on the previous real entry's start, whatever the lines hold, so the
answer is always an offset that an aligned parse from the file's start reaches. It reads the
bytes after the answer, which the reader then reads anyway, and no more. Where timestamps step
back before the answer (a clock step among lines already forwarded), it is still right: only
lines after it are looked at. (A step back among the lines after it needs the position's
offset, not its timestamp.) If the walk cannot go on (a damaged entry, or the last one still
being written), it parses forward from the file's start.
Limit: an entry being written at the very moment the file's size is taken, whose cut-off bytes
end like a frame, could start the walk off a boundary.

Newline formats after a clock step. The wall clock can step back (core/cursor.py): then lines
stamped below `since_ns` follow lines stamped above it, a probe that lands among them takes the
place for later than it is, and the lines between would be skipped. So after the binary search
the bytes before its answer are scanned back (`_back_scan`) for a line stamped `since_ns` or
later, block by block, as long as they hold lines stamped less than `STEP_REACH_NS` before
`since_ns` and for at most `BACK_SCAN_BYTES`; the answer moves back to the first one found. A
step back by less than `STEP_REACH_NS` whose window fits in `BACK_SCAN_BYTES` is found; in a
file without a step the scan costs one read, or reads up to `STEP_REACH_NS` of a busy log.
A resume from inside a window knows more: its position names the stamp that set the stream's
high-water mark (core/cursor.py), and that line lies before the window. Such a stream's mark
(`marks`) is looked for first ahead of the answer (`_look_ahead`: after a step, lines stamped
between the resume line and the mark precede the mark, and what lies there the reader reads
anyway), then behind it with no bound in time and up to `WINDOW_SCAN_BYTES`: the scan goes on
until every mark's line is behind it, then by the usual bounds (newline formats; `local`'s walk
keeps the usual bounds).
`local`'s walk back goes on the same way past the first entry stamped before `since_ns` it meets
(`_walk_back_further`), entry by entry from boundaries it walked to. A scan that gets to the
file's start with every line within reach says so (`window_at_start`): the window may begin in
the file before, which the caller scans back from its end (`back_scan`). The bounds go on across
files, as if they were one: BACK_SCAN_BYTES in all, and a block cut by a file's start is
completed in the file before (for `local`, each file's walk has its own bound).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

from bridge.sources.logfiles.formats.lines import MAX_LINE_BYTES, FileFormat, Probed
from bridge.sources.logfiles.rotation.identity import Opened

BLOCK_BYTES = 64 * 1024
STEP_REACH_NS = 10 * 1_000_000_000  # how far back a clock step is looked for
BACK_SCAN_BYTES = 1024 * 1024  # ... and in how many bytes before the answer
WINDOW_SCAN_BYTES = 256 * 1024 * 1024  # how far back a resume inside a window looks for its mark
_BACK_BLOCK_BYTES = 256 * 1024
_PROBE_LIMIT = 2 * MAX_LINE_BYTES  # a probe gives up on a line longer than this
_STRIDE = 32  # lines walked back over by their framing alone before one is decoded


class Searcher:
    def __init__(
        self,
        fmt: FileFormat,
        block_bytes: int = BLOCK_BYTES,
        marks: Mapping[int, int] | None = None,
    ) -> None:
        """`marks`: stream -> the high-water stamp of a resume position inside a step's window
        (Cursor.marks()), whose line a newline format's back-scan goes on to find."""
        self._fmt = fmt
        self._block = block_bytes
        self._marks = dict(marks or {})
        self._unfound = set(self._marks)
        self.reads = 0  # blocks read, for the O(log n) test and the start-up log line
        # The last search or back_scan looked back to the file's start, every line it met there
        # stamped within STEP_REACH_NS of `since_ns`: a step's window may go on before the file.
        self.window_at_start = False
        # The back-scan's bytes left, and its block cut by a file's start (bytes left, newest
        # stamp in it): back_scan goes on from there in the file before.
        self._scan_left, self._block_left, self._block_newest = BACK_SCAN_BYTES, 0, -1

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
        self.window_at_start = False
        self._unfound = set(self._marks)
        budget = WINDOW_SCAN_BYTES if self._unfound else BACK_SCAN_BYTES
        self._scan_left, self._block_left, self._block_newest = budget, 0, -1
        if self._fmt.starts_before is not None:
            return self._walk_back(f, since_ns, self._fmt.starts_before)
        lo, hi = 0, f.size()
        while hi - lo > self._block:
            mid = (lo + hi) // 2
            found = self._probe(f, mid - 1)  # from mid - 1: a line starting at mid counts
            if found is not None and found[0] < hi and found[2] < since_ns:
                lo = found[1]
            else:
                hi = mid
        answer = self._scan(f, lo, since_ns)
        if self._unfound:
            self._look_ahead(f, answer, since_ns)
            if not self._unfound:
                self._scan_left = BACK_SCAN_BYTES  # the marks are ahead: a restart like others
        return self._back_scan(f, answer, since_ns)

    def _look_ahead(self, f: Opened, at: int, since_ns: int) -> None:
        """Takes out of `_unfound` the marks whose line lies after `at`. From before its mark,
        a stream's lines climb to it, stamped at or above `since_ns` and below the mark; from
        inside its window, a line of it stamped below `since_ns` or above the mark comes first
        (then the mark is behind, for the back-scan). Reads what a reader from `at` would read
        anyway, up to the window's budget."""
        marks, unfound = self._marks, self._unfound
        undecided = set(unfound)
        parser = self._fmt.parser(at)
        left = WINDOW_SCAN_BYTES
        while undecided and left > 0:
            buf = f.pread(at, self._block)
            self.reads += 1
            if not buf:
                return
            at += len(buf)
            left -= len(buf)
            for line in parser.feed(buf):
                stream = line.stream
                if stream not in undecided:
                    continue
                if line.ts_ns == marks[stream]:
                    unfound.discard(stream)
                    undecided.discard(stream)
                elif line.ts_ns < since_ns or line.ts_ns > marks[stream]:
                    undecided.discard(stream)

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

    def back_scan(self, f: Opened, since_ns: int) -> int:
        """The start of the first line stamped `since_ns` or later among the last lines of a
        plain file within a step's reach (the file before one whose start is in a window), or
        its size if there is none."""
        self.window_at_start = False
        size = f.size()
        if self._fmt.starts_before is not None:
            return self._walk_back_further(f, size, since_ns, self._fmt.starts_before)
        return self._back_scan(f, size, since_ns)

    def _back_scan(self, f: Opened, answer: int, since_ns: int) -> int:
        """`answer`, or the start of the first line stamped `since_ns` or later before it
        (a clock step's window: see the module docstring). Blocks and the byte bound go on
        across files: a block cut by a file's start goes on at the end of the file before."""
        floor = max(0, answer - self._scan_left)
        reach = since_ns - STEP_REACH_NS
        marks, unfound = self._marks, self._unfound
        end = answer  # a line start: the bytes before it are scanned next
        self.window_at_start = False
        while end > floor:
            block = self._block_left or _BACK_BLOCK_BYTES
            start = max(floor, end - block)
            buf = f.pread(start, end - start)
            self.reads += 1
            self._scan_left -= end - start
            skip = 0 if start == 0 else buf.find(b"\n") + 1
            if skip == 0 and start > 0:
                return answer  # no line starts in the block: a line longer than it (damage)
            at = start + skip
            newest = self._block_newest
            looking = bool(unfound)
            for line in self._fmt.parser(at).feed(buf[skip:]):
                if line.ts_ns >= since_ns and at < answer:
                    answer = at
                if unfound and line.stream in unfound and line.ts_ns == marks[line.stream]:
                    # The line that set the mark (a window's lines are all stamped below it;
                    # an answer past the window may have lines above it after it)
                    unfound.discard(line.stream)
                newest = max(newest, line.ts_ns)
                at = line.end
            if looking and not unfound:  # every mark is behind us: the usual bound from here
                self._scan_left = min(self._scan_left, BACK_SCAN_BYTES)
                floor = max(floor, start + skip - self._scan_left)
            if start == 0 and end < block:  # the rest of the block is in the file before
                self._block_left, self._block_newest = block - end, newest
                self.window_at_start = True
                return answer
            self._block_left, self._block_newest = 0, -1
            if newest < reach and not unfound:
                return answer  # every line here is long before `since_ns`: no step reaches this far
            end = start + skip
        self.window_at_start = end == 0
        return answer

    def _walk_back(
        self, f: Opened, since_ns: int, starts_before: Callable[[bytes, int, int], list[int]]
    ) -> int:
        end = f.size()  # a line boundary: the end of the file, then the start of each line
        base, buf = end, b""  # buf holds the file's bytes from `base`; `end` lies within
        while end > 0:
            starts = starts_before(buf, end - base, _STRIDE)
            if not starts:
                if base == 0 or end - base > _PROBE_LIMIT:
                    return self._scan(f, 0, since_ns)  # damaged, or the last entry is unfinished
                # read on backwards: a block, or as much again while one entry needs it
                start = max(0, base - max(self._block, end - base))
                more = f.pread(start, base - start)
                self.reads += 1
                if len(more) != base - start:
                    return self._scan(f, 0, since_ns)  # truncated meanwhile
                buf = more + buf[: end - base]
                base = start
                continue
            # Only the earliest line of a stride is decoded, unless the place is within it:
            # then its lines are, from the top, down to the first stamped before `since_ns`.
            bounds = [end - base, *starts]
            first = self._fmt.probe(buf[bounds[-1] : bounds[-2]], True)
            if first is None:
                return self._scan(f, 0, since_ns)  # framed, but not an entry: damage
            if first[2] >= since_ns:
                end = base + bounds[-1]
                continue
            for stop, start in itertools.pairwise(bounds):
                found = self._fmt.probe(buf[start:stop], True)
                if found is None:
                    return self._scan(f, 0, since_ns)
                if found[2] < since_ns:
                    return self._walk_back_further(f, base + stop, since_ns, starts_before)
        self.window_at_start = True
        return 0

    def _walk_back_further(
        self,
        f: Opened,
        answer: int,
        since_ns: int,
        starts_before: Callable[[bytes, int, int], list[int]],
    ) -> int:
        """`_back_scan` for `local`: on back from the walk's answer, entry by entry, with the
        same bounds, for an entry stamped `since_ns` or later before a step's window."""
        floor = max(0, answer - BACK_SCAN_BYTES)
        reach = since_ns - STEP_REACH_NS
        end = base = answer  # a boundary, and buf holds the file's bytes from `base` to it
        buf = b""
        self.window_at_start = False
        while end > floor:
            starts = starts_before(buf, end - base, _STRIDE)
            if not starts:
                if base == 0 or end - base > _PROBE_LIMIT:
                    return answer
                start = max(0, base - max(_BACK_BLOCK_BYTES, end - base))
                more = f.pread(start, base - start)
                self.reads += 1
                if len(more) != base - start:
                    return answer
                buf, base = more + buf[: end - base], start
                continue
            newest = -1
            for stop, start in itertools.pairwise([end - base, *starts]):
                found = self._fmt.probe(buf[start:stop], True)
                if found is None:
                    return answer  # damage: the walk's answer stands
                if found[2] >= since_ns:
                    answer = base + start
                newest = max(newest, found[2])
            if newest < reach:
                return answer
            end = base + starts[-1]
        self.window_at_start = end == 0
        return answer
