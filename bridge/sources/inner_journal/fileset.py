"""The journal files of one container's root that are held open, and what was refused. Pure
Python over `containment`: nothing here parses a journal.

`FileSet.scan` lists the journal directories (`containment.list_journals`) and opens the files
named there, inside the root, regular files only. Invariants:

- The work of one scan is bounded whatever the container put in its directories: at most
  `MAX_LISTED` names are listed and at most `max_open` of them opened; `tick` is called every
  256 names, so a caller that must show signs of life (the worker's heartbeat) can.
- When more names are listed than may be opened, the active files journald writes
  (`system.journal`, `user-<uid>.journal`) go first: a container that floods its own directory
  with names can hide its archived files, not the ones being written.
- A file is held by identity (device, inode): a rename keeps it, a second name is one file.
  At most `max_files` are held, the newest by mtime. An fd not held is closed at once.
- A problem is a state, not an event: `problems` says, after each scan that looked, how many
  names were refused and why, by kind -- "file" (refused by containment: a symlink, not a
  regular file), "names" (directories with more names than were looked at), "max_files" (files
  left out, the oldest). `Reports` turns those states into log lines: one per kind, with a count.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.sources.inner_journal import containment

MAX_LISTED = 2048  # names looked at per scan, all directories together (journald keeps ~100)
RELOG_SECONDS = 60.0  # a kind whose count changes is reported again at most this often
_EXAMPLES = 3
_ACTIVE = re.compile(r"(system|user-[0-9]+)\.journal")

Identity = tuple[int, int]


@dataclass(frozen=True, slots=True, eq=False)
class Held:
    """A journal file held open."""

    fd: int
    name: containment.JournalName


@dataclass
class Tally:
    """How many things of one kind went wrong, and the first few of them (for the log)."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str, count: int = 1) -> None:
        self.count += count
        if len(self.examples) < _EXAMPLES:
            self.examples.append(example)


_WHAT = {
    "file": "journal file names refused",
    "names": "journal directories with more names than are looked at",
    "max_files": "journal files left out (more than the maximum; the newest are read)",
    "bad": "journal files that cannot be read",
}


class Reports:
    """Log lines for problem states: one line per kind, with a count; see the module.

    A kind is reported when its count changes, at once the first time, then at most every
    `RELOG_SECONDS`: a container that renames its hostile names on every poll changes nothing,
    one that makes their number flap gets a line a minute.
    """

    def __init__(self, relog_seconds: float = RELOG_SECONDS) -> None:
        self._relog = relog_seconds
        self._current: dict[str, Tally] = {}
        self._reported: dict[str, tuple[int, float]] = {}  # kind -> (count, when)

    def update(self, kind: str, tally: Tally | None) -> None:
        """The state of `kind` now (None or a zero count: no such problem)."""
        if tally is None or tally.count == 0:
            self._current.pop(kind, None)
        else:
            self._current[kind] = tally

    def due(self, now: float) -> list[tuple[str, int, int, str]]:
        """(kind, count, new, message) of each kind to report now; `new` is the rise since the
        last report (what the metrics add)."""
        out = []
        for kind in sorted(set(self._current) | set(self._reported)):
            tally = self._current.get(kind)
            count = tally.count if tally is not None else 0
            last, when = self._reported.get(kind, (0, float("-inf")))
            if count == last:
                continue
            if count == 0:  # gone: remember when it was last reported, not its count
                self._reported[kind] = (0, when)
                continue
            if now - when < self._relog:
                continue
            self._reported[kind] = (count, now)
            assert tally is not None
            out.append((kind, count, max(0, count - last), describe(kind, tally)))
        return out


def describe(kind: str, tally: Tally) -> str:
    if tally.count == 1 and tally.examples:
        return f"{tally.examples[0]}; skipped"
    shown = "; ".join(tally.examples)
    more = ", ..." if tally.count > len(tally.examples) else ""
    return f"{tally.count} {_WHAT.get(kind, kind)} (e.g. {shown}{more}); skipped"


class FileSet:
    """The held journal files of one root; see the module. Not thread-safe."""

    def __init__(
        self,
        root_fd: int,
        *,
        max_files: int = 128,
        max_open: int | None = None,
        max_listed: int = MAX_LISTED,
        tick: Callable[[], None] | None = None,
    ) -> None:
        self._root = root_fd
        self._max_files = max_files
        self._max_open = max_open if max_open is not None else max(64, 2 * max_files)
        self._max_listed = max_listed
        self._tick = tick
        self._names: tuple[containment.JournalName, ...] | None = None
        self.held: dict[Identity, Held] = {}
        self.problems: dict[str, Tally] = {}

    def forget_listing(self) -> None:
        """The next scan opens every name again, even when the listing did not change."""
        self._names = None

    def scan(self, final: bool = False) -> bool:
        """Lists and opens; True when the held set changed. `final`: the container has exited
        (its tmpfs may be detached), so files held stay held even when no longer listed."""
        listing = containment.list_journals(
            self._root, per_dir=self._max_listed, total=self._max_listed, tick=self._tick
        )
        names = tuple(listing.names)
        if names == self._names:
            return False
        self._names = names
        problems: dict[str, Tally] = {}
        if listing.unlisted:
            problems["names"] = Tally(listing.unlisted, [f"over {self._max_listed} names"])
        held: dict[Identity, Held] = dict(self.held) if final else {}
        opened: list[Held] = []
        ordered = sorted(names, key=lambda n: _ACTIVE.fullmatch(n.name) is None)  # stable
        if len(ordered) > self._max_open:
            tally = problems.setdefault("names", Tally())
            tally.add(f"{len(ordered)} journal file names, {self._max_open} opened", 1)
            ordered = ordered[: self._max_open]
        for index, name in enumerate(ordered):
            if self._tick is not None and index % 256 == 255:
                self._tick()
            try:
                fd, st = containment.open_regular(self._root, name.path)
            except OSError as exc:
                problems.setdefault("file", Tally()).add(f"{name.path}: {exc.strerror}")
                continue
            ident = (st.st_dev, st.st_ino)
            known = self.held.get(ident) or held.get(ident)  # renamed, or a second name
            if known is not None:
                os.close(fd)
                held[ident] = known
            else:
                held[ident] = Held(fd, name)
                opened.append(held[ident])
        if len(held) > self._max_files:
            left_out = len(held) - self._max_files
            problems["max_files"] = Tally(left_out, [f"{len(held)} files, {left_out} oldest"])
            by_age = sorted(held.items(), key=lambda item: os.fstat(item[1].fd).st_mtime_ns)
            held = dict(by_age[-self._max_files :])
        for fresh in opened:
            if held.get(_identity(fresh.fd)) is not fresh:
                os.close(fresh.fd)
        self.problems = problems
        if held.keys() == self.held.keys():
            return False
        for ident, old in self.held.items():
            if ident not in held:
                os.close(old.fd)
        self.held = held
        return True

    def close(self) -> None:
        for held in self.held.values():
            with contextlib.suppress(OSError):
                os.close(held.fd)
        self.held = {}
        self._names = None


def _identity(fd: int) -> Identity:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino
