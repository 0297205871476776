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
- A file sd-journal cannot open is left out with one log frame (retried when it changes); an
  entry that cannot be read is skipped and reported (the first few logged, all counted);
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

from bridge.sources.inner_journal import containment, protocol
from bridge.sources.inner_journal.fields import DEFAULT_MAX_MESSAGE_BYTES, map_entry
from bridge.sources.inner_journal.position import InnerPosition, ResumeFilter, is_cursor, resume

_PR_SET_PDEATHSIG = 1
_FLUSH_BYTES = 64 << 10
_MAX_LOG_KEYS = 1024  # distinct problems remembered (each reported once)
_LOUD_SKIPS = 10  # unreadable entries logged one by one; the rest are only counted
_BIG_THRESHOLD = 64  # sd-journal decompresses at most this much over the message cap


@dataclass(frozen=True, slots=True, eq=False)
class _Held:
    """A journal file this worker holds open (what sd-journal is given is its fd's path)."""

    fd: int
    name: containment.JournalName

    @property
    def path(self) -> str:
        return f"/proc/self/fd/{self.fd}"


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


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
        self._max_files = max_files
        self._names: tuple[containment.JournalName, ...] | None = None
        self._held: dict[tuple[int, int], _Held] = {}
        self._bad: dict[tuple[int, int], tuple[int, int]] = {}  # identity -> (size, mtime_ns)
        self._reader: _reader._Reader | None = None
        self._filter: ResumeFilter | None = None
        self._logged: set[str] = set()
        self._skipped = 0

    def run(self) -> None:
        while True:
            exited = self._exited(0)
            self._scan(final=exited)
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

    # -- the file set --------------------------------------------------------------------

    def _scan(self, final: bool) -> None:
        names = tuple(containment.journal_names(self._root))
        changed_bad = any(self._changed(ident) for ident in self._bad)
        if names == self._names and not changed_bad:
            return
        self._names = names
        # after the exit, files no longer listed (a tmpfs detached with its namespace) stay
        held: dict[tuple[int, int], _Held] = dict(self._held) if final else {}
        opened: list[_Held] = []
        for name in names:
            try:
                fd, st = containment.open_regular(self._root, name.path)
            except OSError as exc:
                self._log("warning", f"file:{name.path}", f"{name.path}: {exc.strerror}; skipped")
                continue
            ident = (st.st_dev, st.st_ino)
            known = self._held.get(ident) or held.get(ident)  # renamed, or a second name
            if known is not None:
                os.close(fd)
                held[ident] = known
            else:
                held[ident] = _Held(fd, name)
                opened.append(held[ident])
        if len(held) > self._max_files:
            self._log("warning", "max_files", f"{len(held)} journal files; reading the newest")
            by_age = sorted(held.items(), key=lambda item: os.fstat(item[1].fd).st_mtime_ns)
            held = dict(by_age[-self._max_files :])
        for fresh in opened:
            if held.get(_identity(fresh.fd)) is not fresh:
                os.close(fresh.fd)
        if held.keys() == self._held.keys() and not changed_bad and self._reader is not None:
            return
        for ident, old in self._held.items():
            if ident not in held:
                os.close(old.fd)
        self._held = held
        self._rebuild()

    def _changed(self, ident: tuple[int, int]) -> bool:
        held = self._held.get(ident)
        if held is None:
            return False
        st = os.fstat(held.fd)
        return (st.st_size, st.st_mtime_ns) != self._bad[ident]

    def _rebuild(self) -> None:
        self._close_reader()
        for ident in [i for i in self._bad if i not in self._held or self._changed(i)]:
            del self._bad[ident]
        files = [h for ident, h in self._held.items() if ident not in self._bad]
        reader = self._open(files)
        if reader is None:
            return
        reader.data_threshold = self._max_message + _BIG_THRESHOLD
        self._reader = reader
        self._filter = resume(reader, self._position, self._floor)

    def _open(self, files: list[_Held]) -> _reader._Reader | None:
        if not files:
            return None
        try:
            return _reader._Reader(0, files=[h.path for h in files])
        except (OSError, ValueError):
            pass
        good = []
        for held in files:  # find the files sd-journal refuses, one by one
            try:
                _reader._Reader(0, files=[held.path]).close()
                good.append(held)
            except (OSError, ValueError) as exc:
                st = os.fstat(held.fd)
                self._bad[(st.st_dev, st.st_ino)] = (st.st_size, st.st_mtime_ns)
                why = getattr(exc, "strerror", None) or str(exc)
                self._log("warning", f"bad:{st.st_ino}", f"{held.name.path}: {why}; skipped")
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
            if count % 256 == 0 and time.monotonic() - out.last_sent >= self._heartbeat:
                out.add(protocol.frame(protocol.HEARTBEAT, b""))
                out.flush()
            try:
                if not reader._next(1):
                    break
                cursor = reader._get_cursor()
            except OSError as exc:
                self._log("warning", "next", f"reading the journal failed: {exc}; reopening")
                self._close_reader()
                self._names = None  # rebuilt at the next scan
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
                f"entry:{cursor}",
                f"entry {cursor} unreadable (over the memory cap, or damaged); skipped",
                quiet=self._skipped > _LOUD_SKIPS,
            )
            if is_cursor(cursor):
                self._position = _past(self._position, cursor)
            return
        mapped = map_entry(pairs, realtime, self._max_message)
        self._out.add(
            protocol.encode_entry(mapped, realtime, monotonic, cursor, position.machine_id)
        )
        self._position = position

    def _log(self, level: str, key: str, message: str, quiet: bool = False) -> None:
        """One LOG frame per problem (`key`); `quiet` ones are counted by the bridge, not logged."""
        if key in self._logged:
            return
        if len(self._logged) >= _MAX_LOG_KEYS:
            self._logged.clear()  # bounded memory; a problem seen again is reported again
        self._logged.add(key)
        kind = key.partition(":")[0]
        data = {"level": level, "kind": kind, "msg": message, "quiet": quiet}
        self._out.add(protocol.encode_json(protocol.LOG, data))


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
