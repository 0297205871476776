"""What both ways of following a container's log files share: the file at hand is read to its
true end before the next one is taken.

NumberedFiles (numbered.py) follows rotations that rename the file away (dockerd, conmon's
--log-rotate); ReplacedFiles (replaced.py) follows files renamed over the path (conmon's default).
They differ in how the next file is found (`_refresh`, `_advance`) and where a start position
is (`start_at`); reading, the end of a file (a file truncated in place is read again from 0) and
the restarts a parser sees are here, once.

Invariants:
- A file is *final* once it is no longer at the path: the writer closed it before the rename,
  so after that its end is its end for good, and only then does the set move on (`_advance`).
- Every chunk says where its bytes are (file and offset); a chunk that does not continue the
  previous one says why (`Chunk.restart`), so the caller resets its parser there.

Not thread-safe: one reader thread owns a set.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Self

from bridge.sources.logfiles.formats.lines import FileFormat
from bridge.sources.logfiles.rotation import READ_BYTES, Chunk
from bridge.sources.logfiles.rotation.identity import FileId, Opened


class FileSequence:
    """The reading half of a FileSet; subclasses find the files."""

    def __init__(
        self,
        path: str,
        fmt: FileFormat,
        first: Opened,
        on_gap: Callable[[str], None] | None,
    ) -> None:
        self._path = path
        self.format = fmt
        self._on_gap = on_gap
        self._reading = first
        self._restart = "start"
        self.gaps = 0
        self.exhausted = False  # the file read is final and read to its end; none newer known
        self.search_reads = 0  # reads the last start_at made (it should make O(log n))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._reading.close()

    @property
    def position(self) -> tuple[FileId, int]:
        """The file being read and the offset of the next byte read() returns."""
        return self._reading.id, self._reading.offset

    def read(self, max_bytes: int = READ_BYTES) -> Chunk:
        """The next bytes in log order; empty data means "at the end for now"."""
        self._refresh()
        f = self._reading
        data = f.read(max_bytes)
        if data:
            live_end = len(data) < max_bytes and not f.final and not self._newer_held()
            return self._chunk(f, data, live_end)
        if not f.final:
            if self._at_path(f):
                self.exhausted = False
                if f.truncated():
                    f.offset = 0
                    self._restart = "truncated"
                    return self._chunk(f, f.read(max_bytes))
                return self._chunk(f, b"")
            f.final = True  # gone from the path since that read: what was written is there
            data = f.read(max_bytes)
            if data:
                return self._chunk(f, data)
        if f.damaged:  # a .gz that ends early: the rest of that file is lost
            self._gap(f"{f.name}: {f.damaged}")
        advanced = self._advance()
        self.exhausted = not advanced
        f = self._reading
        data = f.read(max_bytes) if advanced else b""
        if advanced and not data:
            # An empty file (rotated before anything was written to it) is no end: read on,
            # through as many such files as the set holds.
            return self.read(max_bytes)
        return self._chunk(f, data)

    # -- for the subclasses ----------------------------------------------------------------

    def _refresh(self) -> None:
        """Before each read: takes in what is known of the files after the one read."""

    def _advance(self) -> bool:
        """At the end of a final file, moves to the next; False if none is known yet."""
        raise NotImplementedError

    def _newer_held(self) -> bool:
        """Whether a file newer than the one read may be held or unnoticed (see
        `Chunk.at_live_end`): True unless the watcher hands every new file over and none
        is held."""
        return True

    def _at_path(self, f: Opened) -> bool:
        try:
            st = os.stat(self._path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return FileId.of(st) == f.id  # the file at the path is never a .gz

    def _gap(self, reason: str, *, restart: bool = True) -> None:
        self.gaps += 1
        if restart:
            self._restart = "gap"
        if self._on_gap is not None:
            self._on_gap(reason)

    def _chunk(self, f: Opened, data: bytes, at_live_end: bool = False) -> Chunk:
        restart, self._restart = self._restart, ""
        return Chunk(data, f.id, f.offset - len(data), restart, at_live_end)
