"""The names a container's log goes by: `P`, then `P.1` (newest rotated) .. `P.N`, each maybe `.gz`.

A name says where a file was when the directory was read, nothing more: the writer renames
while we look, and a deleted file's inode soon belongs to another file. So a listing is taken
twice until both agree, and a file opened by name is checked to be the inode listed.
"""

from __future__ import annotations

import contextlib
import os
import re
import time

from bridge.sources.logfiles.opened import Entry, Opened

_TRIES = 5


class Names:
    def __init__(self, path: str) -> None:
        self.current = path
        self._dir, base = os.path.split(path)
        self._pattern = re.compile(re.escape(base) + r"(?:\.([1-9][0-9]{0,5})(\.gz)?)?")

    def entries(self) -> list[Entry]:
        """The files of this log, newest first; two scans must agree (renames are under way)."""
        previous: list[Entry] | None = None
        for _ in range(_TRIES):
            entries = self._scan()
            if entries == previous:
                break
            previous = entries
            time.sleep(0.0005)
        return previous or []

    def _scan(self) -> list[Entry]:
        found: dict[int, Entry] = {}
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
                found[n] = Entry(n, gz, (st.st_dev, st.st_ino))
        return [found[n] for n in sorted(found)]

    def path(self, entry: Entry) -> str:
        if entry.n == 0:
            return self.current
        return f"{self.current}.{entry.n}{'.gz' if entry.gz else ''}"

    def open(self, entry: Entry | None) -> Opened | None:
        """Opens a listed file, or None if the name now holds another file (or none)."""
        if entry is None:
            return None
        try:
            f = Opened.open(self.path(entry), entry.n, entry.gz)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if f.key != entry.key:
            f.close()
            return None
        return f

    def head(self, entry: Entry, n: int) -> bytes:
        """The first n bytes of a listed file's contents (b"" if it is not there any more)."""
        if entry.gz:
            return Opened.gz_head(self.path(entry), n)
        with contextlib.suppress(OSError):
            f = self.open(entry)
            if f is not None:
                with contextlib.closing(f):
                    return f.head(n)
        return b""
