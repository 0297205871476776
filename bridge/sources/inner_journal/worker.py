"""The worker process that reads one container's inner journal: `python -m` this module.

The bridge opens the container's journal files (`fileset`, inside the container's root, pure
Python) and starts a worker with them as inherited fds (`--files`: fd and name of each). The
worker confines itself (`sandbox`: no capability, no_new_privs, a syscall filter that refuses
every path and every other process) before sd-journal sees a byte, then parses the fds
(`sdjournal`, sd_journal_open_files_fd) and writes frames (`protocol`) to fd 1. Whatever a
hostile journal does to sd-journal -- crash it, make it loop, make it allocate, take it over --
happens in this process, which can reach nothing but its fds, and which the bridge kills and
restarts (`follower`). Invariants:

- The file set is fixed for a worker's life: the bridge polls the directories and starts a new
  worker for a new set (rotation, vacuuming, /run flushed to /var); that one resumes after the
  last entry sent (`position.resume`), so nothing is sent twice and a lost stretch is announced
  as a gap.
- New entries are found by calling `_next` again every `--poll` seconds, which sees what
  journald appended. A frame (entries, or a heartbeat when there are none) goes out at least
  every `--heartbeat` seconds, from the loop that reads entries too, so a worker stuck inside
  sd-journal falls silent.
- A file sd-journal cannot open is left out (tried again when it changes); the files left out
  are one log frame with a count (`fileset.Reports`), never one per name the container chose.
  An entry that cannot be read is skipped and reported (the first few logged, all counted);
  memory is capped with RLIMIT_DATA (file mappings do not count against it, Python's heap and
  sd-journal's decompression buffers do): a 100 MB field is skipped under the default cap.
- stdin is the bridge's word that the container has exited and the file set is final: at its
  end the journal is read to its end, an END frame is sent and the worker exits.
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

from bridge.sources.inner_journal import containment, fileset, protocol, sandbox
from bridge.sources.inner_journal.fields import DEFAULT_MAX_MESSAGE_BYTES, map_entry
from bridge.sources.inner_journal.position import InnerPosition, ResumeFilter, is_cursor, resume
from bridge.sources.inner_journal.sdjournal import FdJournal

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
    """The loop of one worker process: check, read, heartbeat, wait; see the module."""

    def __init__(
        self,
        files: list[fileset.Held],
        position: InnerPosition | None,
        out: Output,
        *,
        done_fd: int | None = None,
        floor_realtime_us: int = 0,
        poll_seconds: float = 1.0,
        heartbeat_seconds: float = 1.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._files = {_identity(h.fd): h for h in files}
        self._done_fd = done_fd
        self._position = position
        self._out = out
        self._floor = floor_realtime_us
        self._poll = poll_seconds
        self._heartbeat = heartbeat_seconds
        self._max_message = max_message_bytes
        self._bad: dict[fileset.Identity, _Bad] = {}
        self._reports = fileset.Reports()
        self._reader: FdJournal | None = None
        self._filter: ResumeFilter | None = None
        self._logged: set[str] = set()
        self._skipped = 0
        self._machine: tuple[bytes, str] = (b"", "")  # the last raw machine id, as checked

    def run(self) -> None:
        while True:
            done = self._done(0)
            self._refresh()
            self._report()
            self._pump()
            if done:
                self._out.add(protocol.encode_json(protocol.END, self._end()))
                self._out.flush()
                return
            self._idle()

    def _idle(self) -> None:
        """Waits a poll interval, heartbeating; returns at once when told the container exited.

        A heartbeat goes out only when no frame went out for half the heartbeat interval:
        entries just sent say as much, and the bridge wakes once for them, not once more."""
        deadline = time.monotonic() + self._poll
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return
            quiet = now - self._out.last_sent
            if quiet >= self._heartbeat / 2:
                self._out.add(protocol.frame(protocol.HEARTBEAT, b""))
                self._out.flush()
                quiet = 0.0
            # wake when the next one is due at the latest: never a whole interval without one
            if self._done(min(remaining, self._heartbeat - quiet)):
                return

    def _end(self) -> dict[str, object]:
        if self._position is None:
            return {"position": None}
        drained = InnerPosition(self._position.cursor, self._position.machine_id, True)
        return {"position": drained.to_json()}

    def _done(self, timeout: float) -> bool:
        """Whether the bridge said the file set is final (it closed our stdin)."""
        if self._done_fd is None:
            if timeout:
                time.sleep(timeout)
            return False
        return bool(select.select([self._done_fd], [], [], timeout)[0])

    def _beat(self) -> None:
        """A heartbeat, when one is due: called from long loops (a catch-up, file checks)."""
        if time.monotonic() - self._out.last_sent >= self._heartbeat:
            self._out.add(protocol.frame(protocol.HEARTBEAT, b""))
            self._out.flush()

    # -- the files -----------------------------------------------------------------------

    def _refresh(self) -> None:
        """Rebuilds the reader when a refused file changed, or when there is none yet."""
        if self._reader is None or any(self._changed(ident) for ident in self._bad):
            self._rebuild()

    def _report(self) -> None:
        """One LOG frame when the count of refused files changed (`fileset.Reports`)."""
        bad = fileset.Tally()
        for ident, why in self._bad.items():
            bad.add(f"{self._files[ident].name.path}: {why.why}")
        self._reports.update("bad", bad)
        for kind, count, new, message in self._reports.due(time.monotonic()):
            data = {"level": "warning", "kind": kind, "msg": message, "count": count, "new": new}
            self._out.add(protocol.encode_json(protocol.LOG, data))

    def _changed(self, ident: fileset.Identity) -> bool:
        st = os.fstat(self._files[ident].fd)
        bad = self._bad[ident]
        return (st.st_size, st.st_mtime_ns) != (bad.size, bad.mtime_ns)

    def _rebuild(self) -> None:
        self._close_reader()
        for ident in [i for i in self._bad if self._changed(i)]:
            del self._bad[ident]
        files = [h for ident, h in self._files.items() if ident not in self._bad]
        reader = self._open(files)
        if reader is None:
            return
        reader.data_threshold = self._max_message + _BIG_THRESHOLD
        self._reader = reader
        self._filter = resume(reader, self._position, self._floor)

    def _open(self, files: list[fileset.Held]) -> FdJournal | None:
        if not files:
            return None
        try:
            return FdJournal([h.fd for h in files])
        except (OSError, ValueError):
            pass
        good = []
        for held in files:  # find the files sd-journal refuses, one by one
            self._beat()
            try:
                FdJournal([held.fd]).close()
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
                self._close_reader()  # rebuilt at the next poll
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

    def _send(self, reader: FdJournal, cursor: str) -> None:
        try:
            pairs = reader.get_pairs()
            realtime = reader._get_realtime()
            monotonic = reader._get_monotonic()[0]
            machines = [value for name, value in pairs if name == "_MACHINE_ID"]
            machine_id = self._machine_id(machines[0] if len(machines) == 1 else b"")
            position = InnerPosition(cursor, machine_id)
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

    def _machine_id(self, raw: bytes) -> str:
        """The entry's machine id when it names a machine directory, else "" (the last one is
        remembered: it is the same in every entry of a boot)."""
        if raw != self._machine[0]:
            text = raw.decode("ascii", "replace")
            self._machine = (raw, text if containment.is_machine_dir(text) else "")
        return self._machine[1]

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


def _identity(fd: int) -> fileset.Identity:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


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
    parser.add_argument("--files", type=str, required=True)  # JSON: [[fd, path], ...]
    parser.add_argument("--position", type=str)
    parser.add_argument("--floor-realtime-us", type=int, default=0)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
    parser.add_argument("--memory-limit", type=int, default=512 << 20)
    parser.add_argument("--parent", type=int, default=0)
    parser.add_argument("--again", action="store_true")  # exec'd again to shed capabilities
    return parser.parse_args(argv)


def held_files(spec: str) -> list[fileset.Held]:
    """`--files`: what the bridge opened, as fds and the names they had in the container."""
    files = []
    for fd, path in json.loads(spec):
        base, _, rest = str(path).rpartition("/")
        base, _, machine = base.rpartition("/")
        files.append(fileset.Held(int(fd), containment.JournalName(base, machine, rest)))
    return files


def main(argv: list[str] | None = None) -> int:
    args = _options(argv)
    _die_with_parent(args.parent)
    try:
        filtered = sandbox.confine()
    except sandbox.CapsetRefused:
        if args.again or os.geteuid() == 0:
            print("inner-journal-worker: cannot drop its capabilities", file=sys.stderr)
            return 3
        # the ambient set is clear now: exec'd again, a process not root holds nothing
        argv = sys.argv[1:] if argv is None else argv
        module = "bridge.sources.inner_journal.worker"
        os.execv(sys.executable, [sys.executable, "-I", "-m", module, *argv, "--again"])
    except OSError as exc:  # never parse a container's bytes unconfined
        print(f"inner-journal-worker: cannot confine itself: {exc}", file=sys.stderr)
        return 3
    out_fd = os.dup(1)
    os.dup2(2, 1)  # a stray print (ours or a library's) must not corrupt the frames
    if args.memory_limit:
        resource.setrlimit(resource.RLIMIT_DATA, (args.memory_limit, args.memory_limit))
    position = InnerPosition.from_json(json.loads(args.position)) if args.position else None
    files = held_files(args.files)
    out = Output(out_fd)
    worker = Worker(
        files,
        position,
        out,
        done_fd=0,
        floor_realtime_us=args.floor_realtime_us,
        poll_seconds=args.poll,
        heartbeat_seconds=args.heartbeat,
        max_message_bytes=args.max_message_bytes,
    )
    if not filtered:
        worker._log("warning", "sandbox", "no syscall filter on this architecture")
    try:
        worker.run()
    except BrokenPipeError:  # the bridge closed its end: nobody is listening any more
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
