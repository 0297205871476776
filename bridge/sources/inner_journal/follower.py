"""The bridge's side of one container's inner journal: a worker process, watched, as events.

`InnerJournalFollower` is iterated by the thread that forwards the container (the integrator's
reader thread); it yields `InnerEntry`, `InnerGap` and, once the container exited and its
journal was read to the end, one `InnerEnd`. Invariants:

- Nothing of the journal is parsed in the bridge process: the worker (`worker.py`, started as
  `python -I -m ...`, no fork of this threaded process) parses, and the bridge only reads bounded
  frames (`protocol.FrameReader`). The bridge opens the files, inside the container's root, and
  passes them as fds (`fileset`, polled every `poll_seconds`, up to half an interval early or
  late so as to share the wake-ups of the worker's frames, and at once when the container's
  process exits); the worker holds no capability and may open nothing (`sandbox`). A changed
  file set is a new worker, not a failure; once the container has exited and the set was
  looked at a last time, the worker's stdin is closed: it reads to the end and sends its END.
- A worker that exits, sends a malformed frame or falls silent for `stall_seconds` while the
  bridge waits for it is killed and started again after a backoff (`backoff_seconds`, doubling
  up to the second value, reset by progress); every such event is counted in `stats`. The time
  the consumer spends away does not count as silence: a worker blocked on a full pipe is the
  bridge's doing.
- A new worker resumes after the last entry this follower yielded (`position`), not after the
  last committed one: entries already yielded are the consumer's. A bridge restart resumes from
  the committed position the integrator passes in.
- `more_ready` tells a consumer that gathers events into batches when to hand them on: it is
  False after the last event of what the worker has sent so far (the next one may be a poll
  interval away), True while events already read follow the one just yielded.
- With a `budget`, a worker starts only once it has a slot (FIFO, shared by all containers),
  and one that has had its turn while others wait is stopped and queued again
  (`budget.WorkerBudget`): neither is a failure, and the next worker resumes as after a restart.
- The follower owns the root fd and the pidfd it is given and closes them in `close()`.
  `stop()` may be called from any thread and makes the iteration end soon; `close()` belongs to
  the iterating thread (or to whoever holds the follower once that thread is done).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from bridge.core.readiness import readable
from bridge.sources.inner_journal import containment, fileset, protocol
from bridge.sources.inner_journal.budget import WorkerBudget
from bridge.sources.inner_journal.options import DEFAULT_OPTIONS, FollowerStats, WorkerOptions
from bridge.sources.inner_journal.position import InnerPosition
from bridge.sources.inner_journal.protocol import InnerEnd, InnerEvent

log = logging.getLogger(__name__)

_READ_BYTES = 256 << 10
_HEALTHY_SECONDS = 60.0  # a worker alive this long resets the backoff even without entries
_LEVELS = {"warning": logging.WARNING, "error": logging.ERROR, "info": logging.INFO}
_EVENT_KINDS = frozenset((protocol.ENTRY, protocol.GAP, protocol.END))


class _WorkerFailed(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class InnerJournalFollower:
    """Follows one container's inner journal through a worker process; see the module."""

    def __init__(
        self,
        root_fd: int,
        *,
        pidfd: int | None = None,
        position: InnerPosition | None = None,
        floor_realtime_us: int = 0,
        name: str = "",
        options: WorkerOptions = DEFAULT_OPTIONS,
        stall_seconds: float = 10.0,
        backoff_seconds: tuple[float, float] = (0.5, 30.0),
        budget: WorkerBudget | None = None,
    ) -> None:
        if options.heartbeat_seconds >= stall_seconds:
            raise ValueError("stall_seconds must be longer than the worker's heartbeat interval")
        self._root_fd = root_fd
        self._pidfd = pidfd
        self.position = position
        self._floor = floor_realtime_us
        self.name = name or f"root fd {root_fd}"
        self._options = options
        self._stall = stall_seconds
        self._backoff = backoff_seconds
        self._budget = budget
        self._ticket = budget.ticket() if budget is not None else 0
        self._files = fileset.FileSet(root_fd, max_files=options.max_files)
        self._reports = fileset.Reports()
        self._final = False  # the container exited and its file set was looked at a last time
        self._respawn = False  # the file set changed: the worker is to be started anew
        self._next_poll = 0.0
        self._entries_at_start = 0
        self._failures = 0  # consecutive, without progress
        self._retry_at = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._frames = protocol.FrameReader(options.max_message_bytes)
        self._started_at = 0.0
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stopping = False
        self._closed = False
        self.more_ready = False  # see the module
        self.stats = FollowerStats()

    @classmethod
    def for_pid(cls, pid: int, **kwargs: Any) -> InnerJournalFollower:
        """A follower of the container whose first process is `pid` (from `docker inspect`).

        The pidfd is opened before the root, and the process checked alive after: the root is
        then that process's, not that of a process that reused its pid.
        """
        pidfd = os.pidfd_open(pid)
        try:
            root_fd = containment.open_root(pid)
        except OSError:
            os.close(pidfd)
            raise
        if readable([pidfd]):
            os.close(root_fd)
            os.close(pidfd)
            raise ProcessLookupError(f"process {pid} has exited")
        try:
            return cls(root_fd, pidfd=pidfd, **kwargs)
        except BaseException:
            os.close(root_fd)
            os.close(pidfd)
            raise

    # -- iteration -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[InnerEvent]:
        try:
            while not self._stopping:
                if self._proc is None and not self._start():
                    continue
                try:
                    frames = self._read()
                except _WorkerFailed as failure:
                    self._failed(failure)
                    continue
                last_event = _last_event(frames)
                for index, (kind, payload) in enumerate(frames):
                    try:
                        event = self._event(kind, payload)
                    except protocol.ProtocolError as exc:
                        self._failed(_WorkerFailed("protocol", str(exc)))
                        break
                    if event is None:
                        continue
                    self.more_ready = index < last_event
                    yield event
                    if isinstance(event, InnerEnd):
                        return
                if self._respawn:  # the same slot, a new file set; not a failure
                    self._respawn = False
                    self._kill(release=False)
                elif self._budget is not None and self._budget.should_yield(
                    self._ticket, idle=self.stats.entries == self._entries_at_start
                ):
                    self.stats.turns += 1  # others wait: their turn; ours comes again
                    self._kill()
        finally:
            self._kill()

    def _event(self, kind: bytes, payload: bytes) -> InnerEvent | None:
        """The event of one frame; None for heartbeats and logs (raises ProtocolError)."""
        stats = self.stats
        if kind == protocol.ENTRY:
            entry = protocol.decode_entry(payload)
            self.position = entry.position
            stats.entries += 1
            self._failures = 0
            for reason, count in entry.dropped.items():
                stats.fields_dropped[reason] = stats.fields_dropped.get(reason, 0) + count
            return entry
        if kind == protocol.GAP:
            gap = protocol.decode_gap(payload)
            stats.gaps += 1
            stats.lost += gap.gap.lost or 0
            log.warning(
                "inner journal of %s: %s entries after %s were gone before they could be read (%s)",
                self.name,
                "some" if gap.gap.lost is None else gap.gap.lost,
                gap.gap.saved.cursor,
                gap.gap.kind,
            )
            return gap
        if kind == protocol.LOG:
            data = protocol.decode_json(payload)
            problem = str(data.get("kind", "other"))[:32]
            new = data.get("new", 1)  # a report of a kind's count says by how much it rose
            new = new if isinstance(new, int) and 0 <= new <= protocol.MAX_COUNT else 1
            stats.problems[problem] = stats.problems.get(problem, 0) + new
            if data.get("quiet") is not True:
                level = _LEVELS.get(str(data.get("level")), logging.WARNING)
                log.log(level, "inner journal of %s: %s", self.name, str(data.get("msg"))[:512])
            return None
        if kind == protocol.END:
            raw = protocol.decode_json(payload).get("position")
            try:
                end = None if raw is None else InnerPosition.from_json(raw)
            except ValueError as exc:
                raise protocol.ProtocolError(f"bad end frame: {exc}") from None
            if end is not None:
                self.position = end
            self._stopping = True
            return InnerEnd(end)
        return None  # heartbeat

    def _read(self) -> list[tuple[bytes, bytes]]:
        """The frames the worker sent next; [] when woken by stop() or when the file set
        changed. The directories are polled meanwhile (`_poll`)."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        out = proc.stdout.fileno()
        silent_until = time.monotonic() + self._stall
        # A poll may come half an interval early or late: awake already (frames were just
        # handled), one due soon is done now; asleep, one due is left until half an interval
        # later, in case frames wake the follower first. The worker sends a frame at least
        # once an interval, so its frames and the polls share one wake-up instead of two.
        slack = self._options.poll_seconds / 2
        early = slack
        while True:
            now = time.monotonic()
            if now >= self._next_poll - early:
                self._poll()
                if self._respawn:
                    return []
            timeout = min(silent_until, self._next_poll + slack) - now
            watched = [out, self._wake_r]
            if self._pidfd is not None and not self._final:  # the exit: look at once
                watched.append(self._pidfd)
            ready = readable(watched, max(0.0, timeout))
            early = -slack  # from here on, woken by the poll's own timeout or for the pidfd
            if self._pidfd in ready and out not in ready:
                self._next_poll = -math.inf
                continue
            if ready:
                break
            if time.monotonic() >= silent_until:
                raise _WorkerFailed("stall", f"silent for {self._stall:g} s")
        if out not in ready:
            return []
        data = os.read(out, _READ_BYTES)
        if not data:
            code = proc.wait()
            raise _WorkerFailed("exit", f"exited with {_describe(code)}")
        try:
            return self._frames.feed(data)
        except protocol.ProtocolError as exc:
            raise _WorkerFailed("protocol", str(exc)) from None

    # -- the files -------------------------------------------------------------------------

    def _poll(self) -> None:
        """Looks at the journal directories (bounded: `fileset`); a changed file set means a
        new worker. Once the container has exited, one last look adds files without dropping
        any (its /run may be gone), and the worker is told the set is final."""
        # From when it was due, not from now: polls done early under steady frames keep to
        # one an interval.
        self._next_poll = max(time.monotonic(), self._next_poll) + self._options.poll_seconds
        if self._final:
            return
        exited = self._pidfd is not None and bool(readable([self._pidfd]))
        if self._scan(final=exited):
            self._respawn = True
        if exited:
            self._final = True
            if not self._respawn:
                self._say_final()

    def _scan(self, final: bool = False) -> bool:
        """`FileSet.scan`, and one log line per kind of problem whose count changed."""
        changed = self._files.scan(final)
        for kind in ("file", "names", "max_files"):
            self._reports.update(kind, self._files.problems.get(kind))
        for kind, _, new, message in self._reports.due(time.monotonic()):
            self.stats.problems[kind] = self.stats.problems.get(kind, 0) + new
            log.warning("inner journal of %s: %s", self.name, message[:512])
        return changed

    def _say_final(self) -> None:
        """Closes the worker's stdin: the container has exited, read to the end and stop."""
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    # -- the worker's life -----------------------------------------------------------------

    def _start(self) -> bool:
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            readable([self._wake_r], wait)  # stop() cuts the backoff short
            return False
        budget = self._budget
        # a first worker, or one whose predecessor read entries, goes before idle ones
        productive = self.stats.starts == 0 or self.stats.entries > self._entries_at_start
        if budget is not None and not budget.acquire(
            self._ticket, lambda: self._stopping, productive=productive
        ):
            return False
        try:
            self._poll()
            self._respawn = False  # what changed is what this worker gets
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                pass_fds=[held.fd for held in self._files.held.values()],
                close_fds=True,
            )
        except BaseException:
            if budget is not None:
                budget.release(self._ticket)
            raise
        self._entries_at_start = self.stats.entries
        if self._final:
            self._say_final()
        self._frames = protocol.FrameReader(self._options.max_message_bytes)
        self._started_at = time.monotonic()
        self.stats.starts += 1
        if self._failures:
            self.stats.restarts += 1
        return True

    def _command(self) -> list[str]:
        """The worker's command line (`-I`: no environment, no user site, no current dir)."""
        args = [
            sys.executable,
            "-I",
            "-m",
            "bridge.sources.inner_journal.worker",
            "--files=" + json.dumps([[h.fd, h.name.path] for h in self._files.held.values()]),
            f"--floor-realtime-us={self._floor}",
            f"--poll={self._options.poll_seconds}",
            f"--heartbeat={self._options.heartbeat_seconds}",
            f"--max-message-bytes={self._options.max_message_bytes}",
            f"--memory-limit={self._options.memory_limit_bytes}",
            f"--parent={os.getpid()}",
        ]
        if self.position is not None:
            args.append("--position=" + json.dumps(self.position.to_json()))
        return args

    def _failed(self, failure: _WorkerFailed) -> None:
        kind = failure.kind
        if kind == "stall":
            self.stats.stalls += 1
        elif kind == "protocol":
            self.stats.protocol_errors += 1
        else:
            self.stats.exits += 1
        self._kill()
        if time.monotonic() - self._started_at >= _HEALTHY_SECONDS:
            self._failures = 0
        self._failures += 1
        first, cap = self._backoff
        delay = min(cap, first * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay
        log.warning(
            "inner journal of %s: the reader process %s (%s); restarting in %.1f s",
            self.name,
            {"stall": "stalled", "protocol": "sent garbage", "exit": "ended"}[kind],
            failure,
            delay,
        )

    def _kill(self, release: bool = True) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdout, proc.stdin):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if release and self._budget is not None:  # after the wait: never more than slots
            self._budget.release(self._ticket)

    # -- stopping --------------------------------------------------------------------------

    def stop(self) -> None:
        """Ends the iteration soon; thread-safe."""
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        """Stops the worker and closes every fd; see the module for which thread calls it."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._kill()
        self._files.close()
        for fd in (self._root_fd, self._pidfd, self._wake_r, self._wake_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __enter__(self) -> InnerJournalFollower:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def worker_pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid


def _last_event(frames: list[tuple[bytes, bytes]]) -> int:
    """The index of the last frame that becomes an event (-1: none)."""
    for index in range(len(frames) - 1, -1, -1):
        if frames[index][0] in _EVENT_KINDS:
            return index
    return -1


def _describe(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"status {code}"
