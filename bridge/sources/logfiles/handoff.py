"""The files the watcher opened for one container after its first, kept in order for its reader.

conmon rotates k8s-file by renaming a new file over ctr.log: the file replaced is unlinked at
once and no name leads to it. The watcher opens each new file the moment it appears; while the
container's reader is behind (or not there yet), those descriptors are the only way to the
lines in them, so they wait here, oldest first, until the reader's file set takes them
(chain.py). Docker's rotated files keep names, and need none of this.

Invariants:
- Descriptors come out in the order they went in (the watcher's creation order), each once;
  whoever takes one owns it. `close()` closes what is left, and each one offered after it.
- Bounded: at most `max_files` descriptors and `max_bytes` of their files wait (an unlinked
  file held open still takes its disk space); past either bound the oldest is closed and the
  file after it carries `gap_before`: its lines are lost, a rotation gap the reader counts.
- A file the watcher could not open before the next one replaced it (`missed`) is a gap too.
  The watcher notices it after it has handed over the newer file, so the gap goes before the
  newest file still waiting; if the reader took that one already, `take` reports it at once.
- Thread-safe: offered on the watcher's thread, taken on the reader's.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

MAX_FILES = 32
MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Handed:
    fd: int
    gap_before: bool  # files before this one (after the previous one handed) were lost


class HandOff:
    def __init__(
        self,
        *,
        live: Callable[[], bool] = lambda: False,
        settle: Callable[[float], bool] = lambda timeout: False,
        max_files: int = MAX_FILES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        # Whether every new file will be offered (the watcher watches the log's directory).
        self.live = live
        # Waits until the watcher has handled what the kernel announced so far.
        self.settle = settle
        self._max_files = max(1, max_files)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._waiting: list[Handed] = []
        self._gap = False  # a gap before the next file offered
        self._late_gap = False  # a gap before a file already taken
        self._closed = False
        self.dropped = 0  # files closed unread past the bounds

    def offer(self, fd: int) -> None:
        """A new file of the log, newer than every one offered before (the watcher's thread)."""
        with self._lock:
            if self._closed:
                _close(fd)
                return
            self._waiting.append(Handed(fd, self._gap))
            self._gap = False
            while len(self._waiting) > 1 and (
                len(self._waiting) > self._max_files or self._bytes() > self._max_bytes
            ):
                _close(self._waiting.pop(0).fd)
                self._waiting[0] = Handed(self._waiting[0].fd, True)
                self.dropped += 1

    def missed(self) -> None:
        """The watcher saw a file it could not open: the one it handed over last came after it."""
        with self._lock:
            if self._waiting:
                self._waiting[-1] = Handed(self._waiting[-1].fd, True)
            else:
                self._late_gap = True

    def take(self) -> tuple[list[Handed], bool]:
        """The files waiting, oldest first (now the caller's), and whether a gap came before a
        file taken earlier."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
            late, self._late_gap = self._late_gap, False
            return waiting, late

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, []
        for handed in waiting:
            _close(handed.fd)

    def _bytes(self) -> int:
        total = 0
        for handed in self._waiting[:-1]:  # the newest may be the one still written to
            with contextlib.suppress(OSError):
                total += os.fstat(handed.fd).st_size
        return total


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
