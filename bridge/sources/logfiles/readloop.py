"""The one thread that reads every container's log files of an engine, whatever changed.

A thread per container woken per line made a line that comes alone cost a thread hand-over,
a wake-up and a GIL hand-over at each step; at many containers writing a line now and then
that, not parsing, was most of the bridge's CPU. Here the readers (FileReader) are tasks: a
wake-up (a write, the watcher's `follow` callback, `stop`, a `die`) marks a task ready, and the loop
runs every ready task in one pass. After a wake-up from idle the loop first waits
`GATHER_SECONDS`: the lines the other containers write meanwhile come in the same pass, and
the pass's batches reach the writer together (`after_each_pass`: one wake-up of the writer a
pass). That window is the latency this costs a line (well inside the delivery budget). While
writes keep coming the loop ticks at that period without poll(); a catch-up's passes follow
each other without it.

Writes wake a reader through this loop's own inotify instance (`watch`: IN_MODIFY on the
directory the log is written in, armed as the reader waits): the events of a window are read
in one go by this thread, where the watcher's (watch.py) would cost its thread a wake-up and
two mask changes per line. A wake-up is one-shot, the kernel's watch is not: a reader that
waits again after each line costs no `inotify_add_watch` and no IN_IGNORED per line. Since a
watched IN_MODIFY makes every write of the engine's writer costlier, a write that finds no
reader waiting removes the kernel's watch (the reader is behind or gone); its next wait adds
it again.

Invariants:
- A task runs on this thread only, one step at a time; a step reads to the end of what its
  files hold (or a fair share: see FileReader) and returns how long it may wait at most
  before its next step (None: it is done and is never stepped again).
- A wake-up is never lost: one that comes while the task is stepped makes it ready again;
  one for a task that is done is nothing.
- A step that blocks (the queue full) holds the others back meanwhile: the queue's budget is
  shared anyway. What may take long for one container alone (an engine's inspect) runs
  `aside`, on a small pool, and wakes its task when done.
- A step that raises costs its task, never the loop: logged, and the task is dropped.
- A wake-up for a write is called at most once per `watch` call; lost events (overflow) wake
  every reader waiting. A directory is watched once, whoever waits on it.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from inotify_simple import INotify, flags

log = logging.getLogger(__name__)

GATHER_SECONDS = 0.01
_ASIDE_THREADS = 4
_WRITE_MASK: int = flags.MODIFY | flags.ONLYDIR | flags.DONT_FOLLOW
_OVERFLOW, _IGNORED = int(flags.Q_OVERFLOW), int(flags.IGNORED)
_EVENT = struct.Struct("iIII")  # struct inotify_event, before its name
_EVENTS_BYTES = 64 * 1024  # read per pass; more waits for the next one


class Task(Protocol):
    def step(self) -> float | None: ...


class ReadLoop:
    """Runs tasks (see the module docstring); `wake` is safe from any thread."""

    def __init__(self, gather_seconds: float = GATHER_SECONDS, name: str = "logfile-read") -> None:
        self._gather = gather_seconds
        self._lock = threading.Lock()
        self._tasks: set[Task] = set()  # added and not done
        self._ready: dict[Task, None] = {}  # insertion-ordered: a fair pass
        self._due: dict[Task, float] = {}  # when each task is stepped at the latest
        self._timers: list[tuple[float, int, Task]] = []  # heap; stale entries skipped
        self._seq = itertools.count()
        self._stopping = False
        self._polling = False  # the thread waits in poll(): a wake-up writes the eventfd
        self._inotify: Any = None
        self._wake_fd = -1
        self._writes: dict[int, list[Callable[[], None]]] = {}  # wd -> one-shot callbacks
        self._after_pass: dict[Callable[[], None], None] = {}
        self._dirs: dict[str, int] = {}  # directory -> its kernel watch
        self._dir_of: dict[int, str] = {}  # and back
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._aside = ThreadPoolExecutor(_ASIDE_THREADS, thread_name_prefix=f"{name}-aside")

    def start(self) -> None:
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._inotify = INotify(nonblocking=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
            self._poke()
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._aside.shutdown(wait=False, cancel_futures=True)

    def aside(self, fn: Callable[[], None]) -> None:
        """Runs `fn` on a helper thread (a blocking call of one task's); nothing once stopped."""
        with contextlib.suppress(RuntimeError):  # shut down: the task is not stepped any more
            self._aside.submit(fn)

    def after_each_pass(self, fn: Callable[[], None]) -> None:
        """Calls `fn` (once, however often added) on this thread after each pass: a queue's
        `announce`, so that the pass's batches wake the writer once."""
        with self._lock:
            self._after_pass[fn] = None

    def watch(self, directory: str, on_write: Callable[[], None]) -> bool:
        """Calls `on_write` once (on this thread), at the next write into a file of
        `directory`. False: no watch (gone, the limit, not started)."""
        with self._lock:
            if self._inotify is None or self._stopping:
                return False
            wd = self._dirs.get(directory)
            if wd is None:
                try:
                    wd = int(self._inotify.add_watch(directory, _WRITE_MASK))
                except OSError:
                    return False
                old = self._dir_of.get(wd)  # the same directory under another name
                if old is not None:
                    del self._dirs[old]
                self._dirs[directory] = wd
                self._dir_of[wd] = directory
            callbacks = self._writes.setdefault(wd, [])
            if on_write not in callbacks:
                callbacks.append(on_write)
            return True

    def forget(self, on_write: Callable[[], None]) -> None:
        """`on_write` is of no use any more (its reader is done): it is dropped, and so is the
        kernel's watch of a directory nobody else waits on."""
        with self._lock:
            for wd in [wd for wd, cbs in self._writes.items() if on_write in cbs]:
                callbacks = self._writes[wd]
                callbacks.remove(on_write)
                if callbacks:
                    continue
                del self._writes[wd]
                directory = self._dir_of.pop(wd, None)
                if directory is not None and self._inotify is not None:
                    del self._dirs[directory]
                    with contextlib.suppress(OSError):  # gone meanwhile
                        self._inotify.rm_watch(wd)

    def add(self, task: Task) -> None:
        """Runs `task` from its first step on."""
        with self._lock:
            self._tasks.add(task)
        self.wake(task)

    def wake(self, task: Task) -> None:
        """Steps `task` soon; nothing once it is done."""
        with self._lock:
            if task in self._ready or task not in self._tasks:
                return
            self._ready[task] = None
            if len(self._ready) == 1:
                self._poke()

    def _poke(self) -> None:
        """Under the lock: out of poll()."""
        if self._polling:
            self._polling = False
            os.eventfd_write(self._wake_fd, 1)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._inotify.fileno(), select.POLLIN)
        poller.register(self._wake_fd, select.POLLIN)
        try:
            self._loop(poller)
        finally:
            with self._lock:
                self._stopping = True
                self._inotify.close()
                os.close(self._wake_fd)

    def _loop(self, poller: select.poll) -> None:
        ticking = False  # the last pass had writes: lines are flowing
        while True:
            with self._lock:
                idle = not self._ready and not self._take_due(time.monotonic())
                timeout = None
                if self._timers:
                    timeout = max(0, int((self._timers[0][0] - time.monotonic()) * 1000) + 1)
                self._polling = idle and not self._stopping and not (ticking and self._gather > 0)
            if self._stopping:
                return
            if idle and ticking and self._gather > 0:
                # While lines flow, the loop ticks: one wake-up a pass (this sleep's), not
                # two (poll's, then the gathering sleep's). A wake() meanwhile waits for the
                # tick; the first pass without a write goes back to poll().
                time.sleep(self._gather)
            elif idle:
                if poller.poll(timeout):
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(self._wake_fd)
                    if self._gather > 0:
                        time.sleep(self._gather)  # coalesce: see the module docstring
                with self._lock:
                    self._polling = False
            ticking = self._writes_seen()
            with self._lock:
                self._take_due(time.monotonic())
                tasks, self._ready = list(self._ready), {}
            for task in tasks:
                wait = self._step(task)
                with self._lock:
                    if wait is None:
                        self._tasks.discard(task)
                        self._ready.pop(task, None)
                        self._due.pop(task, None)
                        continue
                    if task in self._ready:
                        continue
                    if wait <= 0:
                        self._ready[task] = None
                    else:
                        # A timer already set for sooner stays (the task is stepped early
                        # then, which is harmless): one timer per task and wait, not per
                        # wake-up.
                        deadline = time.monotonic() + wait
                        due = self._due.get(task)
                        if due is None or deadline < due:
                            self._due[task] = deadline
                            heapq.heappush(self._timers, (deadline, next(self._seq), task))
            with self._lock:
                after = list(self._after_pass)
            for fn in after:
                try:
                    fn()
                except Exception:
                    log.exception("log file read loop: an after-pass call failed")

    def _writes_seen(self) -> bool:
        """The write events queued so far: their callbacks, once each. True if any came."""
        callbacks: list[Callable[[], None]] = []
        events = self._events()
        if not events:
            return False
        woken: set[int] = set()
        unwaited: set[int] = set()  # written to with nobody waiting
        with self._lock:
            for wd, mask in events:
                if mask & _OVERFLOW:  # lost: everyone looks again
                    for cbs in self._writes.values():
                        callbacks += cbs
                    woken.update(self._writes)
                    self._writes.clear()
                    continue
                waiting = self._writes.pop(wd, None)
                if waiting:
                    callbacks += waiting
                    woken.add(wd)
                if mask & _IGNORED:  # the directory went, or rm_watch below
                    directory = self._dir_of.pop(wd, None)
                    if directory is not None:
                        del self._dirs[directory]
                elif wd not in woken:
                    unwaited.add(wd)
            # A reader that is behind, or done: the writes to come would cost the writer
            # and this thread for nothing.
            for wd in unwaited - woken:
                directory = self._dir_of.pop(wd, None)
                if directory is not None:
                    del self._dirs[directory]
                    with contextlib.suppress(OSError):  # gone meanwhile
                        self._inotify.rm_watch(wd)
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("log file read loop: a wake-up failed")
        return True

    def _events(self) -> list[tuple[int, int]]:
        """(wd, mask) of the events queued, without their names: this runs every pass."""
        try:
            data = os.read(self._inotify.fileno(), _EVENTS_BYTES)
        except BlockingIOError:
            return []
        events, pos, end = [], 0, len(data)
        while pos < end:
            wd, mask, _cookie, size = _EVENT.unpack_from(data, pos)
            events.append((wd, mask))
            pos += _EVENT.size + size
        return events

    def _take_due(self, now: float) -> bool:
        """Under the lock: tasks whose wait ran out become ready. True if any did."""
        timers, took = self._timers, False
        while timers and timers[0][0] <= now:
            deadline, _, task = heapq.heappop(timers)
            if self._due.get(task) == deadline:  # else replaced by a sooner one: stale
                del self._due[task]
                self._ready[task] = None
                took = True
        return took

    def _step(self, task: Task) -> float | None:
        try:
            return task.step()
        except Exception:  # a task's bug: it is done, the loop goes on
            log.exception("log file reader failed; it stops reading")
            return None
