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
  inode confirmed by its first bytes (a deleted file's inode is soon another file's; measured
  here, dockerd's rotations recycled the same six inodes), or by those bytes alone for a file
  compressed since (a new inode). The first line's nanosecond timestamp makes them unique. A
  reader behind by several rotations goes through each file still there, in order.
- With the watcher's `Replacements` (every file created at the path, opened at its creation,
  oldest first), the files after the first come from there, not from names: the *chain*
  (chain.py, which also places the files the watcher missed). Names are used only to start in
  a rotated file (start_at, resume) and where the watcher missed a file (it may still have a
  name); the set joins the chain again at the first file of it reached by name.
- Without them (no watch), at most two files are held open: the one being read and, once that
  one is final, the newest (the file at the path then), held until the reader gets to it, so
  that the last lines of a `--rm` container outlive its directory. A file deleted while held
  loses nothing; one deleted before the reader got to it is a gap, counted and reported
  (`gaps`, `on_gap`). Where the names no longer prove what came next, a gap is reported too:
  never a silent one.
- A file truncated in place (same inode, smaller than the offset reached) is read again from 0.
  Truncation followed by writes past that offset before the next read cannot be told apart.

A name says where a file was when the directory was read, nothing more; listing and opening
by name, and refusing names that lead to no regular file, are names.py's. Reading a file to its
end is FileSequence's (sequence.py); this module finds the next file.
Not thread-safe: one reader thread owns a set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping

from bridge.sources.logfiles.formats.lines import FileFormat
from bridge.sources.logfiles.rotation import SETTLE_SECONDS
from bridge.sources.logfiles.rotation.chain import Chain, missed_by_name
from bridge.sources.logfiles.rotation.identity import (
    FINGERPRINT_BYTES,
    FileId,
    Fingerprint,
    Listed,
    Opened,
)
from bridge.sources.logfiles.rotation.names import Names
from bridge.sources.logfiles.rotation.replaced import Replacements
from bridge.sources.logfiles.rotation.search import Searcher
from bridge.sources.logfiles.rotation.sequence import FileSequence

_CONTEXT_BYTES = 128 * 1024  # what a position hint is checked against, before and after it
_LISTING_TRIES = 5  # listings _advance takes when the one before went stale under it


