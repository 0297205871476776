"""One container's log where rotation renames a new file over it: Podman's ctr.log (conmon).

conmon closes ctr.log, creates ctr.log.tmp and renames it over ctr.log (layout.py): a file
replaced keeps no name, so the files after the first come from the watcher's descriptors
(handoff.py), each opened the moment it appeared, in creation order. Reading itself is
FileSequence's (sequence.py), shared with LogFileSet (files.py) for Docker's named rotations.

Invariants:
- Bytes come in log order, each file from offset 0 (or the start position) to its very end. A
  file is *final* once it is no longer at the path: conmon closed it before the rename, so its
  end is its end for good, and only then does the set move on to the next file handed over.
- Nothing is skipped silently: a file lost before it could be opened, or dropped past the
  hand-off's bounds, counts in `gaps`; at a file boundary the next chunk restarts with "gap"
  (a gap noticed in the middle of a file only counts: resetting the parser there would cut
  the line it holds).
- Without a watch on the directory (the inotify limit), nobody hands files over: at the end of
  a final file the path is looked at instead, as LogFileSet does (a file replaced twice between
  two looks is then lost unseen).
- A file offered while the one read is still at the path is older than it (a claim raced with
  the watcher): it is dropped, and counted as a gap.

Not thread-safe: one reader thread owns a set; the hand-off is the thread-safe part.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from bridge.sources.logfiles.formats.lines import FileFormat
from bridge.sources.logfiles.handoff import HandOff
from bridge.sources.logfiles.opened import FileId, Opened
from bridge.sources.logfiles.search import Searcher
from bridge.sources.logfiles.sequence import FileSequence

SETTLE_SECONDS = 1.0


class ChainFileSet(FileSequence):
    def __init__(
        self,
        path: str,
        fmt: FileFormat,
        *,
        fd: int | None = None,
        handoff: HandOff | None = None,
        on_gap: Callable[[str], None] | None = None,
    ) -> None:
        """`fd`, if given, is the first file, opened earlier; the set owns it from now on, and
        the hand-off's files come after it. Raises OSError if there is no file to read."""
        first = Opened.adopt(fd, path) if fd is not None else Opened.open(path, 0, False)
        super().__init__(path, fmt, first, on_gap)
        self._handoff = handoff if handoff is not None else HandOff()
        self._queue: list[tuple[Opened, bool]] = []  # newer files, oldest first; gap before it

    def close(self) -> None:
        super().close()
        for f, _ in self._queue:
            f.close()
        self._queue = []
        self._handoff.close()

    def settle(self, timeout: float = SETTLE_SECONDS) -> bool:
        """Before the log is taken as ended: lets the watcher hand over what the kernel has
        announced. True when a newer file turned up (read on)."""
        self._handoff.settle(timeout)
        self._refresh()
        return bool(self._queue)

    def start_at(self, since_ns: int) -> tuple[FileId, int]:
        """Positions the set at the first line that can be stamped at or after `since_ns`: in
        the newest file whose first line is stamped at or before it (the oldest if none is),
        by a binary search. Files before that one are closed. The next read() restarts."""
        self._refresh()
        files = [self._reading] + [f for f, _ in self._queue]
        searcher = Searcher(self.format)
        chosen = 0
        for i, f in enumerate(files):
            first = searcher.first_ts(f)
            if first is not None and first > since_ns:
                break
            if first is not None:
                chosen = i
        if chosen:
            for f in files[:chosen]:
                f.close()
            self._reading = files[chosen]
            self._queue = self._queue[chosen:]
        target = self._reading
        target.offset = searcher.search(target, since_ns)
        self.search_reads = searcher.reads
        self._restart = "start"
        return self.position

    # -- the files after the one read ------------------------------------------------------

    def _refresh(self) -> None:
        handed, late_gap = self._handoff.take()
        if late_gap:
            self._gap("a log file was replaced before it could be opened", restart=False)
        known = {self._reading.key} | {f.key for f, _ in self._queue}
        for h in handed:
            try:
                f = Opened.adopt(h.fd, self._path)
            except OSError:
                os.close(h.fd)
                continue
            if f.key in known:
                f.close()  # the file read, found by its name before the watcher handed it over
                continue
            if not self._queue and not self._reading.final and self._at_path(self._reading):
                f.close()  # older than the one read (see the module docstring)
                self._gap("a log file was handed over after a newer one", restart=False)
                continue
            known.add(f.key)
            self._queue.append((f, h.gap_before))

    def _advance(self) -> bool:
        """At the end of a final file, moves to the next; False if none is known yet."""
        if not self._queue and not self._handoff.live():
            try:  # nobody hands files over: the file at the path, if it is another one
                new = Opened.open(self._path, 0, False)
            except (FileNotFoundError, NotADirectoryError):
                return False
            if new.key == self._reading.key:
                new.close()
                return False
            self._queue.append((new, False))
        if not self._queue:
            return False
        new, gap = self._queue.pop(0)
        self._reading.close()
        self._reading = new
        new.offset = 0
        if gap:
            self._gap(f"files of {self._path} were lost before they could be read")
        else:
            self._restart = "rotated"
        return True
