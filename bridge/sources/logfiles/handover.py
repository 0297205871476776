"""Handing a container's log files to the receiver: what is handed over, to whom, and the
bookkeeping that hands each file over once and in creation order.

The watcher (watch.py) finds the files, by inotify event or by a scan, and tells this module
where to look (`Handover.open`) or what the opener process opened (`Handover.from_opener`).
Here: the contract (OpenedLog, LogFileEvents, and what the watcher needs of the opener), and
for each container and log name, the last file handed over (`Container.last`) and the files
handed over ahead of their own event (`Container.ahead`).

Invariants:
- A descriptor handed over is the receiver's to close, never the watcher's. Each file is handed
  over once: a second sighting has the same (st_dev, st_ino), which the kernel cannot give to
  another file while the receiver holds the descriptor.
- Per log name, files are handed over in creation order. Where rotation keeps names (dockerd),
  a file found at the path that is not the one handed over last means a rotation: the file
  named `.1` then, if it is neither, came in between (opened late: its creation event is still
  queued) and is handed over first. One gone from every name before it could be opened is
  reported (on_missed): a count of files handed ahead of their own event tells a late event
  from a loss. conmon's new file renamed over ctr.log is an IN_MOVED_TO like any other.
- Files are opened O_NOFOLLOW|O_NONBLOCK and must be regular (a FIFO cannot block the thread);
  config files are bounded and read with a container's first file only.
- Everything here runs on the watcher's thread; callbacks go through the watcher's guard
  (`call`), which logs a failing one and goes on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.sources.logfiles.formats import LogKind
from bridge.sources.logfiles.layout import Layout
from bridge.sources.logfiles.safe_open import OpenFailed, open_regular, read_config


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


class OpenerGone(Exception):
    """The opener process is not there (any more): str() says why, in one line. `received`:
    what it sent before it went, still to be handed over (a file in it may have no name left)."""

    def __init__(self, reason: str, received: list[OpenerMessage] | None = None) -> None:
        super().__init__(reason)
        self.received = received or []


class OpenerMessage(Protocol):
    @property
    def event(self) -> str: ...
    @property
    def fields(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class OpenerLike(Protocol):
    """What the watcher needs of the opener (opener.py's Opener). Every method but start()
    runs on the watcher's thread; each raises OpenerGone."""

    def start(self) -> list[OpenerMessage]: ...
    def fileno(self) -> int: ...
    def receive(self) -> list[OpenerMessage]: ...
    def sync(self, timeout: float) -> list[OpenerMessage]: ...
    def opened(self, message: OpenerMessage) -> OpenedLog: ...  # raises ValueError
    def close(self) -> None: ...


class LogFileEvents(Protocol):
    """Implemented by the receiver (LogFileSource); every method runs on the watcher thread."""

    def on_open(self, log: OpenedLog) -> None: ...
    # A file handed over as found by a scan (created=False) was new after all: its creation
    # event came after the scan that found it (a directory and its log made back to back).
    def on_created(self, container_id: str) -> None: ...
    def on_open_error(self, container_id: str, path: str, reason: str) -> None: ...
    def on_missed(self, container_id: str) -> None: ...  # a file was gone before it was opened
    def on_removed(self, container_id: str) -> None: ...  # the directory is gone
    def on_overflow(self) -> None: ...  # the kernel queue overflowed: a rescan follows
    def on_watch_error(self, errno_name: str) -> None: ...  # ENOSPC: files opened, no wake-ups


@dataclass(slots=True, eq=False)
class Container:
    cid: str
    path: str
    dir_wd: int | None = None
    sub_wd: int | None = None  # the layout's subdirectory (local-logs/, userdata/)
    pending: list[Callable[[], None]] = field(default_factory=list)  # one-shot wake-ups
    # in the subdirectory -> ((st_dev, st_ino), whether an event has named it) of the last file
    # handed over
    last: dict[bool, tuple[tuple[int, int], bool]] = field(default_factory=dict)
    ahead: dict[bool, int] = field(default_factory=dict)  # files handed before their event


class Handover:
    """Hands each container's log files to `events` (see the module docstring). `call` runs a
    callback, `log_once` logs a warning once per kind: the watcher's, shared with it."""

    def __init__(
        self,
        top: str,
        layout: Layout,
        events: LogFileEvents,
        config_max_bytes: int,
        call: Callable[..., None],
        log_once: Callable[..., None],
    ) -> None:
        self._top = top  # <root>/<layout.containers>, for the log
        self._layout = layout
        self._events = events
        self._configs = (*layout.config_files, "", "")[:2]  # "": none (Podman)
        self._config_max = config_max_bytes
        self._call = call
        self._log_once = log_once

    def open(self, c: Container, sub: bool, created: bool) -> None:
        """Opens the container's log file (in the subdirectory: `sub`) and hands it over,
        unless it was handed over already; `created`: an event named it."""
        name = self._layout.log_name(c.cid, sub)
        if name is None:
            return  # no log at this level (Podman's is in userdata/)
        path = os.path.join(c.path, self._layout.sub_dir if sub else "", name)
        try:
            fd, st = open_regular(path)
        except OpenFailed as e:
            if str(e) != "ENOENT":
                self._call(self._events.on_open_error, c.cid, path, str(e))
            elif created:  # there a moment ago: rotated away or removed first
                self._call(self._events.on_missed, c.cid)
            return
        key, last = (st.st_dev, st.st_ino), c.last.get(sub)
        if last is not None and last[0] == key:
            # Seen already. The first event naming a file a scan found is that file's own;
            # otherwise an earlier event's open found this newer file, and this event's own
            # file was rotated away before anyone could open it, unless it was handed over
            # ahead of its event (`_rotated`).
            os.close(fd)
            if created and last[1] and c.ahead.get(sub, 0) > 0:
                c.ahead[sub] -= 1
            elif created and last[1]:
                self._call(self._events.on_missed, c.cid)
            elif created:
                self._call(self._events.on_created, c.cid)
            c.last[sub] = (key, last[1] or created)
            return
        if last is not None and not self._layout.replaced:  # (a rescan's too: names may lead)
            self._rotated(c, sub, path, key, last[0])
        os.set_blocking(fd, True)
        c.last[sub] = (key, created)
        # The log first, the configs next: the log is what a removal would take away. Only
        # with a container's first file: a rotation must cost as little as can be.
        kind: LogKind = self._layout.kind(sub)
        config, hostconfig = (
            read_config(os.path.join(c.path, config), self._config_max)
            if config and last is None
            else None
            for config in self._configs
        )
        opened = OpenedLog(c.cid, fd, path, kind, created, config, hostconfig)
        self._call(self._events.on_open, opened)

    def _rotated(
        self, c: Container, sub: bool, path: str, key: tuple[int, int], last: object
    ) -> None:
        """A new file at the path: if `.1` is neither it nor the one handed over last, it came
        in between and goes first (see the module docstring). Only while the path still holds
        `key` are the two names a snapshot: `.1` is then the file just before it."""
        try:
            fd, st = open_regular(path + ".1")
        except OpenFailed:
            return
        try:
            now = os.stat(path)
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != key or (st.st_dev, st.st_ino) == last:
            os.close(fd)
            return
        os.set_blocking(fd, True)
        c.ahead[sub] = c.ahead.get(sub, 0) + 1
        opened = OpenedLog(c.cid, fd, path, self._layout.kind(sub), True, None, None)
        self._call(self._events.on_open, opened)

    def from_opener(self, c: Container | None, opener: OpenerLike, message: OpenerMessage) -> bool:
        """Hands over one message of the opener's; `c`: the container it names, if watched;
        `opener`: the one it came from, gone or not. True: a new file was handed over (a
        reader waiting at the end of the last one reads on)."""
        fields, event = message.fields, message.event
        cid = str(fields.get("cid", ""))
        if event == "open":
            try:
                opened = opener.opened(message)
            except ValueError:
                self._log_once("opener", "the log file opener sent a malformed message")
                if cid:
                    self._events.on_missed(cid)  # a file not handed over: a gap, never silent
                return False
            if c is not None:
                with contextlib.suppress(OSError):
                    st = os.fstat(opened.fd)
                    c.last[bool(fields.get("sub"))] = ((st.st_dev, st.st_ino), opened.created)
            self._call(self._events.on_open, opened)
            return True
        message.close()
        if event == "created":
            self._events.on_created(cid)
        elif event == "missed":
            self._events.on_missed(cid)
        elif event == "open_error":
            self._events.on_open_error(cid, str(fields.get("path")), str(fields.get("reason")))
        elif event == "overflow":
            self._log_once("overflow", "inotify queue overflowed; rescanning %s", self._top)
            self._events.on_overflow()
        elif event == "watch_error":
            self._events.on_watch_error(str(fields.get("errno")))
        return False
