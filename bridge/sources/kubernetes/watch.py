"""One inotify thread over the kubelet's pod log directory: open each `N.log` as it appears.

    <pods_dir>/<namespace>_<pod>_<uid>/<container>/<restart>.log   (paths.py)

A deleted pod's files are gone about a second after it exits, and the kubelet's rotation
renames, gzips and unlinks files on its own schedule, so each `N.log` is opened the moment
inotify reports it (the runtime creates it at StartContainer and at each ReopenContainerLog) and
its descriptor handed over (`on_open`); the reader's KubeletFiles reads every one of them, in
the order they were created, whatever happens to their names.

Invariants (those of logfiles/watch.py, for this tree):
- One inotify instance, one thread; callbacks run on it, one at a time, and are quick.
- Never a silent miss: a directory is listed after its watch is added; IN_Q_OVERFLOW or a lost
  root means a rescan. Each file is handed over once (st_dev, st_ino; the receiver holds it).
- Only real directories whose names fit the kubelet's rules, and regular files named `N.log`
  (O_NOFOLLOW|O_NONBLOCK, safe_open), count: the names are hostile input.
- Wake-ups are one-shot, per container directory: IN_MODIFY is in its mask only while a reader
  waits (`follow`). IN_CLOSE_WRITE of `N.log` (the runtime closed it: the container exited) and
  its deletion are reported (`on_closed`, `on_deleted`), and IN_CLOSE_WRITE of a renamed
  `N.log.<stamp>` with the file's identity (`on_writer_closed`): the kubelet's rotated file is
  final only then.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from inotify_simple import INotify, flags

from bridge.sources.kubernetes.paths import CONTAINER_DIR, LOG_NAME, ROTATED_NAME, pod_dir
from bridge.sources.logfiles.rotation.identity import FileId
from bridge.sources.logfiles.safe_open import OpenFailed, errname, open_regular

log = logging.getLogger(__name__)

_NEW: int = flags.CREATE | flags.MOVED_TO
_GONE: int = flags.DELETE | flags.MOVED_FROM
_ROOT_MASK: int = _NEW | _GONE | flags.MOVE_SELF | flags.ONLYDIR
_POD_MASK: int = _NEW | _GONE | flags.ONLYDIR | flags.DONT_FOLLOW
_LOGS_MASK: int = _NEW | _GONE | flags.CLOSE_WRITE | flags.ONLYDIR | flags.DONT_FOLLOW


class PodLogEvents(Protocol):
    """Implemented by the receiver (KubernetesSource); every method runs on the watcher thread."""

    def on_open(self, key: str, fd: int, created: bool) -> None: ...  # fd is the receiver's
    def on_closed(self, key: str) -> None: ...  # the writer closed N.log (the container exited)
    def on_writer_closed(self, key: str, file: FileId) -> None: ...  # ... a rotated file of it
    def on_deleted(self, key: str) -> None: ...  # N.log is gone (container removed)
    def on_missed(self, key: str) -> None: ...  # a file was gone before it could be opened


@dataclass(eq=False)
class _Dir:
    rel: str  # "" (root), "<pod dir>", "<pod dir>/<container>"
    wd: int | None = None
    pending: list[Callable[[], None]] = field(default_factory=list)  # one-shot wake-ups


class PodLogWatcher:
    def __init__(self, pods_dir: str, events: PodLogEvents, retry_seconds: float = 1.0) -> None:
        self._root = pods_dir
        self._events = events
        self._retry_ms = max(1, int(retry_seconds * 1000))
        self._lock = threading.Lock()  # the maps and wake-up lists; never held calling out
        self._dirs: dict[str, _Dir] = {}  # rel -> dir (root, pods, containers)
        self._wds: dict[int, _Dir] = {}
        self._last: dict[str, tuple[int, int]] = {}  # log key -> the file handed over last
        self._barriers: list[threading.Event] = []
        self._logged: set[str] = set()
        self._inotify: Any = None
        self._wake_fd = -1
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._ready = threading.Event()

    def start(self) -> None:
        """Starts the thread; returns once every log already there has been handed over."""
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            self._inotify = INotify()
        except OSError:
            os.close(self._wake_fd)
            raise
        self._thread = threading.Thread(target=self._run, name="podlog-watch", daemon=True)
        self._thread.start()
        self._ready.wait()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            if self._thread is None or self._stopping:
                return
            self._stopping = True
            os.eventfd_write(self._wake_fd, 1)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def sync(self, timeout: float = 1.0) -> bool:
        """Returns once every event queued before the call has been handled."""
        done = threading.Event()
        with self._lock:
            if self._thread is None or self._stopping:
                return False
            if self._thread is threading.current_thread():
                return True
            self._barriers.append(done)
            os.eventfd_write(self._wake_fd, 1)
        return done.wait(timeout)

    def watched_root(self) -> bool:
        """Whether the pods directory itself is watched (new pods are seen)."""
        with self._lock:
            root = self._dirs.get("")
            return not self._stopping and root is not None and root.wd is not None

    def watched(self, key: str) -> bool:
        """Whether a new file of this log will be handed over (its directory is watched)."""
        with self._lock:
            d = self._dirs.get(key.rpartition("/")[0])
            return not self._stopping and d is not None and d.wd is not None

    def follow(self, key: str, on_change: Callable[[], None]) -> bool:
        """Calls `on_change` once, at the next change in the log's directory. False: not
        watched; do not wait for a wake-up then."""
        with self._lock:
            d = self._dirs.get(key.rpartition("/")[0])
            if self._stopping or d is None or d.wd is None:
                return False
            if on_change not in d.pending:
                d.pending.append(on_change)
            if len(d.pending) == 1 and not self._mask(d):
                d.pending.clear()
                return False
            return True

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._call(self._rescan)
            self._ready.set()
            poller = select.poll()
            poller.register(self._inotify.fileno(), select.POLLIN)
            poller.register(self._wake_fd, select.POLLIN)
            while not self._stopping:
                root = self._dirs.get("")
                poller.poll(None if root is not None and root.wd is not None else self._retry_ms)
                self._call(self._step)
        finally:
            self._ready.set()
            with self._lock:
                self._stopping = True
                self._inotify.close()
                os.close(self._wake_fd)
                barriers, self._barriers = self._barriers, []
            for done in barriers:
                done.set()

    def _step(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake_fd)
        with self._lock:
            barriers, self._barriers = self._barriers, []
        try:
            root = self._dirs.get("")
            if root is None or root.wd is None:
                self._rescan()
            for wd, mask, _cookie, name in self._inotify.read(timeout=0):
                self._call(self._dispatch, int(wd), int(mask), str(name))
        finally:
            for done in barriers:
                done.set()

    def _dispatch(self, wd: int, mask: int, name: str) -> None:
        if mask & flags.Q_OVERFLOW:
            self._log_once("overflow", "inotify queue overflowed; rescanning %s", self._root)
            self._rescan()
            return
        d = self._wds.get(wd)
        if d is None:
            return
        if mask & flags.IGNORED:
            self._forget(d)
            return
        depth = d.rel.count("/") + 1 if d.rel else 0
        if depth < 2 and mask & flags.ISDIR:
            rel = os.path.join(d.rel, name)
            if mask & _NEW and (pod_dir(name) if depth == 0 else CONTAINER_DIR.fullmatch(name)):
                self._add(rel)
            elif mask & _GONE and (gone := self._dirs.get(rel)) is not None:
                self._forget(gone)
        elif depth == 2:
            key = f"{d.rel}/{name}"
            if mask & flags.CLOSE_WRITE and (rotated := ROTATED_NAME.fullmatch(name)):
                self._writer_closed(f"{d.rel}/{rotated.group(1)}", f"{d.rel}/{name}")
            if LOG_NAME.fullmatch(name):
                if mask & _NEW:
                    self._open(key, created=True)
                if mask & flags.CLOSE_WRITE:
                    self._call(self._events.on_closed, key)
                if mask & flags.DELETE:  # not IN_MOVED_FROM: that is the kubelet's rotation
                    self._call(self._events.on_deleted, key)
            self._fire(d)

    def _rescan(self) -> None:
        root = self._dirs.get("")
        if (root is None or root.wd is None) and not self._add(""):
            return
        for d in list(self._dirs.values()):
            self._fire(d)  # events may have been lost: every waiting reader looks again

    def _add(self, rel: str) -> bool:
        """Watch, then list: a file created in between is seen by one or both."""
        path = os.path.join(self._root, rel) if rel else self._root
        depth = rel.count("/") + 1 if rel else 0
        mask = (_ROOT_MASK, _POD_MASK, _LOGS_MASK)[depth]
        error: OSError | None = None
        with self._lock:
            d = self._dirs.setdefault(rel, _Dir(rel))
            try:
                d.wd = int(self._inotify.add_watch(path, mask))
                self._wds[d.wd] = d
            except OSError as e:
                error = e
        if error is not None:
            if depth == 0:
                why = error.strerror
                self._log_once(f"root {errname(error)}", "cannot watch %s: %s", path, why)
            elif error.errno != 2:  # ENOENT: gone already
                self._log_once(errname(error), "cannot watch in %s: %s", self._root, error.strerror)
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise NotADirectoryError(path)
            with os.scandir(path) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except OSError:
            self._forget(d)
            return False
        for name, is_dir in entries:
            child = os.path.join(rel, name) if rel else name
            valid = pod_dir(name) if depth == 0 else CONTAINER_DIR.fullmatch(name)
            if depth < 2 and is_dir and valid:
                self._add(child)
            elif depth == 2 and not is_dir and LOG_NAME.fullmatch(name):
                self._open(child, created=False)
        return True

    def _forget(self, d: _Dir) -> None:
        with self._lock:
            inside = [r for r in self._dirs if not d.rel or r == d.rel or r.startswith(d.rel + "/")]
            for rel in inside:
                gone = self._dirs.pop(rel)
                if gone.wd is not None and self._wds.pop(gone.wd, None) is not None and rel:
                    with contextlib.suppress(OSError):
                        self._inotify.rm_watch(gone.wd)
                gone.wd = None
            if not d.rel:
                self._dirs[""] = _Dir("")  # the root: retried by the loop
        self._fire(d)

    def _fire(self, d: _Dir) -> None:
        with self._lock:
            callbacks, d.pending = d.pending, []
            if callbacks and d.wd is not None:
                self._mask(d)
        for cb in callbacks:
            self._call(cb)

    def _mask(self, d: _Dir) -> bool:
        """Under the lock: IN_MODIFY on a container directory only while someone waits."""
        mask = _LOGS_MASK | (flags.MODIFY if d.pending else 0)
        try:
            return int(self._inotify.add_watch(os.path.join(self._root, d.rel), mask)) == d.wd
        except OSError:
            return False

    def _open(self, key: str, created: bool) -> None:
        path = os.path.join(self._root, key)
        try:
            fd, st = open_regular(path)
        except OpenFailed as e:
            if str(e) == "ENOENT" and created:
                self._call(self._events.on_missed, key)
            elif str(e) != "ENOENT":
                self._log_once(f"open {e}", "cannot open %s (%s)", path, e)
            return
        ident = (st.st_dev, st.st_ino)
        if self._last.get(key) == ident:
            os.close(fd)  # a scan and an event for the same file
            return
        self._last[key] = ident
        os.set_blocking(fd, True)
        self._call(self._events.on_open, key, fd, created)

    def _writer_closed(self, key: str, rel: str) -> None:
        """The runtime closed a renamed file of the log: it is final (rotation/kubelet.py)."""
        try:
            st = os.lstat(os.path.join(self._root, rel))
        except OSError:
            return  # renamed or deleted since: the reader's bound decides
        if stat.S_ISREG(st.st_mode):
            self._call(self._events.on_writer_closed, key, FileId.of(st))

    def released(self, key: str) -> None:
        """The receiver is done with this log: a file at its name later is a new one."""
        with self._lock:
            self._last.pop(key, None)

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("pod log watcher: %s failed", getattr(fn, "__name__", fn))

    def _log_once(self, kind: str, message: str, *args: object) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning(message, *args)
