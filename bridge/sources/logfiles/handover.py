"""What the watcher hands over, and how it opens what it hands over.

An untrusted directory (whoever runs a container writes inside it) is opened O_NOFOLLOW and
O_NONBLOCK, and only a regular file is kept: neither a symlink nor a FIFO (whose open would
block the watcher's thread) gets in. Config files are read whole or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from typing import Protocol

from bridge.sources.logfiles.formats import LogKind

CONFIG_MAX_BYTES = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


@dataclass(frozen=True, slots=True)
class OpenedLog:
    """A log file just opened. `fd` (O_RDONLY|O_CLOEXEC, blocking, offset 0) is the receiver's.
    `created`: an inotify event announced the file, so it is new; False: a scan found it."""

    container_id: str
    fd: int
    path: str
    kind: LogKind
    created: bool
    config: bytes | None  # config.v2.json as the log appeared; None: absent, too big, unreadable
    hostconfig: bytes | None  # (both None where the layout has no config files: Podman)


class LogFileEvents(Protocol):
    """Implemented by the integrator; every method runs on the watcher thread."""

    def on_open(self, log: OpenedLog) -> None: ...
    # A file handed over as found by a scan (created=False) was new after all: its creation
    # event came after the scan that found it (a directory and its log made back to back).
    def on_created(self, container_id: str) -> None: ...
    def on_open_error(self, container_id: str, path: str, reason: str) -> None: ...
    def on_missed(self, container_id: str) -> None: ...  # a file was gone before it was opened
    def on_removed(self, container_id: str) -> None: ...  # the directory is gone
    def on_overflow(self) -> None: ...  # the kernel queue overflowed: a rescan follows
    def on_watch_error(self, errno_name: str) -> None: ...  # ENOSPC: files opened, no wake-ups


def errname(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e.errno))


def open_regular(path: str) -> tuple[int, os.stat_result] | str:
    """A regular file opened non-blocking, with its stat; or why not (an errno name)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        return errname(e)
    with contextlib.suppress(OSError):
        if stat.S_ISREG((st := os.fstat(fd)).st_mode):
            return fd, st
    os.close(fd)
    return "not a regular file"


def read_config(path: str, max_bytes: int) -> bytes | None:
    """A config file's bytes; None when absent, bigger than `max_bytes`, or growing."""
    if isinstance(got := open_regular(path), str):
        return None
    fd, st = got
    try:
        # dockerd replaces these files by rename, so the one opened does not grow; one that
        # does is being written by someone else: no bytes rather than half of them.
        data = os.read(fd, st.st_size + 1) if st.st_size <= max_bytes else None
        return None if data is None or len(data) > st.st_size else data
    except OSError:
        return None
    finally:
        os.close(fd)
