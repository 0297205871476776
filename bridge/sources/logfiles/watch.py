"""The one inotify watcher for an engine's log files: open each file the moment it appears.

A `--rm` container's directory can be gone milliseconds after `die` (layout.py has what each
engine does), long before its event is handled, but an open descriptor keeps an unlinked file
readable. So each log file the layout names (layout.py: `<root>/containers/<id>/<id>-json.log`
and `.../<id>/local-logs/container.log` for Docker, `<root>/overlay-containers/<id>/userdata/
ctr.log` for Podman) is opened as soon as inotify reports it, and handed over.

Invariants:
- One inotify instance, one thread (128 instances per uid here). Callbacks run on it, one at a
  time, and must be quick (else the kernel queue overflows: a rescan); no stop() from them.
- Never a silent miss: a directory is looked at after its watch is added (a file created in
  between is seen by the look, the event or both); IN_Q_OVERFLOW and a lost root mean a rescan.
- Each file is handed over once, in creation order per log name, and the descriptor is the
  receiver's: handover.py keeps that, with each container's record of what it handed over.
- `sync()` returns once every event queued before the call has been handled: a reader about
  to declare a log ended first gets every file the kernel has announced.
- Untrusted names: only real directories named by 64 lower-case hex digits and the exact log names
  count; files are opened O_NOFOLLOW|O_NONBLOCK and must be regular (a FIFO cannot block the
  thread); config files are bounded. The thread never raises: errors are logged once per kind.
- With an opener (opener.py: a process of its own), files are opened there, the moment they
  appear, and taken from it here in its order; this thread still watches for wake-ups and
  removals. Should the opener go, files are opened here again, after a rescan.
- Wake-ups (follow) are one-shot, and for the files only: a new current file, the writer
  closing it, the directory removed. No IN_MODIFY here: a wake-up per write would cost this
  thread a wake-up per line, and new files must be opened whatever the lines do. Writes wake
  the readers through their read loop's own inotify (readloop.py), armed one-shot as they wait.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import select
import stat
import threading
from collections.abc import Callable
from typing import Any

from inotify_simple import INotify, flags

# The watcher's contract, defined with the handover and named here too, where its users look.
from bridge.sources.logfiles.handover import Container, Handover
from bridge.sources.logfiles.handover import LogFileEvents as LogFileEvents
from bridge.sources.logfiles.handover import OpenedLog as OpenedLog
from bridge.sources.logfiles.handover import OpenerGone as OpenerGone
from bridge.sources.logfiles.handover import OpenerLike as OpenerLike
from bridge.sources.logfiles.handover import OpenerMessage as OpenerMessage
from bridge.sources.logfiles.layout import DOCKER, Layout
from bridge.sources.logfiles.safe_open import CONFIG_MAX_BYTES, errname

log = logging.getLogger(__name__)

_ID = re.compile(r"[0-9a-f]{64}")

_NEW: int = flags.CREATE | flags.MOVED_TO
# A container's removal is the parent's IN_DELETE (or IN_MOVED_FROM): the directory's own
# IN_DELETE_SELF/IN_IGNORED wait until the receiver closes the log, whose dentry pins its parent.
_GONE: int = flags.DELETE | flags.MOVED_FROM
_ROOT_MASK: int = _NEW | _GONE | flags.MOVE_SELF | flags.ONLYDIR
# IN_CLOSE_WRITE is rare (a writer closing at exit or rotation) and tells a reader the file is
# complete. No IN_ATTRIB: a reader holding a descriptor cares about neither permissions nor links.
_DIR_MASK: int = _NEW | flags.CLOSE_WRITE | flags.ONLYDIR | flags.DONT_FOLLOW
_WAKE: int = _NEW | flags.CLOSE_WRITE


class LogFileWatcher:
    """Watches `<root>/<layout.containers>` (see the module docstring)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        events: LogFileEvents,
        *,
        layout: Layout = DOCKER,
        config_max_bytes: int = CONFIG_MAX_BYTES,
        retry_seconds: float = 1.0,
        opener: OpenerLike | None = None,
    ) -> None:
        self._layout = layout
        self._opener = opener
        self._from_opener: list[OpenerMessage] = []  # received, not handled yet
        self._top = os.path.join(os.fspath(root), layout.containers)
        self._events = events
        self._handover = Handover(
            self._top, layout, events, config_max_bytes, self._call, self._log_once
        )
        self._retry_ms = max(1, int(retry_seconds * 1000))
        # Guards the maps, each container's watches and pending list and the descriptors'
        # lifetime; never held while calling out.
        self._lock = threading.Lock()
        self._containers: dict[str, Container] = {}
        self._wds: dict[int, tuple[Container, bool]] = {}  # wd -> (container, is sub dir)
        self._barriers: list[threading.Event] = []  # sync() callers, set after the next read
        self._root_wd: int | None = None
        self._root_error: str | None = None
        self._logged: set[str] = set()
        self._inotify: Any = None
        self._wake_fd = -1
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._ready = threading.Event()

    def start(self) -> None:
        """Start the thread; return once every log file already there has been handed over."""
        if self._thread is not None:
            raise RuntimeError("LogFileWatcher.start() called twice")
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            self._inotify = INotify()  # IN_CLOEXEC; EMFILE past 128 instances
        except OSError:
            os.close(self._wake_fd)
            raise
        if self._opener is not None:
            try:
                self._from_opener = self._opener.start()  # the files already there
                log.info(
                    "log files of %s are opened by a process of their own (%s)",
                    self._top,
                    getattr(self._opener, "priority", "?"),
                )
            except OpenerGone as e:
                log.warning("%s; log files are opened in the bridge", e)
                for message in e.received:
                    message.close()  # files already there: the first scan opens them here
                self._opener.close()
                self._opener = None
        self._thread = threading.Thread(target=self._run, name="logfile-watch", daemon=True)
        self._thread.start()
        self._ready.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Wake the thread out of poll() and wait for it; it closes its own descriptors."""
        with self._lock:
            if self._thread is None or self._stopping:
                return
            self._stopping = True
            os.eventfd_write(self._wake_fd, 1)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)  # only a hanging callback makes it time out

    def sync(self, timeout: float = 1.0) -> bool:
        """Wait until every inotify event queued before this call has been handled (files
        opened and handed over). False: not running, or the thread did not get there in time."""
        done = threading.Event()
        with self._lock:
            if self._thread is None or self._stopping:
                return False
            if self._thread is threading.current_thread():
                return True  # a callback: the events before it are being handled
            self._barriers.append(done)
            os.eventfd_write(self._wake_fd, 1)
        return done.wait(timeout)

    def watched(self, container_id: str) -> bool:
        """Whether a new file of the container's log will be seen: the directory that holds
        it is watched. (Its log found, in a directory without a watch: polling only.)"""
        with self._lock:
            c = self._containers.get(container_id)
            if self._stopping or c is None:
                return False
            sub = True in c.last or self._layout.top_log is None
            return (c.sub_wd if sub else c.dir_wd) is not None

    def follow(self, container_id: str, on_change: Callable[[], None]) -> bool:
        """Call `on_change` once, at the next change of the container's log files: the writer
        closed the current one, a new current file, the directory removed (not at data: see
        the module docstring). Read to the end after this call, then wait; follow again after
        each wake-up. False: not watched (gone, unknown, no watch); do not wait then."""
        with self._lock:
            c = self._containers.get(container_id)
            if self._stopping or c is None or c.dir_wd is None:
                return False
            if c.sub_wd is None and True in c.last:
                return False  # its log is in the subdirectory, which could not be watched
            if on_change not in c.pending:
                c.pending.append(on_change)
            return True

    def log_dir(self, container_id: str) -> str | None:
        """The directory the container's current log is written in (None: unknown): where
        a reader's read loop watches for writes."""
        with self._lock:
            c = self._containers.get(container_id)
            if c is None:
                return None
            sub = c.sub_wd is not None or True in c.last or self._layout.top_log is None
            return os.path.join(c.path, self._layout.sub_dir) if sub else c.path

    def _run(self) -> None:
        try:
            self._call(self._rescan)
            self._ready.set()
            poller = select.poll()
            poller.register(self._inotify.fileno(), select.POLLIN)
            poller.register(self._wake_fd, select.POLLIN)
            opener_fd = self._opener.fileno() if self._opener is not None else -1
            if opener_fd >= 0:
                poller.register(opener_fd, select.POLLIN)
            while not self._stopping:  # the eventfd: stop() and sync()
                # Without the root watched, poll() doubles as the retry timer.
                for fd, _ in poller.poll(None if self._root_wd is not None else self._retry_ms):
                    if fd == opener_fd and self._opener is None:
                        poller.unregister(fd)  # gone: opened here from now on
                self._call(self._step)
        finally:
            self._ready.set()
            if self._opener is not None:
                self._opener.close()
            for message in self._from_opener:
                message.close()
            with self._lock:
                self._stopping = True
                self._inotify.close()
                os.close(self._wake_fd)
                barriers, self._barriers = self._barriers, []
            for done in barriers:
                done.set()

    def _step(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake_fd)  # drained first: a sync() from now on wakes us again
        with self._lock:
            barriers, self._barriers = self._barriers, []
        try:
            if self._root_wd is None:
                self._rescan()
            # FIONREAD: one read takes every event queued so far
            for wd, mask, _cookie, name in self._inotify.read(timeout=0):
                self._call(self._dispatch, int(wd), int(mask), str(name))
            self._take_opened(sync=bool(barriers))
        finally:
            for done in barriers:
                done.set()

    def _dispatch(self, wd: int, mask: int, name: str) -> None:
        if mask & flags.Q_OVERFLOW:
            self._log_once("overflow", "inotify queue overflowed; rescanning %s", self._top)
            self._call(self._events.on_overflow)
            self._rescan()
        elif wd == self._root_wd:
            if mask & flags.IGNORED:
                self._root_wd = None  # the loop retries, then rescans
            elif mask & flags.MOVE_SELF:
                self._rm_watch(wd)
            elif mask & flags.ISDIR and mask & _NEW and _ID.fullmatch(name):
                self._add_container(name)
            elif mask & flags.ISDIR and mask & _GONE and (c := self._containers.get(name)):
                self._drop(c, ignored_wd=None)  # its watches go now, not when the fd closes
        elif (entry := self._wds.get(wd)) is not None:  # else a watch already dropped
            c, sub = entry
            layout = self._layout
            if mask & flags.IGNORED:  # removed, with no descriptor left open inside
                self._drop(c, ignored_wd=wd)
            elif not sub and name == layout.sub_dir and mask & flags.ISDIR and mask & _NEW:
                self._add_dir(c, sub=True)
            elif name == layout.log_name(c.cid, sub) and mask & _WAKE:
                if mask & _NEW:
                    self._open(c, sub, created=True)
                self._fire(c)

    def _rescan(self) -> None:
        if self._root_wd is None:
            try:
                self._root_wd = int(self._inotify.add_watch(self._top, _ROOT_MASK))
                self._root_error = None
            except OSError as e:
                if self._root_error != errname(e):  # once per loss, not once per retry
                    self._root_error = errname(e)
                    log.warning("cannot watch %s: %s", self._top, e.strerror)
                    self._call(self._events.on_watch_error, self._root_error)
                return
        try:
            with os.scandir(self._top) as it:
                names = [e.name for e in it if e.is_dir(follow_symlinks=False)]
            ids = [name for name in names if _ID.fullmatch(name)]
        except OSError as e:
            log.warning("cannot list %s: %s", self._top, e.strerror)
            return
        for c in self._containers.values():
            c.ahead.clear()  # a rescan follows lost events: what was ahead may never be matched
        for cid in ids:
            self._add_container(cid)
        listed = set(ids)
        for c in [c for cid, c in self._containers.items() if cid not in listed]:
            self._drop(c, ignored_wd=None)
        for c in list(self._containers.values()):
            self._fire(c)  # events may have been lost: every waiting reader looks again

    def _add_container(self, cid: str) -> None:
        with self._lock:
            c = self._containers.setdefault(cid, Container(cid, os.path.join(self._top, cid)))
        if self._add_dir(c, sub=False):
            self._add_dir(c, sub=True)
        else:
            self._drop(c, ignored_wd=None)  # gone already

    def _add_dir(self, c: Container, sub: bool) -> bool:
        """Watch, then look: a file created in between is seen by one or both. False: no such
        directory (lstat: a symlink is none); without a watch (the limit) files are still opened."""
        path = os.path.join(c.path, self._layout.sub_dir) if sub else c.path
        with self._lock:
            if self._containers.get(c.cid) is not c:
                return False
            if isinstance(wd := self._watch(path, _DIR_MASK), int):
                c.sub_wd, c.dir_wd = (wd, c.dir_wd) if sub else (c.sub_wd, wd)
                self._wds[wd] = (c, sub)
        if isinstance(wd, OSError):
            self._watch_failed(wd)
        is_dir = False
        with contextlib.suppress(OSError):
            is_dir = stat.S_ISDIR(os.lstat(path).st_mode)
        if not is_dir:
            return False
        self._open(c, sub, created=False)
        return True

    def _drop(self, c: Container, ignored_wd: int | None) -> None:
        with self._lock:
            if self._containers.get(c.cid) is not c:
                return
            del self._containers[c.cid]
            for wd in (c.dir_wd, c.sub_wd):
                if wd is not None and self._wds.pop(wd, None) is not None and wd != ignored_wd:
                    self._rm_watch(wd)
            c.dir_wd = c.sub_wd = None
        self._fire(c)
        self._call(self._events.on_removed, c.cid)

    def _fire(self, c: Container) -> None:
        with self._lock:
            callbacks, c.pending = c.pending, []
        for cb in callbacks:
            self._call(cb)

    def _watch(self, path: str, mask: int) -> int | OSError:
        try:
            return int(self._inotify.add_watch(path, mask))
        except OSError as e:
            return e

    def _rm_watch(self, wd: int) -> None:
        with contextlib.suppress(OSError):  # already removed by the kernel
            self._inotify.rm_watch(wd)

    def _watch_failed(self, e: OSError) -> None:
        if e.errno != errno.ENOENT:  # ENOENT: gone already, the normal race
            name = errname(e)
            self._log_once(
                name, "cannot watch in %s: %s (files opened, no wake-ups)", self._top, name
            )
            self._call(self._events.on_watch_error, name)

    # -- files from the opener -------------------------------------------------------------

    def _take_opened(self, sync: bool = False) -> None:
        """Hands over what the opener sent; `sync`: first waits for what it owes for the
        events queued so far (a sync() caller waits for those)."""
        opener = self._opener
        if opener is None:
            return
        try:
            self._from_opener += opener.sync(1.0) if sync else opener.receive()
        except OpenerGone as e:
            log.warning("%s; log files are opened in the bridge from now on", e)
            self._from_opener += e.received  # handed over like the rest, then the rescan
            opener.close()
            self._opener = None
        messages, self._from_opener = self._from_opener, []
        for message in messages:
            self._call(self._opened, opener, message)
        if self._opener is None:
            self._rescan()  # what it did not send is opened here (c.last knows what it did)

    def _opened(self, opener: OpenerLike, message: OpenerMessage) -> None:
        """Hands over one message; `opener` is the one it came from, gone or not."""
        c = self._containers.get(str(message.fields.get("cid", "")))
        if self._handover.from_opener(c, opener, message) and c is not None:
            self._fire(c)  # a new file: a reader waiting at the end of the last one reads on

    def _open(self, c: Container, sub: bool, created: bool) -> None:
        if self._opener is not None:
            self._take_opened()  # opened there, the moment it appeared
            return
        self._handover.open(c, sub, created)

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # a callback's bug or an unforeseen error: log it, go on
            log.exception("log file watcher: %s failed", getattr(fn, "__name__", fn))

    def _log_once(self, kind: str, message: str, *args: object) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning(message, *args)
