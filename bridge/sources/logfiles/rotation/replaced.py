"""One container's log where rotation renames a new file over it: Podman's ctr.log (conmon).

conmon closes ctr.log, creates ctr.log.tmp and renames it over ctr.log (layout.py): the file
replaced is unlinked at once and no name leads to it. So the files after the first come from
the watcher, which opens each new file the moment it appears; while the container's reader is
behind (or not there yet), those descriptors are the only way to the lines in them, and they
wait in the container's `Replacements`, oldest first, until its `ReplacedFiles` takes them.
Reading itself is FileSequence's (sequence.py), shared with NumberedFiles (numbered.py) for the
rotations that keep names.

Invariants of ReplacedFiles:
- Bytes come in log order, each file from offset 0 (or the start position) to its very end. A
  file is *final* once it is no longer at the path: conmon closed it before the rename, so its
  end is its end for good, and only then does the set move on to the next file handed over.
- Nothing is skipped silently: a file lost before it could be opened, or dropped past the
  bounds of `Replacements`, counts in `gaps`; at a file boundary the next chunk restarts with
  "gap" (a gap noticed in the middle of a file only counts: resetting the parser there would
  cut the line it holds).
- Without a watch on the directory (the inotify limit), nobody hands files over: at the end of
  a final file the path is looked at instead, as NumberedFiles does (a file replaced twice
  between two looks is then lost unseen).
- A file offered while the one read is still at the path is older than it (a claim raced with
  the watcher): it is dropped, and counted as a gap.
Not thread-safe: one reader thread owns a set.

Invariants of Replacements (thread-safe: offered on the watcher's thread, taken on the reader's):
- Descriptors come out in the order they went in (the watcher's creation order), each once;
  whoever takes one owns it. `close()` closes what is left, and each one offered after it.
- Bounded: at most `max_files` descriptors and `max_bytes` of their files wait (an unlinked
  file held open still takes its disk space), and the engine's `HeldBudget` bounds all
  containers' together; past a bound the oldest is closed and the file after it carries
  `gap_before`: its lines are lost, a rotation gap the reader counts.
- A file the watcher could not open before the next one replaced it (`missed`) is a gap too.
  The watcher notices it after it has handed over the newer file, so the gap goes before the
  newest file still waiting; if the reader took that one already, `take` reports it at once.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bridge.sources.logfiles.formats.lines import FileFormat
from bridge.sources.logfiles.rotation import SETTLE_SECONDS
from bridge.sources.logfiles.rotation.identity import FileId, Opened
from bridge.sources.logfiles.rotation.search import Searcher
from bridge.sources.logfiles.rotation.sequence import FileSequence
from bridge.sources.logfiles.safe_open import close_quietly


class ReplacedFiles(FileSequence):
    def __init__(
        self,
        path: str,
        fmt: FileFormat,
        *,
        fd: int | None = None,
        replacements: Replacements | None = None,
        on_gap: Callable[[str], None] | None = None,
    ) -> None:
        """`fd`, if given, is the first file, opened earlier; the set owns it from now on, and
        the files in `replacements` come after it. Raises OSError if there is no file to read."""
        first = Opened.adopt(fd, path) if fd is not None else Opened.open(path, 0, False)
        super().__init__(path, fmt, first, on_gap)
        self._replacements = replacements if replacements is not None else Replacements()
        self._queue: list[tuple[Opened, bool]] = []  # newer files, oldest first; gap before it

    def close(self) -> None:
        super().close()
        for f, _ in self._queue:
            f.close()
        self._queue = []
        self._replacements.close()

    def settle(self, timeout: float = SETTLE_SECONDS) -> bool:
        """Before the log is taken as ended: lets the watcher hand over what the kernel has
        announced. True when a newer file turned up (read on)."""
        self.handed_over(timeout)
        self._refresh()
        return bool(self._queue)

    def handed_over(self, timeout: float) -> None:
        """Waits until the watcher has handed over what the kernel announced (thread-safe)."""
        if timeout > 0:
            self._replacements.settle(timeout)

    def start_at(self, since_ns: int, marks: Mapping[int, int] | None = None) -> tuple[FileId, int]:
        """Positions the set at the first line that can be stamped at or after `since_ns`: in
        the newest file whose first line is stamped strictly before it (the oldest if none is:
        lines stamped exactly `since_ns` may end the file before it),
        by a binary search. Files before that one are closed. The next read() restarts."""
        self._refresh()
        files = [self._reading] + [f for f, _ in self._queue]
        searcher = Searcher(self.format, marks=marks)
        chosen = 0
        for i, f in enumerate(files):
            first = searcher.first_ts(f)
            if first is not None and first >= since_ns:
                break
            if first is not None:
                chosen = i
        if chosen:
            for f in files[:chosen]:
                f.close()
            self._reading = files[chosen]
            self._queue = self._queue[chosen:]
        target = self._reading
        target.offset = searcher.search(target, since_ns)
        self.search_reads = searcher.reads
        self._restart = "start"
        return self.position

    # -- the files after the one read ------------------------------------------------------

    def _refresh(self) -> None:
        taken, late_gap = self._replacements.take_opened(self._path)
        if not taken and not late_gap:
            return
        if late_gap:
            self._gap("a log file was replaced before it could be opened", restart=False)
        known = {self._reading.id} | {f.id for f, _ in self._queue}
        for f, gap_before in taken:
            if f.id in known:
                f.close()  # the file read, found by its name before the watcher handed it over
                continue
            if not self._queue and not self._reading.final and self._at_path(self._reading):
                f.close()  # older than the one read (see the module docstring)
                self._gap("a log file was handed over after a newer one", restart=False)
                continue
            known.add(f.id)
            self._queue.append((f, gap_before))

    def _newer_held(self) -> bool:
        return bool(self._queue) or not self._replacements.live()

    def _advance(self) -> bool:
        """At the end of a final file, moves to the next; False if none is known yet."""
        if not self._queue and not self._replacements.live():
            try:  # nobody hands files over: the file at the path, if it is another one
                new = Opened.open(self._path, 0, False)
            except (FileNotFoundError, NotADirectoryError):
                return False
            if new.id == self._reading.id:
                new.close()
                return False
            self._queue.append((new, False))
        if not self._queue:
            return False
        new, gap = self._queue.pop(0)
        self._reading.close()
        self._reading = new
        new.offset = 0
        if gap:
            self._gap(f"files of {self._path} were lost before they could be read")
        else:
            self._restart = "rotated"
        return True


MAX_FILES = 32
MAX_BYTES = 256 * 1024 * 1024


class HeldBudget:
    """One engine's bound on the disk its held, unread log files take, all containers together
    (a rotated file held open keeps its space after the engine deletes it). Past it, the
    container holding the most loses its oldest held file (a counted gap), never a container
    within a fair share: one container's flood costs only its own lines. Thread-safe."""

    def __init__(
        self, max_bytes: int, on_drop: Callable[[], None] = lambda: None, max_files: int = 4096
    ) -> None:
        self.max_bytes = max_bytes
        self.max_files = max_files  # descriptors too: each one counts against LimitNOFILE
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._members: set[Replacements] = set()

    def join(self, member: Replacements) -> None:
        with self._lock:
            self._members.add(member)

    def leave(self, member: Replacements) -> None:
        with self._lock:
            self._members.discard(member)

    def enforce(self) -> None:
        """Called after a file was offered (never under a member's lock)."""
        with self._lock:
            members = list(self._members)
        while True:
            held = [(*member.held(), id(member), member) for member in members]
            over_bytes = sum(h[0] for h in held) > self.max_bytes
            if not over_bytes and sum(h[1] for h in held) <= self.max_files:
                return
            key = 0 if over_bytes else 1
            greediest = max(held, key=lambda h: (h[key], h[2]))[3]
            if not greediest.drop_oldest():
                return
            self._on_drop()


