"""The chain: the files the watcher handed over after the one read, and where missed ones go.

With the watcher's `Replacements` (every file created at the path, opened at its creation,
oldest first), NumberedFiles takes the files after the first from here, not from names.
dockerd deletes a file two rotations after creating it, within milliseconds under a fast
writer, long before a reader behind gets to it; held since its creation, it loses nothing.

Invariants:
- `files` are oldest first, each with whether a gap (a file the watcher missed) comes before
  it; `start` is the file just before `files[0]`. Once the file read is in the chain, the files
  before it there are behind the reader: closed and dropped (`join`).
- The watcher tells a missed file late, with a newer file than the one it came before: the
  names place it (`place_gaps`), and where they cannot, it is counted anyway, at a boundary
  where they no longer tell or at once: never a silent loss.
- A missed file may still have a name (rotated files keep theirs for a while): then it is read
  from there (`missed_by_name`), and only the names can prove that nothing else was missed.

The set that reads (numbered.py) owns its chain and every descriptor in it. Not thread-safe:
one reader thread owns a set.
"""

from __future__ import annotations

from bridge.sources.logfiles.rotation.identity import FileId, Listed, Opened
from bridge.sources.logfiles.rotation.names import Names


class Chain:
    """The files handed over, oldest first, each with whether a gap comes before it."""

    def __init__(self, start: FileId | None) -> None:
        self.files: list[tuple[Opened, bool]] = []
        # The file just before files[0] (the watcher's first file, at first), or None while
        # the set is not chained: names lead on from the file read.
        self.start = start

    def close(self) -> None:
        for f, _ in self.files:
            f.close()
        self.files = []

    def join(self, reading: Opened) -> bool:
        """If the file read is in the chain, drops what is before it there (behind the reader,
        closed) and the file itself, which becomes `start`. False: it is not in the chain."""
        for j, (f, _) in enumerate(self.files):
            if f.id == reading.id:
                for g, _ in self.files[: j + 1]:
                    if g is not reading:
                        g.close()
                del self.files[: j + 1]
                self.start = reading.id
                return True
        return False

    def place_gaps(self, flagged: list[Opened], listing: list[Listed]) -> int:
        """Moves each new gap to the boundary in the chain where the names put it; returns how
        many no boundary takes: those are to be counted now.

        The watcher tells a missed file only after it has handed over newer ones (their events
        are counted first), so the gap comes with the newest file waiting then, while the file
        was lost before the first one that open handed over: several rotations earlier when the
        watcher was behind by several. Left there, a boundary the names prove whole would take
        the gap (and drop it) and the one before, where lines were lost, would pass as a
        rotation. One listing: the gap goes to the newest boundary up to its file where a name
        shows a file in between (read from its name then), else to the newest one the names no
        longer tell, else (every one proven whole) it is behind the reader, or the report was
        wrong (a rescan forgets files handed ahead of their events): counted now, never lost."""
        at = {e.id: k for k, e in enumerate(listing)}
        unplaced = 0

        def boundary(i: int) -> str:  # between files[i] and the file before it
            prev = self.files[i - 1][0].id if i else self.start
            k = at.get(self.files[i][0].id)
            if prev is None or k is None or k + 1 >= len(listing) or listing[k + 1].gz:
                return "unknown"  # (a .gz may be the file before, compressed since)
            return "whole" if listing[k + 1].id == prev else "missed"

        for j, (f, gap) in enumerate(self.files):
            if not gap or all(f is not g for g in flagged):
                continue
            self.files[j] = (f, False)
            kinds = [boundary(i) for i in range(j + 1)]
            # A boundary with no gap yet first (two reports, two losses), a name's proof next.
            ranked = sorted(
                (i for i in range(j + 1) if kinds[i] != "whole"),
                key=lambda i: (self.files[i][1], kinds[i] != "missed", -i),
            )
            if ranked:
                self.files[ranked[0]] = (self.files[ranked[0]][0], True)
            else:
                unplaced += 1
        return unplaced


def missed_by_name(names: Names, after: Opened, reading: FileId) -> tuple[Opened | None, bool]:
    """The file the watcher could not open before `after` replaced it at the path, if a name
    still leads to it: the one listed just before `after` (rotated files keep names for a
    while). And whether it follows the file read (`reading`): only the names can prove it (the
    watcher may have missed several)."""
    listing = names.listing()
    k = next((k for k, e in enumerate(listing) if e.id == after.id), None)
    if k is None or k + 1 >= len(listing):
        return None, False  # `after` is gone from the names: so is every file before it
    listed = listing[k + 1]
    if listed.id == reading:
        return None, True  # nothing was missed after all
    if listed.gz:
        return None, False
    whole = k + 2 < len(listing) and listing[k + 2].id == reading
    f = names.open(listed)
    return f, whole and f is not None
