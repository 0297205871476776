"""The names of one log's files: the current file `P` and the rotated `P.1` .. `P.N[.gz]`.

A name says where a file was when the directory was read, nothing more: the writer renames
while we look, and a deleted file's inode soon belongs to another file. So a listing is taken
twice until both agree, and a file opened by name is checked to be the file listed.

Invariants:
- A listing is newest first (`P`, then `P.1` ..), one entry per number; while both `P.k` and
  `P.k.gz` exist (dockerd compressing), the plain one is listed: it is complete.
- Whoever runs the container writes in its directory: a name that leads to anything but a
  regular file (a symlink, a FIFO, a device, a directory) is no file of the log. It is left out
  of the listing, logged once per kind, and never opened or followed; a file is opened by name
  only non-blocking and without following a symlink (identity.py).
- Opening by name returns the file listed or nothing, never another file now at that name; a
  file is found again by inode confirmed by its first bytes, or by those bytes alone for a file
  compressed since (`find`).

Which file comes next in the log is numbered.py's; this module only lists and opens.
Not thread-safe: one reader thread owns the set these names belong to.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import time

from bridge.sources.logfiles.rotation.identity import FileId, Fingerprint, Listed, Opened
from bridge.sources.logfiles.safe_open import file_kind

log = logging.getLogger(__name__)

_SCAN_TRIES = 5  # scans a listing takes until two agree


class Names:
    """The names of one log's files, and the files they lead to."""

    def __init__(self, path: str) -> None:
        self.current = path
        self._dir, base = os.path.split(path)
        self._pattern = re.compile(re.escape(base) + r"(?:\.([1-9][0-9]{0,5})(\.gz)?)?")
        self._refused: set[str] = set()  # kinds of non-files met at a log name, logged once

    def listing(self) -> list[Listed]:
        """The files of this log, newest first; two scans must agree (renames are under way)."""
        previous: list[Listed] | None = None
        for _ in range(_SCAN_TRIES):
            listing = self._scan()
            if listing == previous:
                break
            previous = listing
            time.sleep(0.0005)
        return previous or []

    def _scan(self) -> list[Listed]:
        found: dict[int, Listed] = {}
        try:
            listing = os.scandir(self._dir or ".")
        except (FileNotFoundError, NotADirectoryError):
            return []
        with listing:
            for dirent in listing:
                match = self._pattern.fullmatch(dirent.name)
                if match is None:
                    continue
                n, gz = int(match.group(1) or 0), match.group(2) is not None
                if n in found and not found[n].gz:
                    continue  # P.k and P.k.gz during compression: the plain one is complete
                try:
                    st = dirent.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    self._refuse(dirent.name, file_kind(st.st_mode))
                    continue
                found[n] = Listed(n, FileId.of(st, gz))
        return [found[n] for n in sorted(found)]

    def _refuse(self, name: str, kind: str) -> None:
        if kind not in self._refused:
            self._refused.add(kind)
            log.warning("%s: %s is a %s, not a log file; left alone", self._dir or ".", name, kind)

    def find(self, listing: list[Listed], known: Fingerprint, *, held: bool) -> int | None:
        """Where a file is in the listing: by inode, confirmed by its first bytes unless it is
        `held` (a deleted file's inode is soon another file's, not one still open); or, for a
        file compressed since (a new inode), by the first bytes of each .gz."""
        for i, listed in enumerate(listing):
            if listed.id == known.id and (
                held or not known.head or self.head(listed, len(known.head)) == known.head
            ):
                return i
        if known.head and not known.id.compressed:
            for i, listed in enumerate(listing):
                if listed.gz and self.head(listed, len(known.head)) == known.head:
                    return i
        return None

    def path(self, listed: Listed) -> str:
        if listed.n == 0:
            return self.current
        return f"{self.current}.{listed.n}{'.gz' if listed.gz else ''}"

    def open(self, listed: Listed | None) -> Opened | None:
        """Opens a listed file, or None if the name now holds another file (or none)."""
        if listed is None:
            return None
        try:
            f = Opened.open(self.path(listed), listed.n, listed.gz)
        except OSError:  # gone, or since replaced by what is no file (a symlink, a FIFO, ...)
            return None
        if f.id != listed.id:
            f.close()
            return None
        return f

    def head(self, listed: Listed, n: int) -> bytes:
        """The first n bytes of a listed file's contents (b"" if it is not there any more)."""
        if listed.gz:
            return Opened.gz_head(self.path(listed), n)
        with contextlib.suppress(OSError):
            f = self.open(listed)
            if f is not None:
                with contextlib.closing(f):
                    return f.head(n)
        return b""
