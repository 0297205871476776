"""The worker process that reads one container's inner journal: `python -m` this module.

It gets the container's root as an inherited O_PATH fd (and, when there is one, a pidfd of the
container's first process), opens the journal files only through `containment` (inside that
root, regular files only), parses them with sd-journal, and writes frames (`protocol`) to fd 1.
Whatever a hostile journal does to sd-journal -- crash it, make it loop, make it allocate --
happens in this process, which the bridge kills and restarts (`follower`). Invariants:

- sd-journal reads exactly the files opened here: it is given `/proc/self/fd/<fd>` paths, which
  the kernel resolves to the open file itself (a magic link), never to a name in the container.
- No inotify: the directories are polled every `--poll` seconds (a listing and nothing else
  unless it changed), and new entries are found by calling `_next` again, which sees what
  journald appended. Heartbeat frames go out at least every `--heartbeat` seconds, from the
  loop that reads entries, so a worker stuck inside sd-journal falls silent.
- The file set is re-read when a listing changes (rotation, vacuuming, a new machine-id
  directory, /run flushed to /var); the reader is rebuilt and resumes after the last entry sent
  (`position.resume`), so nothing is sent twice and a lost stretch is announced as a gap.
- The file set is `fileset.FileSet`: bounded work per scan, heartbeats from inside it, file
  problems as counted states. A file sd-journal cannot open is left out (retried when it
  changes); each kind of problem is one log frame with a count (`fileset.Reports`), never one
  per name the container chose. An entry that cannot be read is skipped and reported (the
  first few logged, all counted);
  memory is capped with RLIMIT_DATA (file mappings do not count against it, Python's heap and
  sd-journal's decompression buffers do): a 100 MB field is skipped under the default cap.
- When the container's process has exited (pidfd readable), one last scan adds files without
  dropping any held, the journal is read to its end, an END frame is sent and the worker exits.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import sys
import time
from dataclasses import dataclass

from systemd import _reader

from bridge.sources.inner_journal import containment, fileset, protocol
from bridge.sources.inner_journal.fields import DEFAULT_MAX_MESSAGE_BYTES, map_entry
from bridge.sources.inner_journal.position import InnerPosition, ResumeFilter, is_cursor, resume

_PR_SET_PDEATHSIG = 1
_FLUSH_BYTES = 64 << 10
_MAX_LOG_KEYS = 1024  # distinct problems remembered (each reported once)
_LOUD_SKIPS = 10  # unreadable entries logged one by one; the rest are only counted
_BIG_THRESHOLD = 64  # sd-journal decompresses at most this much over the message cap


@dataclass(frozen=True, slots=True)
class _Bad:
    """A held file sd-journal refused, as it was then (tried again once it changes)."""

    size: int
    mtime_ns: int
    why: str


class Output:
    """Frames to the bridge, written in batches of up to 64 KiB."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._parts: list[bytes] = []
        self._size = 0
        self.last_sent = time.monotonic()

    def add(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._parts:
            return
        data = memoryview(b"".join(self._parts))
        self._parts.clear()
        self._size = 0
        while data:  # blocks while the bridge is behind: that is the back-pressure
            data = data[os.write(self._fd, data) :]
        self.last_sent = time.monotonic()


class Worker:
    """The loop of one worker process: scan, read, heartbeat, wait; see the module."""

    def __init__(
        self,
        root_fd: int,
        pidfd: int | None,
        position: InnerPosition | None,
        out: Output,
        *,
        floor_realtime_us: int = 0,
        poll_seconds: float = 1.0,
        heartbeat_seconds: float = 1.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_files: int = 128,
    ) -> None:
        self._root = root_fd
        self._pidfd = pidfd
        self._position = position
        self._out = out
        self._floor = floor_realtime_us
        self._poll = poll_seconds
        self._heartbeat = heartbeat_seconds
        self._max_message = max_message_bytes
        self._files = fileset.FileSet(root_fd, max_files=max_files, tick=self._beat)
        self._bad: dict[fileset.Identity, _Bad] = {}
        self._reports = fileset.Reports()
        self._reader: _reader._Reader | None = None
        self._filter: ResumeFilter | None = None
        self._logged: set[str] = set()
        self._skipped = 0

    def run(self) -> None:
        while True:
            exited = self._exited(0)
            self._scan(final=exited)
            self._report()
            self._pump()
            if exited:
                self._out.add(protocol.encode_json(protocol.END, self._end()))
                self._out.flush()
                return
            self._idle()

    def _idle(self) -> None:
        """Waits a poll interval, heartbeating; returns at once when the container exits."""
        deadline = time.monotonic() + self._poll
        while True:
            self._out.add(protocol.frame(protocol.HEARTBEAT, b""))
            self._out.flush()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._exited(min(remaining, self._heartbeat)):
                return

    def _end(self) -> dict[str, object]:
        if self._position is None:
            return {"position": None}
        drained = InnerPosition(self._position.cursor, self._position.machine_id, True)
        return {"position": drained.to_json()}

    def _exited(self, timeout: float) -> bool:
        if self._pidfd is None:
            if timeout:
                time.sleep(timeout)
            return False
        return bool(select.select([self._pidfd], [], [], timeout)[0])

    def _beat(self) -> None:
        """A heartbeat, when one is due: called from long loops (a big listing, a catch-up)."""
        if time.monotonic() - self._out.last_sent >= self._heartbeat:
            self._out.add(protocol.frame(protocol.HEARTBEAT, b""))
            self._out.flush()

    # -- the file set --------------------------------------------------------------------

    def _scan(self, final: bool) -> None:
        changed = self._files.scan(final)
        changed_bad = any(self._changed(ident) for ident in self._bad)
        if changed or changed_bad or (self._reader is None and self._files.held):
            self._rebuild()

    def _report(self) -> None:
        """One LOG frame per kind of file problem whose count changed (`fileset.Reports`)."""
        reports = self._reports
        for kind in ("file", "names", "max_files"):
            reports.update(kind, self._files.problems.get(kind))
        bad = fileset.Tally()
        for ident, why in self._bad.items():
            held = self._files.held.get(ident)
            if held is not None:
                bad.add(f"{held.name.path}: {why.why}")
        reports.update("bad", bad)
        for kind, count, new, message in reports.due(time.monotonic()):
            data = {"level": "warning", "kind": kind, "msg": message, "count": count, "new": new}
            self._out.add(protocol.encode_json(protocol.LOG, data))

    def _changed(self, ident: fileset.Identity) -> bool:
        held = self._files.held.get(ident)
        if held is None:
            return False
        st = os.fstat(held.fd)
        bad = self._bad[ident]
        return (st.st_size, st.st_mtime_ns) != (bad.size, bad.mtime_ns)

    def _rebuild(self) -> None:
        self._close_reader()
        held = self._files.held
        for ident in [i for i in self._bad if i not in held or self._changed(i)]:
            del self._bad[ident]
        files = [h for ident, h in held.items() if ident not in self._bad]
        reader = self._open(files)
        if reader is None:
            return
        reader.data_threshold = self._max_message + _BIG_THRESHOLD
        self._reader = reader
        self._filter = resume(reader, self._position, self._floor)

    def _open(self, files: list[fileset.Held]) -> _reader._Reader | None:
        if not files:
            return None
        try:
            return _reader._Reader(0, files=[_path(h) for h in files])
        except (OSError, ValueError):
            pass
        good = []
        for held in files:  # find the files sd-journal refuses, one by one
            self._beat()
            try:
                _reader._Reader(0, files=[_path(held)]).close()
                good.append(held)
            except (OSError, ValueError) as exc:
                st = os.fstat(held.fd)
                why = getattr(exc, "strerror", None) or str(exc)
                self._bad[(st.st_dev, st.st_ino)] = _Bad(st.st_size, st.st_mtime_ns, why)
        if not good or len(good) == len(files):  # each file opens alone, not all together
            if good:
                self._log("warning", "bad:together", "the journal files cannot be read together")
            return None
        return self._open(good)

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._filter = None

    # -- entries -------------------------------------------------------------------------

    def _pump(self) -> None:
        reader = self._reader
        out = self._out
        count = 0
        while reader is not None:
            count += 1
            if count % 256 == 0:
                self._beat()
            try:
                if not reader._next(1):
                    break
                cursor = reader._get_cursor()
            except OSError as exc:
                self._log("warning", "next", f"reading the journal failed: {exc}; reopening")
                self._close_reader()
                self._files.forget_listing()  # rebuilt at the next scan
                break
            if self._filter is not None:
                try:
                    admitted = self._filter.admit(cursor)
                except ValueError:  # not a cursor as sd-journal writes them: cannot happen
                    admitted = False
                if not admitted:
                    continue
                if self._filter.gap is not None:
                    out.add(protocol.encode_gap(self._filter.gap))
                    self._filter.gap = None
            self._send(reader, cursor)
        out.flush()

    def _send(self, reader: _reader._Reader, cursor: str) -> None:
        try:
            data = reader._get_all()
            realtime = reader._get_realtime()
            monotonic = reader._get_monotonic()[0]
            pairs = [
                (name, item)
                for name, value in data.items()
                for item in (value if isinstance(value, list) else (value,))
            ]
            machine = data.get("_MACHINE_ID", b"")
            machine_id = machine.decode("ascii", "replace") if isinstance(machine, bytes) else ""
            position = InnerPosition(
                cursor, machine_id if containment.is_machine_dir(machine_id) else ""
            )
        except (OSError, MemoryError, ValueError):
            # too large for the memory cap, undecodable names, damaged objects: skip it, and
            # move the position past it so that a restart does not stumble on it again
            self._skipped += 1
            self._log(
                "warning",
                None,
                f"entry {cursor} unreadable (over the memory cap, or damaged); skipped",
                quiet=self._skipped > _LOUD_SKIPS,
                kind="entry",
            )
            if is_cursor(cursor):
                self._position = _past(self._position, cursor)
            return
        mapped = map_entry(pairs, realtime, self._max_message)
        self._out.add(
            protocol.encode_entry(mapped, realtime, monotonic, cursor, position.machine_id)
        )
        self._position = position

    def _log(
        self, level: str, key: str | None, message: str, quiet: bool = False, kind: str = ""
    ) -> None:
        """One LOG frame per problem `key` (None: every time); `quiet` ones are counted by the
        bridge, not logged. File problems go through `_report` instead: one line per kind."""
        if key is not None:
            if key in self._logged:
                return
            if len(self._logged) < _MAX_LOG_KEYS:  # full: what is new is reported each time
                self._logged.add(key)
        kind = kind or (key or "").partition(":")[0]
        data = {"level": level, "kind": kind, "msg": message, "quiet": quiet}
        self._out.add(protocol.encode_json(protocol.LOG, data))


def _path(held: fileset.Held) -> str:
    """What sd-journal is given: the fd's magic link, which opens the file itself."""
    return f"/proc/self/fd/{held.fd}"


def _past(position: InnerPosition | None, cursor: str) -> InnerPosition:
    machine = position.machine_id if position is not None else ""
    return InnerPosition(cursor, machine)


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the bridge dies (kill -9 included), so no worker outlives it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent and os.getppid() != parent:  # the bridge died before prctl took effect
        sys.exit(0)


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="inner-journal-worker")
    parser.add_argument("--root-fd", type=int, required=True)
    parser.add_argument("--pidfd", type=int)
    parser.add_argument("--position", type=str)
    parser.add_argument("--floor-realtime-us", type=int, default=0)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
    parser.add_argument("--max-files", type=int, default=128)
    parser.add_argument("--memory-limit", type=int, default=512 << 20)
    parser.add_argument("--parent", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _options(argv)
    _die_with_parent(args.parent)
    out_fd = os.dup(1)
    os.dup2(2, 1)  # a stray print (ours or a library's) must not corrupt the frames
    if args.memory_limit:
        resource.setrlimit(resource.RLIMIT_DATA, (args.memory_limit, args.memory_limit))
    position = InnerPosition.from_json(json.loads(args.position)) if args.position else None
    worker = Worker(
        args.root_fd,
        args.pidfd,
        position,
        Output(out_fd),
        floor_realtime_us=args.floor_realtime_us,
        poll_seconds=args.poll,
        heartbeat_seconds=args.heartbeat,
        max_message_bytes=args.max_message_bytes,
        max_files=args.max_files,
    )
    try:
        worker.run()
    except BrokenPipeError:  # the bridge closed its end: nobody is listening any more
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
