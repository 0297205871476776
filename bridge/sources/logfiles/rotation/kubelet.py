"""One container's log as the kubelet rotates it: `N.log`, renamed away, then reopened.

The kubelet (pkg/kubelet/logs/container_log_manager.go, shared/reference/kubernetes-nodes.md)
renames `N.log` to `N.log.YYYYMMDD-HHMMSS` and asks the runtime to reopen the log
(ReopenContainerLog): containerd creates a new `N.log`, then closes the old file, and its old
loggers flush what they hold (a partial line, as "P") into the renamed file first. At the next
rotation the plain rotated file is gzipped (`.tmp`, then `.gz`: a new inode) and unlinked, and
the oldest are deleted past MaxFiles. A failed reopen renames the file back to `N.log`.

So, unlike dockerd and conmon, which close before the rename:
- A renamed file is *not* final at the rename. It is final once its writer closed it (the
  watcher's IN_CLOSE_WRITE on the rotated name, passed in through `WriterClosed`), or it is
  deleted or compressed; failing those (no watch, a lost event), once the next file has been
  there for `CLOSE_SECONDS` and it has not been written for as long: containerd closes it right
  after creating the new one. Until then the set waits on it (`waiting_for_close`), and reads
  whatever is flushed into it.
- Files are known by inode, never by name: the watcher opens each new `N.log` the moment it
  appears and hands it over in creation order (`Replacements`, as for conmon's replaced files),
  so a file renamed, gzipped or deleted before the reader gets to it is still read in full. A
  file renamed back after a failed reopen is the same inode: it is read on, nothing repeated.
- Started or resumed (the bridge was down, `rotated=True`), the rotated files still there are
  taken by name, oldest first, plain preferred over its `.gz` while both exist, so a reader
  behind by several rotations catches up from the `.gz` files; `start_at` then finds its place.

Reading is FileSequence's; ReplacedFiles (replaced.py) keeps the handed-over files in order.
Not thread-safe: one reader thread owns a set.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable

from bridge.sources.logfiles.formats.lines import FileFormat
from bridge.sources.logfiles.rotation.identity import FINGERPRINT_BYTES, FileId, Opened
from bridge.sources.logfiles.rotation.replaced import ReplacedFiles, Replacements

# Without the close event: how long after the new file appeared containerd may still write the
# old one. It closes the old loggers right after swapping the new file in and they flush at
# once (milliseconds); the bound is for a loaded node, where that can take a while.
CLOSE_SECONDS = 2.0


class WriterClosed:
    """The files whose writer closed them (inode identities), as the watcher saw it; shared by
    the watcher's thread (add) and the reader's (contains). Bounded: the oldest go first."""

    def __init__(self, limit: int = 64) -> None:
        self._lock = threading.Lock()
        self._ids: dict[FileId, None] = {}
        self._limit = limit

    def add(self, file: FileId) -> None:
        with self._lock:
            self._ids[file] = None
            while len(self._ids) > self._limit:
                del self._ids[next(iter(self._ids))]

    def __contains__(self, file: object) -> bool:
        with self._lock:
            return file in self._ids

    def discard(self, file: FileId) -> None:
        """A file newly taken in: its inode may be a closed file's, recycled."""
        with self._lock:
            self._ids.pop(file, None)


_ROTATED = re.compile(r"\.(\d{8}-\d{6})(\.gz)?")


def rotated_names(path: str) -> list[tuple[str, bool]]:
    """The rotated files of the log at `path` (name, compressed), oldest first; a plain file and
    its `.gz` both there (compression under way) count once, as the plain one."""
    directory, base = os.path.split(path)
    found: dict[str, bool] = {}
    try:
        names = os.listdir(directory or ".")
    except (FileNotFoundError, NotADirectoryError):
        return []
    for name in names:
        if not name.startswith(base):
            continue
        match = _ROTATED.fullmatch(name, len(base))
        if match is not None:
            stamp, gz = match.group(1), match.group(2) is not None
            found[stamp] = found.get(stamp, True) and gz
    return [
        (os.path.join(directory, f"{base}.{stamp}{'.gz' if gz else ''}"), gz)
        for stamp, gz in sorted(found.items())
    ]


class KubeletFiles(ReplacedFiles):
    def __init__(
        self,
        path: str,
        fmt: FileFormat,
        *,
        fd: int | None = None,
        replacements: Replacements | None = None,
        on_gap: Callable[[str], None] | None = None,
        rotated: bool = False,
        closed: WriterClosed | None = None,
        close_seconds: float = CLOSE_SECONDS,
    ) -> None:
        """`fd`: the current file, opened when it appeared (the set owns it from now on); the
        files in `replacements` come after it, and with `rotated` the rotated files still named
        come before it. Raises OSError if there is no file to read."""
        super().__init__(path, fmt, fd=fd, replacements=replacements, on_gap=on_gap)
        self._close_seconds = close_seconds
        self._closed = closed if closed is not None else WriterClosed()
        self._seen: dict[FileId, float] = {}  # when each newer file became known
        if rotated:
            self._take_rotated()

    @property
    def waiting_for_close(self) -> bool:
        """At the end of a renamed file that the runtime may still write: look again soon."""
        f = self._reading
        return f.final and not self._written_out(f)

    def files(self) -> list[Opened]:
        """The files known, in order: the one read first."""
        return [self._reading] + [f for f, _ in self._queue]

    def _take_rotated(self) -> None:
        """Puts the rotated files still named before the current one, oldest first. The file
        opened first may have been renamed (or compressed) since: it keeps its place."""
        first = self._reading
        head = first.head(FINGERPRINT_BYTES)
        ordered: list[Opened] = []
        for name, gz in rotated_names(self._path):
            try:
                f = Opened.open(name, 1, gz)
            except OSError:
                continue  # deleted or compressed meanwhile: the next name has its successor
            same = f.id == first.id or (gz and bool(head) and f.head(len(head)) == head)
            if same or any(o.id == f.id for o in ordered):
                f.close()
                if same and first not in ordered:
                    ordered.append(first)
                continue
            ordered.append(f)
        if first not in ordered:
            ordered.append(first)
        self._reading = ordered[0]
        self._queue = [(f, False) for f in ordered[1:]] + self._queue

    def _refresh(self) -> None:
        super()._refresh()
        now = time.monotonic()
        for f, _ in self._queue:
            if f.id not in self._seen:
                self._seen[f.id] = now
                # A deleted file's inode is soon a new file's: a close seen before this file
                # was taken in was another file's. (A close of this one that came before it
                # was taken in is lost with it; the time bound then decides.)
                self._closed.discard(f.id)

    def _newer_held(self) -> bool:
        return True  # a renamed file is written on until the runtime reopens: look each time

    def _advance(self) -> bool:
        old = self._reading
        if not self._written_out(old):
            return False
        if not super()._advance():
            return False
        self._closed.discard(old.id)
        self._seen.pop(old.id, None)
        return True

    def _written_out(self, f: Opened) -> bool:
        """Whether the runtime will write `f` no more (it is final: not at the path)."""
        if f.gz:
            return True
        try:
            st = os.fstat(f.fd)
        except OSError:
            return True
        if st.st_nlink == 0:
            return True  # deleted: the kubelet deletes files the runtime closed long ago
        if f.id in self._closed:
            return True
        self._refresh()
        if not self._queue:
            # No newer file: the reopen is under way, failed (the file comes back), or the
            # container ended (the reader's end of log decides). Without a watcher, the base
            # class looks at the path itself.
            return not self._replacements.live()
        quiet = self._close_seconds
        next_seen = self._seen.get(self._queue[0][0].id, 0.0)
        return time.monotonic() - next_seen >= quiet and time.time() - st.st_mtime >= quiet