@dataclass(frozen=True, slots=True)
class Replacement:
    fd: int
    gap_before: bool  # files before this one (after the previous one handed) were lost


class Replacements:
    """The files the watcher opened for one container after its first, oldest first, until the
    container's ReplacedFiles takes them (see the module docstring for the invariants)."""

    def __init__(
        self,
        *,
        live: Callable[[], bool] = lambda: False,
        settle: Callable[[float], bool] = lambda timeout: False,
        max_files: int = MAX_FILES,
        max_bytes: int = MAX_BYTES,
        budget: HeldBudget | None = None,
    ) -> None:
        # Whether every new file will be offered (the watcher watches the log's directory).
        self.live = live
        # Waits until the watcher has handled what the kernel announced so far.
        self.settle = settle
        self._max_files = max(1, max_files)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._waiting: list[Replacement] = []
        self._gap = False  # a gap before the next file offered
        self._late_gap = False  # a gap before a file already taken
        self._closed = False
        self.dropped = 0  # files closed unread past the bounds
        self._budget = budget
        if budget is not None:
            budget.join(self)

    def offer(self, fd: int) -> None:
        """A new file of the log, newer than every one offered before (the watcher's thread)."""
        with self._lock:
            if self._closed:
                close_quietly(fd)
                return
            self._waiting.append(Replacement(fd, self._gap))
            self._gap = False
            while len(self._waiting) > 1 and (
                len(self._waiting) > self._max_files or self._bytes() > self._max_bytes
            ):
                self._drop_oldest()
        if self._budget is not None:
            self._budget.enforce()

    def held_bytes(self) -> int:
        """What the files waiting take on disk (the newest, maybe still written, not counted)."""
        return self.held()[0]

    def held(self) -> tuple[int, int]:
        """(held_bytes(), how many descriptors wait)."""
        with self._lock:
            return self._bytes(), len(self._waiting)

    def drop_oldest(self) -> bool:
        """Closes the oldest file waiting (its lines are a gap); False if none can go."""
        with self._lock:
            if len(self._waiting) <= 1:
                return False
            self._drop_oldest()
            return True

    def _drop_oldest(self) -> None:
        close_quietly(self._waiting.pop(0).fd)
        self._waiting[0] = Replacement(self._waiting[0].fd, True)
        self.dropped += 1

    def missed(self) -> None:
        """The watcher saw a file it could not open: the one it handed over last came after it."""
        with self._lock:
            if self._waiting:
                self._waiting[-1] = Replacement(self._waiting[-1].fd, True)
            else:
                self._late_gap = True

    def take(self) -> tuple[list[Replacement], bool]:
        """The files waiting, oldest first (now the caller's), and whether a gap came before a
        file taken earlier."""
        if not self._waiting and not self._late_gap:
            # Before each read of every reader: no lock when nothing waits. A file handed over
            # meanwhile wakes the reader (the watcher's follow), which takes it then.
            return [], False
        with self._lock:
            waiting, self._waiting = self._waiting, []
            late, self._late_gap = self._late_gap, False
            return waiting, late

    def take_opened(self, path: str) -> tuple[list[tuple[Opened, bool]], bool]:
        """take(), each descriptor adopted as the file set's (one that cannot be is closed):
        (file, gap before it), oldest first, and whether a gap came before a file taken earlier."""
        taken, late_gap = self.take()
        opened = []
        for h in taken:
            try:
                opened.append((Opened.adopt(h.fd, path), h.gap_before))
            except OSError:
                close_quietly(h.fd)
        return opened, late_gap

    def close(self) -> None:
        if self._budget is not None:
            self._budget.leave(self)
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, []
        for replacement in waiting:
            close_quietly(replacement.fd)

    def _bytes(self) -> int:
        total = 0
        for replacement in self._waiting[:-1]:  # the newest may be the one still written to
            with contextlib.suppress(OSError):
                total += os.fstat(replacement.fd).st_size
        return total
