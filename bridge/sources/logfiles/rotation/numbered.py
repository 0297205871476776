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
  oldest first), the files after the first come from there, not from names: the *chain*.
  dockerd deletes a file two rotations after creating it, within milliseconds under a fast
  writer, long before a reader behind gets to it; held since its creation, it loses nothing.
  Names are used only to start in a rotated file (start_at, resume) and where the watcher
  missed a file (it may still have a name); the set joins the chain again at the first file
  of it reached by name. The watcher tells a missed file late, with a newer file than the one
  it came before: the names place it (`_place_gaps`), and where they cannot, it is counted
  anyway, at a boundary where they no longer tell or at once.
- Without them (no watch), at most two files are held open: the one being read and, once that
  one is final, the newest (the file at the path then), held until the reader gets to it, so
  that the last lines of a `--rm` container outlive its directory. A file deleted while held
  loses nothing; one deleted before the reader got to it is a gap, counted and reported
  (`gaps`, `on_gap`). Where the names no longer prove what came next, a gap is reported too:
  never a silent one.
- A file truncated in place (same inode, smaller than the offset reached) is read again from 0.
  Truncation followed by writes past that offset before the next read cannot be told apart.

A name says where a file was when the directory was read, nothing more: the writer renames
while we look, and a deleted file's inode soon belongs to another file. So a listing is taken
twice until both agree, and a file opened by name is checked to be the file listed (`_Names`).
Whoever runs the container writes in its directory: a name that leads to anything but a regular
file (a symlink, a FIFO, a device, a directory) is no file of the log. It is left out of the
listing, logged once per kind, and never opened or followed; a file is opened by name only
non-blocking and without following a symlink (identity.py).

Reading a file to its end is FileSequence's (sequence.py); this module finds the next file.
Not thread-safe: one reader thread owns a set.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterator

from bridge.sources.logfiles.formats.lines import FileFormat
from bridge.sources.logfiles.rotation.identity import (
    FINGERPRINT_BYTES,
    FileId,
    Fingerprint,
    Listed,
    Opened,
)
from bridge.sources.logfiles.rotation.replaced import Replacements
from bridge.sources.logfiles.rotation.search import Searcher
from bridge.sources.logfiles.rotation.sequence import FileSequence
from bridge.sources.logfiles.safe_open import file_kind

log = logging.getLogger(__name__)

