"""The engine-agnostic tailer: one container's log as a sequence of files, read in order.

    identity   FileId, Fingerprint, Listed and Opened: how a file is known, listed, found again
    sequence   FileSequence: read the file at hand to its true end, then take the next
    numbered   NumberedFiles: the file moves away to a name (`P` -> `P.1` .. `P.N[.gz]`):
               dockerd's json-file and local, conmon's --log-rotate
    names      Names: a numbered log's names, listed until two scans agree, opened by name
               only as the file listed; names that lead to no regular file are refused
    chain      Chain: the files the watcher handed over to a NumberedFiles, and where the
               files it missed go (`place_gaps`, `missed_by_name`)
    replaced   ReplacedFiles: a new file is renamed over `P` and the old one keeps no name
               (conmon's k8s-file); the watcher's descriptors of the new files wait in
               `Replacements` until the reader takes them
    kubelet    KubeletFiles: the kubelet renames `N.log` away and the runtime reopens it; a
               renamed file is final at its last write, not at the rename (pod logs)
    search     Searcher: where to start in a file, by a binary search on line timestamps

Here: `FileSet`, what a reader needs of either kind, and `Chunk`, what it reads. The formats of
the lines are `formats/`'s; which files a container has is the layout's (`layout.py`).
Not thread-safe: one reader thread owns a set (`Replacements` is the thread-safe part).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from bridge.sources.logfiles.formats.lines import FileFormat
from bridge.sources.logfiles.rotation.identity import FileId

READ_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Chunk:
    """The next bytes of the log.

    `restart` is empty while bytes continue the previous chunk's file. Otherwise the caller
    resets its parser at `offset` before feeding `data` (which may be empty): "rotated" (the
    next file), "truncated" (the same file from 0), "gap" (the next file still there; some
    before it were lost), "start" (after start_at/resume).

    `at_live_end`: the read stopped short at the end of the file being written, and the set
    holds no newer file: a write or a rotation after this read is announced by the watches
    (when the reader has them armed), so the reader need not read once more to find the end.
    """

    data: bytes
    file: FileId
    offset: int  # of data[0] in `file` (in the decompressed bytes for a .gz)
    restart: str = ""
    at_live_end: bool = False


# How long a stopped container's reader waits for the watcher to hand over what the kernel
# announced (`FileSet.settle`) before it takes the log as ended.
SETTLE_SECONDS = 1.0


class FileSet(Protocol):
    """What a reader needs of a container's log files (NumberedFiles, ReplacedFiles)."""

    format: FileFormat
    gaps: int  # lost stretches noticed so far (at a file boundary, also a "gap" restart)

    @property
    def position(self) -> tuple[FileId, int]: ...
    def read(self, max_bytes: int = READ_BYTES) -> Chunk: ...
    def start_at(
        self, since_ns: int, marks: Mapping[int, int] | None = None
    ) -> tuple[FileId, int]: ...  # marks: Cursor.marks(), see search.py
    # Before the log is taken as ended: True if more turned up. `timeout`: how long to wait
    # for the watcher first (0 after `handed_over` waited on another thread).
    def settle(self, timeout: float = ...) -> bool: ...
    def handed_over(self, timeout: float) -> None: ...  # that wait alone; any thread
    def close(self) -> None: ...