class NumberedFiles(FileSequence):
    def __init__(
        self,
        path: str,
        fmt: FileFormat,
        *,
        fd: int | None = None,
        replacements: Replacements | None = None,
        on_gap: Callable[[str], None] | None = None,
    ) -> None:
        """`fd`, if given, is the current file opened earlier; the set owns it from now on, and
        the files in `replacements` (the watcher's) come after it.

        Starts at offset 0 of the current file. Raises OSError if there is no file to read.
        """
        first = Opened.adopt(fd, path) if fd is not None else Opened.open(path, 0, False)
        super().__init__(path, fmt, first, on_gap)
        self._names = Names(path)
        self._newest: Opened | None = None  # the current file, while a rotated one is read
        self._next: Fingerprint | None = None  # the file after _reading, when known and not _newest
        self._replacements = replacements
        chained = fd is not None and replacements is not None
        self._chain = Chain(first.id if chained else None)
        # Whether the file read is the chain's start: then the next file is the chain's first;
        # else names lead to it.
        self._chained = chained

    def close(self) -> None:
        super().close()
        if self._newest is not None:
            self._newest.close()
            self._newest = None
        self._chain.close()
        if self._replacements is not None:
            self._replacements.close()

    def settle(self, timeout: float = SETTLE_SECONDS) -> bool:
        """Before the log is taken as ended: lets the watcher hand over what the kernel has
        announced. True when a newer file turned up (read on)."""
        if self._replacements is None:
            return False  # rotated files keep their names: nothing waits to be handed over
        self.handed_over(timeout)
        self._take()
        return bool(self._chain.files)

    def handed_over(self, timeout: float) -> None:
        """Waits until the watcher has handed over what the kernel announced (thread-safe)."""
        if self._replacements is not None and timeout > 0:
            self._replacements.settle(timeout)

    def start_at(self, since_ns: int, marks: Mapping[int, int] | None = None) -> tuple[FileId, int]:
        """Positions the set at the first line that can be stamped at or after `since_ns`.

        The file: the newest whose first line is stamped strictly before `since_ns` (the oldest
        if none is): lines stamped exactly `since_ns` may end the file before it. In it, a binary
        search on line timestamps (O(log n) reads; a .gz is read from its start). Every line
        stamped `since_ns` or later is at or after the position, provided lines are in timestamp
        order; dockerd stamps each stream on its own, so the caller lowers
        `since_ns` by the reorder guard first. After a clock step back, lines stamped `since_ns`
        or later may come before lines stamped less: the search looks back for them within a
        step's reach (search.py), and on into the files before while its window goes on there;
        `marks` (a resume inside a window) set how far. The next read() restarts ("start").
        """
        self._refresh()
        listing = self._names.listing()
        searcher = Searcher(self.format, marks=marks)
        target: Opened | None = None
        fallback: Opened | None = None  # the oldest file with a line, or the newest if none has
        candidates = self._candidates(listing)
        for f in candidates:
            first = searcher.first_ts(f)
            if first is not None and first < since_ns:
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
        while searcher.window_at_start and (older := next(candidates, None)) is not None:
            # The window reaches back past this file's start: it may begin in the one before
            # (not looked for in a .gz, which is read from its start only).
            at = older.size() if older.gz else searcher.back_scan(older, since_ns)
            if at < older.size():
                self._release(target)
                target, older.offset = older, at
            else:
                self._release(older)
            if older.gz:
                break
        self.search_reads = searcher.reads
        self._set_reading(target, listing, advancing=False)
        self._restart = "start"
        return self.position

    def _candidates(self, listing: list[Listed]) -> Iterator[Opened]:
        """The log's files, newest first, opened one at a time; held files no name has any more
        (unlinked: they are the oldest) come last."""
        seen = set()
        for listed in listing:
            seen.add(listed.id)
            f = self._held(listed) or self._names.open(listed)
            if f is not None:
                yield f
        for f in (self._newest, self._reading):
            if f is not None and f.id not in seen:
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
        listing = self._names.listing()
        target: Opened | None = None
        for candidate in (self._reading, self._newest):
            if candidate is not None and candidate.id == file:
                target = candidate
        for listed in listing:
            if target is None and listed.id == file:  # (file is not compressed)
                target = self._names.open(listed)
        if target is None:
            return False
        before = target.pread(max(0, offset - _CONTEXT_BYTES), min(offset, _CONTEXT_BYTES))
        after = target.pread(offset, _CONTEXT_BYTES)
        if offset > target.size() or not self.format.starts_line(before, after):
            if not self._is_held(target):
                target.close()
            return False
        target.offset = offset
        self._set_reading(target, listing, advancing=False)
        self._restart = "start"
        return True

    # -- the current file ------------------------------------------------------------------

    def _refresh(self) -> None:
        """While the file read is the newest held, notices the path naming another file: the
        one read is then final, and the new one is opened at once and held (unless the watcher
        hands it over: then it is in the chain)."""
        self._take()
        f = self._reading
        if self._chained:
            if self._chain.files and not f.final:
                f.final = True  # dockerd renames the file away before it creates the next
            return
        if self._newest is not None or f.final or self._live():
            return  # behind: the newest is held already, and the listing leads to it
        try:
            st = os.stat(self._path)
            if FileId.of(st) == f.id:
                return
            new = Opened.open(self._path, 0, False)
        except (FileNotFoundError, NotADirectoryError):
            f.final = True  # renamed away or deleted: what was written before is there
            return
        if new.id == f.id:  # renamed away and back between the two looks: still current
            new.close()
            return
        f.final = True
        self._newest = new
        self._next = self._after(self._names.listing(), f)

    # -- moving on -------------------------------------------------------------------------

    def _advance(self) -> bool:
        """At the end of a final file, moves to the one after it; False if there is none yet."""
        self._take()
        if self._chained:
            if not self._chain.files:
                if self._live():
                    return False  # the watcher hands the next one over when it comes
                self._chained = False
            else:
                new, gap = self._chain.files[0]
                missed, whole = (
                    missed_by_name(self._names, new, self._reading.id) if gap else (None, False)
                )
                if missed is not None:
                    self._chain.files[0] = (new, False)  # `missed` is the file before `new`
                    self._chain.start = missed.id
                self._set_reading(missed or new, [], advancing=True)
                if gap and not whole:
                    self._gap(f"a log file of {self._path} was rotated away before it was opened")
                else:
                    self._restart = "rotated"
                return True
        return self._advance_by_name()

    def _advance_by_name(self) -> bool:
        old = self._reading
        me = Fingerprint(old.id, old.head(FINGERPRINT_BYTES))
        for _ in range(_LISTING_TRIES):
            listing = self._names.listing()
            newest = self._newest
            # The newest held file is newer than the one read. If no name has it any more, it
            # was renamed over or unlinked: then it is older than every file still listed.
            unlisted = newest is not None and all(e.id != newest.id for e in listing)
            i = self._find(listing, me)
            gap = ""
            target: Listed | None = None
            if i is not None:
                if listing[i].n == 0:  # the path names it again: not rotated after all
                    old.final = False
                    return False
                if i == 0 and newest is None:
                    return False  # the next file is not there yet (the writer is rotating)
                target = listing[i - 1] if i > 0 else None
            elif self._next is not None and (j := self._find(listing, self._next)) is not None:
                target = listing[j]
            elif newest is not None and self._next is not None and self._next.id == newest.id:
                target = None
            elif newest is None and not listing and not self._chain.files:
                return False  # nothing newer: the log ends here (the directory is gone)
            else:
                # Gone from the names, and so is the file known to come next (or none was
                # known): rotation outran the reader; whatever is left is newer.
                target = None if unlisted or not listing else listing[-1]
                gap = f"{old.name} rotated away while being read; the files after it are gone"
            if target is not None and target.n == 0 and unlisted:
                target = None  # the held newest was replaced since: it comes first
            new = newest if target is None else self._held(target) or self._names.open(target)
            if new is None and target is None and self._chain.files:
                new = self._chain.files[0][0]  # no name leads on: the oldest file handed over
                if self._chain.files[0][1] and not gap:
                    gap = f"a log file after {old.name} was rotated away before it was opened"
            if new is None:
                continue  # the listing went stale under us: look again
            new.offset = 0
            self._set_reading(new, listing, advancing=True)
            if gap:
                self._gap(gap)
            else:
                self._restart = "rotated"
            return True
        return False

    def _set_reading(self, new: Opened, listing: list[Listed], *, advancing: bool) -> None:
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
        self._chained = self._chain.start is not None and new.id == self._chain.start
        self._join_chain()
        if new.final and keep is None and not self._live():  # hold the current file from now on
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                current = Opened.open(self._path, 0, False)
                if current.id == new.id:
                    current.close()
                else:
                    self._newest = current
        self._next = self._after(listing, new) if new.final else None

    def _after(self, listing: list[Listed], f: Opened) -> Fingerprint | None:
        """The identity of the file after `f` (held), if the listing says."""
        i = next((k for k, e in enumerate(listing) if e.id == f.id), None)
        if i is None:
            if listing and all(e.n == 0 for e in listing):
                # No rotated names at all: `f` was replaced (conmon renames a new file over
                # it; newer dockerd with max-file=1 unlinks it): the current one comes next.
                return Fingerprint(listing[0].id, None)
            return None
        if i == 0:
            return None
        listed = listing[i - 1]
        if self._newest is not None and listed.id == self._newest.id:
            return Fingerprint(listed.id, None)  # held: its inode cannot be another file's
        # (a prefix, if it is the current file and shorter than the fingerprint yet)
        return Fingerprint(listed.id, self._names.head(listed, FINGERPRINT_BYTES))

    # -- the chain: the files the watcher handed over -----------------------------------------

    def _newer_held(self) -> bool:
        return bool(self._chain.files) or self._newest is not None or not self._live()

    def _live(self) -> bool:
        """Whether the watcher hands over every new file (it watches the log's directory)."""
        return self._replacements is not None and self._replacements.live()

    def _take(self) -> None:
        if self._replacements is None:
            return
        taken, late_gap = self._replacements.take_opened(self._path)
        if not taken and not late_gap and (self._chained or not self._chain.files):
            return  # nothing new, and nothing the file read could join
        if late_gap:  # the watcher missed a file after the newest one taken: counted now
            self._gap("a log file was rotated away before it could be opened", restart=False)
        self._chain.files += taken
        self._join_chain()
        if any(gap for _, gap in taken):
            flagged = [f for f, gap in taken if gap]
            for _ in range(self._chain.place_gaps(flagged, self._names.listing())):
                self._gap("a log file was rotated away before it could be opened", restart=False)

    def _join_chain(self) -> None:
        """If the file read is in the chain, the set is chained from it on."""
        if self._chain.join(self._reading):
            self._chained = True

    # -- identities ------------------------------------------------------------------------

    def _find(self, listing: list[Listed], known: Fingerprint) -> int | None:
        held = any(f is not None and f.id == known.id for f in (self._reading, self._newest))
        return self._names.find(listing, known, held=held)

    def _held(self, listed: Listed | None) -> Opened | None:
        """The held file a listed one is: the same inode, or a .gz copy of its contents."""
        if listed is None:
            return None
        for f in (self._reading, self._newest, *(f for f, _ in self._chain.files)):
            if f is not None and f.id == listed.id:
                return f
        for f in (self._reading, self._newest):
            if f is not None and listed.gz and not f.gz:
                head = f.head(FINGERPRINT_BYTES)
                if head and self._names.head(listed, len(head)) == head:
                    return f
        return None

    def _is_held(self, f: Opened) -> bool:
        chained = any(f is g for g, _ in self._chain.files)
        return f is self._reading or f is self._newest or chained