_CONTEXT_BYTES = 128 * 1024  # what a position hint is checked against, before and after it
_LISTING_TRIES = 5  # listings _advance takes when the one before went stale under it
_SCAN_TRIES = 5  # scans a listing takes until two agree


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
        self._names = _Names(path)
        self._newest: Opened | None = None  # the current file, while a rotated one is read
        self._next: Fingerprint | None = None  # the file after _reading, when known and not _newest
        self._replacements = replacements
        self._chain: list[tuple[Opened, bool]] = []  # handed over, oldest first; gap before it
        # The file just before _chain[0] (the watcher's first file, at first), and whether it
        # is the one read: then the next file is _chain[0]; else names lead to it.
        chained = fd is not None and replacements is not None
        self._chain_from: FileId | None = first.id if chained else None
        self._chained = chained

    def close(self) -> None:
        super().close()
        if self._newest is not None:
            self._newest.close()
            self._newest = None
        for f, _ in self._chain:
            f.close()
        self._chain = []
        if self._replacements is not None:
            self._replacements.close()

    def settle(self) -> bool:
        """Before the log is taken as ended: lets the watcher hand over what the kernel has
        announced. True when a newer file turned up (read on)."""
        if self._replacements is None:
            return False  # rotated files keep their names: nothing waits to be handed over
        self._replacements.settle(1.0)
        self._take()
        return bool(self._chain)

    def start_at(self, since_ns: int) -> tuple[FileId, int]:
        """Positions the set at the first line that can be stamped at or after `since_ns`.

        The file: the newest whose first line is stamped strictly before `since_ns` (the oldest
        if none is): lines stamped exactly `since_ns` may end the file before it. In it, a binary
        search on line timestamps (O(log n) reads; a .gz is read from its start). Every line
        stamped `since_ns` or later is at or after the position, provided lines are in timestamp
        order; dockerd stamps each stream on its own, so the caller lowers
        `since_ns` by the reorder guard first. After a clock step back, lines stamped `since_ns`
        or later may come before lines stamped less: the search looks back for them within a
        step's reach (search.py), and on into the files before while its window goes on there.
        The next read() restarts ("start").
        """
        self._refresh()
        listing = self._names.listing()
        searcher = Searcher(self.format)
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
            if self._chain and not f.final:
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
            if not self._chain:
                if self._live():
                    return False  # the watcher hands the next one over when it comes
                self._chained = False
            else:
                new, gap = self._chain[0]
                missed, whole = self._missed_by_name(new) if gap else (None, False)
                if missed is not None:
                    self._chain[0] = (new, False)  # `missed` is the file before `new`
                    self._chain_from = missed.id
                self._set_reading(missed or new, [], advancing=True)
                if gap and not whole:
                    self._gap(f"a log file of {self._path} was rotated away before it was opened")
                else:
                    self._restart = "rotated"
                return True
        return self._advance_by_name()

    def _missed_by_name(self, after: Opened) -> tuple[Opened | None, bool]:
        """The file the watcher could not open before `after` replaced it at the path, if a
        name still leads to it: the one listed just before `after` (rotated files keep names
        for a while). And whether it follows the file just read: only the names can prove it
        (the watcher may have missed several)."""
        listing = self._names.listing()
        k = next((k for k, e in enumerate(listing) if e.id == after.id), None)
        if k is None or k + 1 >= len(listing):
            return None, False  # `after` is gone from the names: so is every file before it
        listed = listing[k + 1]
        if listed.id == self._reading.id:
            return None, True  # nothing was missed after all
        if listed.gz:
            return None, False
        whole = k + 2 < len(listing) and listing[k + 2].id == self._reading.id
        f = self._names.open(listed)
        return f, whole and f is not None

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
            elif newest is None and not listing and not self._chain:
                return False  # nothing newer: the log ends here (the directory is gone)
            else:
                # Gone from the names, and so is the file known to come next (or none was
                # known): rotation outran the reader; whatever is left is newer.
                target = None if unlisted or not listing else listing[-1]
                gap = f"{old.name} rotated away while being read; the files after it are gone"
            if target is not None and target.n == 0 and unlisted:
                target = None  # the held newest was replaced since: it comes first
            new = newest if target is None else self._held(target) or self._names.open(target)
            if new is None and target is None and self._chain:
                new = self._chain[0][0]  # no name leads on: the oldest file handed over
                if self._chain[0][1] and not gap:
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
        self._chained = self._chain_from is not None and new.id == self._chain_from
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

    def _live(self) -> bool:
        """Whether the watcher hands over every new file (it watches the log's directory)."""
        return self._replacements is not None and self._replacements.live()

    def _take(self) -> None:
        if self._replacements is None:
            return
        taken, late_gap = self._replacements.take_opened(self._path)
        if late_gap:  # the watcher missed a file after the newest one taken: counted now
            self._gap("a log file was rotated away before it could be opened", restart=False)
        self._chain += taken
        self._join_chain()
        if any(gap for _, gap in taken):
            self._place_gaps([f for f, gap in taken if gap])

    def _place_gaps(self, flagged: list[Opened]) -> None:
        """Moves each new gap to the boundary in the chain where the names put it.

        The watcher tells a missed file only after it has handed over newer ones (their events
        are counted first), so the gap comes with the newest file waiting then, while the file
        was lost before the first one that open handed over: several rotations earlier when the
        watcher was behind by several. Left there, a boundary the names prove whole would take
        the gap (and drop it) and the one before, where lines were lost, would pass as a
        rotation. One listing: the gap goes to the newest boundary up to its file where a name
        shows a file in between (read from its name then), else to the newest one the names no
        longer tell, else (every one proven whole) it is behind the reader, or the report was
        wrong (a rescan forgets files handed ahead of their events): counted now, never lost."""
        listing = self._names.listing()
        at = {e.id: k for k, e in enumerate(listing)}

        def boundary(i: int) -> str:  # between _chain[i] and the file before it
            prev = self._chain[i - 1][0].id if i else self._chain_from
            k = at.get(self._chain[i][0].id)
            if prev is None or k is None or k + 1 >= len(listing) or listing[k + 1].gz:
                return "unknown"  # (a .gz may be the file before, compressed since)
            return "whole" if listing[k + 1].id == prev else "missed"

        for j, (f, gap) in enumerate(self._chain):
            if not gap or all(f is not g for g in flagged):
                continue
            self._chain[j] = (f, False)
            kinds = [boundary(i) for i in range(j + 1)]
            # A boundary with no gap yet first (two reports, two losses), a name's proof next.
            ranked = sorted(
                (i for i in range(j + 1) if kinds[i] != "whole"),
                key=lambda i: (self._chain[i][1], kinds[i] != "missed", -i),
            )
            if ranked:
                self._chain[ranked[0]] = (self._chain[ranked[0]][0], True)
            else:
                self._gap("a log file was rotated away before it could be opened", restart=False)

    def _join_chain(self) -> None:
        """The file read is in the chain: what is before it there is behind the reader."""
        for j, (f, _) in enumerate(self._chain):
            if f.id == self._reading.id:
                for g, _ in self._chain[: j + 1]:
                    if g is not self._reading:
                        g.close()
                del self._chain[: j + 1]
                self._chain_from = self._reading.id
                self._chained = True
                return

    # -- identities ------------------------------------------------------------------------

    def _find(self, listing: list[Listed], known: Fingerprint) -> int | None:
        """Where a file is in the listing: by inode, confirmed by its first bytes unless it is
        held (a deleted file's inode is soon another file's); or, for a file compressed since
        (a new inode), by the first bytes of each .gz."""
        held = any(f is not None and f.id == known.id for f in (self._reading, self._newest))
        for i, listed in enumerate(listing):
            if listed.id == known.id and (
                held or not known.head or self._names.head(listed, len(known.head)) == known.head
            ):
                return i
        if known.head and not known.id.compressed:
            for i, listed in enumerate(listing):
                if listed.gz and self._names.head(listed, len(known.head)) == known.head:
                    return i
        return None

    def _held(self, listed: Listed | None) -> Opened | None:
        """The held file a listed one is: the same inode, or a .gz copy of its contents."""
        if listed is None:
            return None
        for f in (self._reading, self._newest, *(f for f, _ in self._chain)):
            if f is not None and f.id == listed.id:
                return f
        for f in (self._reading, self._newest):
            if f is not None and listed.gz and not f.gz:
                head = f.head(FINGERPRINT_BYTES)
                if head and self._names.head(listed, len(head)) == head:
                    return f
        return None

    def _is_held(self, f: Opened) -> bool:
        return f is self._reading or f is self._newest or any(f is g for g, _ in self._chain)


class _Names:
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
