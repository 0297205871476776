"""One container's log as the engine keeps it: the current file and the rotated ones, in order.

Names: the current file `P` and rotated files `P.1` (newest) .. `P.N`, each possibly compressed
as `P.N.gz`. dockerd (json-file and local, daemon/logger/loggerutils/logfile.go) rotates by
removing the oldest, renaming `P.k` -> `P.k+1`, closing the current file, renaming it to `P.1`
and creating a new `P`; with compression a goroutine then writes `P.1.gz` and removes `P.1`
(both exist meanwhile: the plain one is complete, so it is preferred). With max-file=1, 20.10
also renames to `P.1` (the next rotation renames over it); 19.03 truncated `P` in place. conmon
renames a new file over `P` (k8s-file), or with --log-rotate keeps `P.1` .. like dockerd.

Invariants:
- Bytes come in log order, each file from offset 0 (or the start position) to its very end. A
  file is *final* once its inode has left the path; the writer closed it before the rename, so
  after that, end of file is the end of the file for good, and only then does the set move on.
- The next file is found by identity, not by name: by inode while we hold it; otherwise by
  inode confirmed by its first 4 KiB (a deleted file's inode is soon another file's; measured
  here, dockerd's rotations recycled the same six inodes), or by those bytes alone for a file
  compressed since (a new inode). The first line's nanosecond timestamp makes them unique. A
  reader behind by several rotations goes through each file still there, in order.
- At most two files are held open: the one being read and, once that one is final, the newest
  (the file at the path then), held until the reader gets to it, so that the last lines of a
  `--rm` container outlive its directory. A file deleted while held loses nothing; one deleted
  before the reader got to it is a gap, counted and reported (`gaps`, `on_gap`). Where the
  names no longer prove what came next, a gap is reported too: never a silent one.
- A file truncated in place (same inode, smaller than the offset reached) is read again from 0.
  Truncation followed by writes past that offset before the next read cannot be told apart.

Reading a file to its end is FileSequence's (sequence.py); this module finds the next file.
Not thread-safe: one reader thread owns a set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from bridge.sources.logfiles.formats.lines import FileFormat
from bridge.sources.logfiles.listing import Names
from bridge.sources.logfiles.opened import FINGERPRINT_BYTES, Entry, FileId, Ident, Opened
from bridge.sources.logfiles.search import Searcher
from bridge.sources.logfiles.sequence import FileSequence

_CONTEXT_BYTES = 128 * 1024  # what a position hint is checked against, before and after it
_LISTING_TRIES = 5


class LogFileSet(FileSequence):
    def __init__(
        self,
        path: str,
        fmt: FileFormat,
        *,
        fd: int | None = None,
        on_gap: Callable[[str], None] | None = None,
    ) -> None:
        """`fd`, if given, is the current file opened earlier; the set owns it from now on.

        Starts at offset 0 of the current file. Raises OSError if there is no file to read.
        """
        first = Opened.adopt(fd, path) if fd is not None else Opened.open(path, 0, False)
        super().__init__(path, fmt, first, on_gap)
        self._names = Names(path)
        self._newest: Opened | None = None  # the current file, while a rotated one is read
        self._next: Ident | None = None  # the file after _reading, when known and not _newest

    def close(self) -> None:
        super().close()
        if self._newest is not None:
            self._newest.close()
            self._newest = None

    def settle(self) -> bool:
        """Rotated files keep their names here: nothing is waiting to be handed over."""
        return False

    def start_at(self, since_ns: int) -> tuple[FileId, int]:
        """Positions the set at the first line that can be stamped at or after `since_ns`.

        The file: the newest whose first line is stamped at or before `since_ns` (the oldest if
        none is). In it, a binary search on line timestamps (O(log n) reads; a .gz is read from
        its start). Every line stamped `since_ns` or later is at or after the position, provided
        lines are in timestamp order; dockerd stamps each stream on its own, so the caller lowers
        `since_ns` by the reorder guard first. The next read() restarts ("start").
        """
        self._refresh()
        entries = self._names.entries()
        searcher = Searcher(self.format)
        target: Opened | None = None
        fallback: Opened | None = None  # the oldest file with a line, or the newest if none has
        for f in self._candidates(entries):
            first = searcher.first_ts(f)
            if first is not None and first <= since_ns:
                target = f
                break
            if first is not None or fallback is None:
                self._release(fallback)
                fallback = f
            else:
                self._release(f)
        if target is None:
            target = fallback or self._newest or self._reading
        else:
            self._release(fallback)
        target.offset = 0 if target.gz else searcher.search(target, since_ns)
        self.search_reads = searcher.reads
        self._set_reading(target, entries, advancing=False)
        self._restart = "start"
        return self.position

    def _candidates(self, entries: list[Entry]) -> Iterator[Opened]:
        """The log's files, newest first, opened one at a time; held files no name has any more
        (unlinked: they are the oldest) come last."""
        listed = set()
        for entry in entries:
            listed.add(entry.key)
            f = self._held(entry) or self._names.open(entry)
            if f is not None:
                yield f
        for f in (self._newest, self._reading):
            if f is not None and f.key not in listed:
                yield f

    def _release(self, f: Opened | None) -> None:
        if f is not None and not self._is_held(f):
            f.close()

    def resume(self, file: FileId, offset: int) -> bool:
        """Continues from a position hint if it still names a line start in a file of this log.

        Compressed files are not resumed from (their inode is not the one the hint saw).
        False leaves the set where it was; the caller then uses start_at.
        """
        if file.compressed:
            return False
        self._refresh()
        entries = self._names.entries()
        target: Opened | None = None
        for candidate in (self._reading, self._newest):
            if candidate is not None and candidate.id == file:
                target = candidate
        for entry in entries:
            if target is None and not entry.gz and entry.key == (file.dev, file.ino):
                target = self._names.open(entry)
        if target is None:
            return False
        before = target.pread(max(0, offset - _CONTEXT_BYTES), min(offset, _CONTEXT_BYTES))
        after = target.pread(offset, _CONTEXT_BYTES)
        if offset > target.size() or not self.format.starts_line(before, after):
            if not self._is_held(target):
                target.close()
            return False
        target.offset = offset
        self._set_reading(target, entries, advancing=False)
        self._restart = "start"
        return True

    # -- the current file ------------------------------------------------------------------

    def _refresh(self) -> None:
        """While the file read is the newest held, notices the path naming another file: the
        one read is then final, and the new one is opened at once and held."""
        f = self._reading
        if self._newest is not None or f.final:
            return  # behind: the newest is held already, and the listing leads to it
        try:
            st = os.stat(self._path)
            if (st.st_dev, st.st_ino) == f.key:
                return
            new = Opened.open(self._path, 0, False)
        except (FileNotFoundError, NotADirectoryError):
            f.final = True  # renamed away or deleted: what was written before is there
            return
        if new.key == f.key:  # renamed away and back between the two looks: still current
            new.close()
            return
        f.final = True
        self._newest = new
        self._next = self._after(self._names.entries(), f)

    # -- moving on -------------------------------------------------------------------------

    def _advance(self) -> bool:
        """At the end of a final file, moves to the one after it; False if there is none yet."""
        old = self._reading
        me = Ident(old.key, old.head(FINGERPRINT_BYTES), old.gz)
        for _ in range(_LISTING_TRIES):
            entries = self._names.entries()
            newest = self._newest
            # The newest held file is newer than the one read. If no name has it any more, it
            # was renamed over or unlinked: then it is older than every file still listed.
            unlisted = newest is not None and all(e.key != newest.key for e in entries)
            i = self._find(entries, me)
            gap = ""
            target: Entry | None = None
            if i is not None:
                if entries[i].n == 0:  # the path names it again: not rotated after all
                    old.final = False
                    return False
                if i == 0 and newest is None:
                    return False  # the next file is not there yet (the writer is rotating)
                target = entries[i - 1] if i > 0 else None
            elif self._next is not None and (j := self._find(entries, self._next)) is not None:
                target = entries[j]
            elif newest is not None and self._next is not None and self._next.key == newest.key:
                target = None
            elif newest is None and not entries:
                return False  # nothing newer: the log ends here (the directory is gone)
            else:
                # Gone from the names, and so is the file known to come next (or none was
                # known): rotation outran the reader; whatever is left is newer.
                target = None if unlisted or not entries else entries[-1]
                gap = f"{old.name} rotated away while being read; the files after it are gone"
            if target is not None and target.n == 0 and unlisted:
                target = None  # the held newest was replaced since: it comes first
            new = newest if target is None else self._held(target) or self._names.open(target)
            if new is None:
                continue  # the listing went stale under us: look again
            new.offset = 0
            self._set_reading(new, entries, advancing=True)
            if gap:
                self._gap(gap)
            else:
                self._restart = "rotated"
            return True
        return False

    def _set_reading(self, new: Opened, entries: list[Entry], *, advancing: bool) -> None:
        """Reads `new` from now on, holding the newest file while it is not `new` itself.

        Moving on, only the newest already held stays held. Starting (start_at, resume), the
        file held so far is the newest, unless `new` is the current file itself."""
        old = self._reading
        keep = self._newest if advancing else self._newest or old
        if keep is new or not new.final:
            if keep is not None and keep is not new and keep is not old:
                keep.close()
            keep = None
        if old is not new and old is not keep:
            old.close()
        self._reading = new
        self._newest = keep
        if new.final and keep is None:  # rotated already: hold the current file from now on
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                current = Opened.open(self._path, 0, False)
                if current.key == new.key:
                    current.close()
                else:
                    self._newest = current
        self._next = self._after(entries, new) if new.final else None

    def _after(self, entries: list[Entry], f: Opened) -> Ident | None:
        """The identity of the file after `f` (held), if the listing says."""
        i = next((k for k, e in enumerate(entries) if e.key == f.key), None)
        if i is None:
            if entries and all(e.n == 0 for e in entries):
                # No rotated names at all: `f` was replaced (conmon renames a new file over
                # it; newer dockerd with max-file=1 unlinks it): the current one comes next.
                return Ident(entries[0].key, None, False)
            return None
        if i == 0:
            return None
        entry = entries[i - 1]
        if self._newest is not None and entry.key == self._newest.key:
            return Ident(entry.key, None, False)  # held: its inode cannot be another file's
        # (a prefix, if it is the current file and shorter than the fingerprint yet)
        return Ident(entry.key, self._names.head(entry, FINGERPRINT_BYTES), entry.gz)

    # -- identities ------------------------------------------------------------------------

    def _find(self, entries: list[Entry], ident: Ident) -> int | None:
        """Where a file is in the listing: by inode, confirmed by its first bytes unless it is
        held (a deleted file's inode is soon another file's); or, for a file compressed since
        (a new inode), by the first bytes of each .gz."""
        held = any(f is not None and f.key == ident.key for f in (self._reading, self._newest))
        for i, entry in enumerate(entries):
            if entry.key == ident.key and (
                held or not ident.fp or self._names.head(entry, len(ident.fp)) == ident.fp
            ):
                return i
        if ident.fp and not ident.gz:
            for i, entry in enumerate(entries):
                if entry.gz and self._names.head(entry, len(ident.fp)) == ident.fp:
                    return i
        return None

    def _held(self, entry: Entry | None) -> Opened | None:
        """The held file a listed one is: the same inode, or a .gz copy of its contents."""
        if entry is None:
            return None
        for f in (self._reading, self._newest):
            if f is not None and f.key == entry.key:
                return f
        for f in (self._reading, self._newest):
            if f is not None and entry.gz and not f.gz:
                fp = f.head(FINGERPRINT_BYTES)
                if fp and self._names.head(entry, len(fp)) == fp:
                    return f
        return None

    def _is_held(self, f: Opened) -> bool:
        return f is self._reading or f is self._newest
