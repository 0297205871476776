"""Which running containers keep a journal of their own: one thread looks at all of them.

A container's journal appears some time after it starts (its journald starts with its systemd,
or never), so a look at `start` is not enough; an inotify watch per container would run out of
instances (128 per uid here), and a worker process per container would cost megabytes each for
the many containers that have no journal. `InnerJournalWatch` keeps one thread that looks
into each watched container's root (`containment.has_inner_journal`: two bounded directory
listings and the headers of at most 8 files, through the root fd, never following a link out
of it; a file only named like a journal does not count) on a schedule that backs off
from `first_seconds` to `max_seconds`, and calls `found(container_id, pid)` once journal files
are there. Invariants:

- `found` is called at most once per `watch`, from the watch thread, never with a lock held;
  it must return soon (hand the work to the caller's own thread or pool).
- A container is forgotten when its process exits (its pidfd says so), when `forget` is called,
  or when its root cannot be opened (one log line per reason, counted as an "open" error).
- Containers without a journal cost one look every `max_seconds` (about 50 µs each) and no fd
  between looks besides their pidfd.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge.core.readiness import readable
from bridge.sources.inner_journal import containment
from bridge.telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass
class _Watched:
    pid: int
    pidfd: int
    delay: float
    token: int  # the heap entries of an earlier watch of the same container are stale


class InnerJournalWatch:
    """See the module."""

    def __init__(
        self,
        found: Callable[[str, int], None],
        telemetry: Telemetry,
        *,
        first_seconds: float = 0.5,
        max_seconds: float = 60.0,
    ) -> None:
        self._found = found
        self._telemetry = telemetry
        self._first = first_seconds
        self._max = max_seconds
        self._lock = threading.Condition()
        self._watched: dict[str, _Watched] = {}
        self._due: list[tuple[float, int, str]] = []  # (when, token, container id)
        self._tokens = 0
        self._stopping = False
        self._denied_logged = False
        self._thread = threading.Thread(target=self._run, name="inner-journal-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()

    def join(self, timeout: float) -> None:
        if self._thread.ident is not None:
            self._thread.join(timeout)
        with self._lock:
            for watched in self._watched.values():
                os.close(watched.pidfd)
            self._watched.clear()

    def watch(self, container_id: str, pid: int) -> bool:
        """Looks for the journal of the container whose first process is `pid` (from inspect
        State.Pid), at once and then on the schedule. False when the process is already gone."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return False
        with self._lock:
            old = self._watched.pop(container_id, None)
            if old is not None:
                os.close(old.pidfd)
            self._tokens += 1
            self._watched[container_id] = _Watched(pid, pidfd, self._first, self._tokens)
            heapq.heappush(self._due, (time.monotonic(), self._tokens, container_id))
            self._lock.notify()
        return True

    def forget(self, container_id: str) -> None:
        with self._lock:
            watched = self._watched.pop(container_id, None)
        if watched is not None:
            os.close(watched.pidfd)

    @property
    def watching(self) -> int:
        with self._lock:
            return len(self._watched)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping:
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    if wait is not None and wait <= 0:
                        break
                    self._lock.wait(wait)
                if self._stopping:
                    return
                _, token, cid = heapq.heappop(self._due)
                watched = self._watched.get(cid)
                if watched is None or watched.token != token:
                    continue  # forgotten, or watched again since
                pidfd = os.dup(watched.pidfd)  # ours while we look: forget() closes the other
            try:
                verdict = self._look(watched.pid, pidfd)
            except Exception as exc:  # a bug must cost one container, never the watch
                log.exception("container %s: looking for its journal failed: %s", cid[:12], exc)
                verdict = "gone"
            finally:
                os.close(pidfd)
            self._decide(cid, watched, verdict)

    def _look(self, pid: int, pidfd: int) -> str:
        """The verdict: "found", "none" (look again later) or "gone" (stop watching)."""
        if readable([pidfd]):
            return "gone"  # the process exited: a new start is a new watch
        try:
            with containment.opened_root(pid) as root:
                if readable([pidfd]):
                    return "gone"  # the pid may have been reused before the open
                return "found" if containment.has_inner_journal(root) else "none"
        except (ProcessLookupError, FileNotFoundError):
            return "gone"
        except OSError as exc:
            self._telemetry.inner_journal_error("open")
            if not self._denied_logged:
                self._denied_logged = True
                log.error(
                    "cannot look into containers for their own journals (%s): the bridge needs "
                    "CAP_SYS_PTRACE (see deploy/); inner journals are not forwarded",
                    exc.strerror or exc,
                )
            return "gone"

    def _decide(self, cid: str, watched: _Watched, verdict: str) -> None:
        with self._lock:
            if self._watched.get(cid) is not watched:
                return  # forgotten or watched again meanwhile: that one decides
            if verdict == "none":
                heapq.heappush(self._due, (time.monotonic() + watched.delay, watched.token, cid))
                watched.delay = min(self._max, watched.delay * 2)
                return
            del self._watched[cid]
        os.close(watched.pidfd)
        if verdict == "found":
            self._found(cid, watched.pid)
