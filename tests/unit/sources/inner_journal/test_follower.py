"""The worker process and the follower, on real journal files in a fake container root.

Journal files come from systemd-journal-remote (`journals.py`); the "container" is a directory,
its first process (for the tests of the end) a `sleep`. Each test runs the follower in a thread
and watches the events it yields.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from systemd import _reader, journal

from bridge.sources.inner_journal import (
    InnerEnd,
    InnerEntry,
    InnerGap,
    InnerJournalFollower,
    InnerPosition,
    WorkerOptions,
)

from .journals import MACHINE_ID, entry, journal_dir, needs_journal_remote, write

pytestmark = needs_journal_remote

FAST = WorkerOptions(poll_seconds=0.1, heartbeat_seconds=0.1)
OTHER_MID = "fedcba9876543210fedcba9876543210"


class Run:
    """A follower iterated in a thread; its events arrive on a queue."""

    def __init__(self, follower: InnerJournalFollower) -> None:
        self.follower = follower
        self.events: queue.Queue[Any] = queue.Queue()
        self.seen: list[Any] = []
        self.thread = threading.Thread(target=self._iterate)
        self.thread.start()

    def _iterate(self) -> None:
        try:
            for event in self.follower:
                self.events.put(event)
        finally:
            self.events.put(StopIteration)

    def wait(self, predicate: Callable[[list[Any]], bool], timeout: float = 20) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not predicate(self.seen):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; seen {self.messages()}")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event is StopIteration:
                if predicate(self.seen):
                    break
                raise AssertionError(f"iteration ended; seen {self.messages()}")
            self.seen.append(event)
        return self.seen

    def wait_messages(self, count: int, timeout: float = 20) -> list[bytes]:
        self.wait(lambda seen: len(self.messages()) >= count, timeout)
        return self.messages()

    def messages(self) -> list[bytes]:
        return [e.message for e in self.seen if isinstance(e, InnerEntry)]

    def finish(self) -> None:
        self.follower.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()
        while True:
            event = self.events.get_nowait() if not self.events.empty() else StopIteration
            if event is StopIteration:
                break
            self.seen.append(event)
        self.follower.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def follow(root: Path) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def start(**kwargs: Any) -> Run:
        kwargs.setdefault("options", FAST)
        fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        run = Run(InnerJournalFollower(fd, name="test", **kwargs))
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.thread.is_alive() or not run.follower.closed:
            run.finish()


def lines(*numbers: int) -> list[bytes]:
    return [f"line {i}".encode() for i in numbers]


def test_entries_are_mapped_and_followed(root: Path, follow) -> None:
    system = journal_dir(root) / "system.journal"
    write(system, [entry(1, _PID="42", _SYSTEMD_UNIT="nginx.service", PRIORITY="3")])
    run = follow()
    run.wait_messages(1)
    first = run.seen[0]
    assert first.priority == 3
    fields = dict(first.fields)
    assert fields[b"INNER_SYSTEMD_UNIT"] == b"nginx.service"
    assert fields[b"INNER_PID"] == b"42"
    assert fields[b"INNER_REALTIME_TIMESTAMP"] == str(first.realtime_us).encode()
    assert first.position.machine_id == MACHINE_ID
    write(system, [entry(i) for i in (2, 3)])
    started = time.monotonic()
    assert run.wait_messages(3) == lines(1, 2, 3)
    assert time.monotonic() - started < 5  # polled every 0.1 s here, every 1 s by default
    run.finish()
    assert run.follower.position == run.seen[-1].position
    assert run.follower.stats.entries == 3


def test_sd_journal_reads_the_file_the_fd_refers_to(tmp_path: Path) -> None:
    """`/proc/self/fd/N` is the open file itself, not a name resolved again."""
    real = write(tmp_path / "a.journal", [entry(1, "the opened file")])
    fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
    try:
        real.rename(tmp_path / "moved.journal")
        write(real, [entry(1, "a file put in its place")])
        reader = _reader._Reader(0, files=[f"/proc/self/fd/{fd}"])
        try:
            assert reader._next(1) and reader._get_all()["MESSAGE"] == b"the opened file"
        finally:
            reader.close()
    finally:
        os.close(fd)


def test_rotation_and_a_new_machine_directory_repeat_nothing(root: Path, follow) -> None:
    directory = journal_dir(root)
    write(directory / "system.journal", [entry(i) for i in (1, 2)])
    run = follow()
    run.wait_messages(2)
    (directory / "system.journal").rename(directory / "system@0001-0002.journal")
    write(directory / "system.journal", [entry(i) for i in (3, 4)])
    run.wait_messages(4)
    write(journal_dir(root, "run/log/journal", OTHER_MID) / "system.journal", [entry(5)])
    assert run.wait_messages(5) == lines(1, 2, 3, 4, 5)
    time.sleep(0.5)  # a few more polls: nothing comes twice
    run.finish()
    assert run.messages() == lines(1, 2, 3, 4, 5)


def test_resume_after_a_saved_position(root: Path, follow) -> None:
    write(journal_dir(root) / "system.journal", [entry(i) for i in range(1, 6)])
    run = follow()
    run.wait_messages(5)
    run.finish()
    saved = run.seen[2].position
    again = follow(position=saved)
    assert again.wait_messages(2) == lines(4, 5)
    again.finish()
    assert not any(isinstance(e, InnerGap) for e in again.seen)


def test_a_journal_that_started_empty_is_a_reset_unless_drained(root: Path, follow) -> None:
    directory = journal_dir(root, "run/log/journal")
    write(directory / "system.journal", [entry(i) for i in (1, 2)])
    run = follow()
    run.wait_messages(2)
    run.finish()
    saved = run.follower.position
    assert saved is not None
    (directory / "system.journal").unlink()  # tmpfs: gone with the container
    write(directory / "system.journal", [entry(i) for i in (10, 11)])
    again = follow(position=saved)
    again.wait(lambda seen: len(seen) >= 3)
    again.finish()
    gap = again.seen[0]
    assert isinstance(gap, InnerGap) and gap.gap.kind == "reset" and gap.gap.lost is None
    assert again.messages() == lines(10, 11)
    assert again.follower.stats.gaps == 1
    drained = follow(position=InnerPosition(saved.cursor, saved.machine_id, drained=True))
    assert drained.wait_messages(2) == lines(10, 11)
    drained.finish()
    assert not any(isinstance(e, InnerGap) for e in drained.seen)


def test_hostile_symlinks_never_reach_host_files(tmp_path: Path, root: Path, follow) -> None:
    host = journal_dir(tmp_path / "host")  # a host journal the container aims at
    secret = write(host / "system.journal", [entry(1, "HOST SECRET")])
    (root / "var/log").mkdir(parents=True)
    (root / "var/log/journal").symlink_to(host.parent)  # /var/log/journal -> a host directory
    run_dir = root / "run/log/journal"
    (run_dir / OTHER_MID).mkdir(parents=True)
    (run_dir / OTHER_MID / "system.journal").symlink_to(secret)  # system.journal -> host file
    escape = os.path.relpath(host, run_dir)  # ../../../../host/var/log/journal/<mid>
    (run_dir / MACHINE_ID).symlink_to(escape)
    (run_dir / "00000000000000000000000000000000").symlink_to("/proc/self/root" + str(host))
    good = write(
        journal_dir(root, "run/log/journal", "11111111111111111111111111111111") / "x.journal",
        [entry(2, "inside")],
    )
    assert good.exists()

    # what a naive reader would do: sd-journal's own OS_ROOT mode follows the symlinks out
    naive = journal.Reader(path=str(root), flags=journal.OS_ROOT)
    try:
        assert b"HOST SECRET" in [e["MESSAGE"].encode() for e in naive]
    finally:
        naive.close()

    run = follow()
    run.wait_messages(1)
    time.sleep(0.5)
    run.finish()
    assert run.messages() == [b"inside"]
    assert run.follower.stats.problems == {"file": 1}  # the symlinked system.journal, refused


def test_corrupt_and_truncated_files_are_skipped_with_one_log_line_for_both(
    root: Path, follow, caplog: pytest.LogCaptureFixture
) -> None:
    directory = journal_dir(root)
    good = write(directory / "system.journal", [entry(i) for i in (1, 2)])
    (directory / "garbage.journal").write_bytes(b"root:x:0:0:root:/root:/bin/sh\n" * 100)
    data = good.read_bytes()
    (directory / "truncated.journal").write_bytes(data[:4096])
    with caplog.at_level(logging.WARNING, logger="bridge.sources.inner_journal.follower"):
        run = follow()
        run.wait_messages(2)
        write(good, [entry(3)])  # a rebuild is not needed for this; the next polls run anyway
        run.wait_messages(3)
        time.sleep(0.5)
        run.finish()
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1, skipped  # one line for the kind of problem, with its count
    assert "2 journal files that cannot be read" in skipped[0]
    assert "garbage.journal" in skipped[0] and "truncated.journal" in skipped[0]
    assert run.follower.stats.problems == {"bad": 2}
    assert run.messages() == lines(1, 2, 3)


def test_a_killed_worker_is_restarted_and_repeats_nothing(root: Path, follow) -> None:
    system = journal_dir(root) / "system.journal"
    write(system, [entry(i) for i in (1, 2, 3)])
    run = follow(backoff_seconds=(0.1, 1.0))
    run.wait_messages(3)
    pid = run.follower.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    write(system, [entry(i) for i in (4, 5)])
    assert run.wait_messages(5) == lines(1, 2, 3, 4, 5)
    run.finish()
    stats = run.follower.stats
    assert (stats.exits, stats.restarts, stats.starts) == (1, 1, 2)


def test_a_stalled_worker_is_killed_and_restarted(root: Path, follow) -> None:
    system = journal_dir(root) / "system.journal"
    write(system, [entry(1)])
    run = follow(stall_seconds=2.0, backoff_seconds=(0.1, 1.0))
    run.wait_messages(1)
    pid = run.follower.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # as a worker stuck inside sd-journal would be
    write(system, [entry(2)])
    assert run.wait_messages(2) == lines(1, 2)
    run.finish()
    assert run.follower.stats.stalls == 1
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


class GarbageFollower(InnerJournalFollower):
    def _command(self) -> list[str]:
        script = "import sys, time; sys.stdout.buffer.write(b'Znot a frame'); sys.stdout.flush(); time.sleep(60)"
        return [sys.executable, "-c", script]


def test_a_worker_sending_garbage_is_restarted_with_backoff(root: Path) -> None:
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    run = Run(GarbageFollower(fd, backoff_seconds=(0.2, 0.4)))
    deadline = time.monotonic() + 20
    while run.follower.stats.protocol_errors < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    run.finish()
    stats = run.follower.stats
    assert stats.protocol_errors >= 3 and stats.restarts >= 2 and stats.entries == 0


def test_the_end_comes_after_the_container_exits_and_its_journal_is_drained(
    root: Path, follow
) -> None:
    system = journal_dir(root, "run/log/journal") / "system.journal"
    write(system, [entry(1)])
    first_process = subprocess.Popen(["sleep", "60"])
    try:
        run = follow(pidfd=os.pidfd_open(first_process.pid), options=WorkerOptions(poll_seconds=30))
        run.wait_messages(1)
        write(system, [entry(2)])  # written just before the exit, read only after it
        first_process.kill()
        run.wait(lambda seen: bool(seen) and isinstance(seen[-1], InnerEnd), timeout=10)
    finally:
        first_process.kill()
        first_process.wait()
    run.thread.join(5)
    assert not run.thread.is_alive()  # the iteration ended by itself
    end = run.seen[-1]
    assert run.messages() == lines(1, 2)
    assert end.position == InnerPosition(run.seen[-2].position.cursor, MACHINE_ID, drained=True)
    assert run.follower.position == end.position
    run.follower.close()


def test_an_entry_over_the_memory_cap_is_skipped(root: Path, follow) -> None:
    huge = b"y" * (40 << 20)
    write(
        journal_dir(root) / "system.journal", [entry(1), entry(2, huge), entry(3)], compress=False
    )
    run = follow(options=WorkerOptions(poll_seconds=0.1, memory_limit_bytes=32 << 20))
    assert run.wait_messages(2) == lines(1, 3)
    run.finish()
    assert run.follower.stats.problems == {"entry": 1}
    assert run.follower.stats.exits == 0


def test_caps_apply_and_are_counted(root: Path, follow) -> None:
    many = {f"APP_{i:03}": "v" for i in range(100)}
    write(journal_dir(root) / "system.journal", [entry(1, "m" * 5000, **many)])
    run = follow(options=WorkerOptions(poll_seconds=0.1, max_message_bytes=1000))
    run.wait_messages(1)
    run.finish()
    first = run.seen[0]
    assert len(first.message) == 1000
    assert len(first.fields) == 65
    assert run.follower.stats.fields_dropped == {
        "count": 100 + 2 - 64,
        "truncated": 1,
    }  # + _BOOT_ID, _MACHINE_ID


def test_a_root_without_a_journal_only_polls(root: Path, follow) -> None:
    run = follow()
    time.sleep(0.5)
    pid = run.follower.worker_pid
    assert pid is not None and Path(f"/proc/{pid}").exists()
    write(journal_dir(root) / "system.journal", [entry(1)])  # journald starts a moment later
    assert run.wait_messages(1) == lines(1)
    run.finish()
    assert run.follower.stats.exits == 0


def test_for_pid_refuses_an_exited_process() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(ProcessLookupError):
        InnerJournalFollower.for_pid(child.pid)
    assert shutil.which("true")


def test_an_idle_worker_heartbeats_within_a_long_poll(root: Path, follow) -> None:
    write(journal_dir(root) / "system.journal", [entry(1)])
    run = follow(options=WorkerOptions(poll_seconds=8, heartbeat_seconds=0.2), stall_seconds=2.0)
    run.wait_messages(1)
    time.sleep(4)
    run.finish()
    assert run.follower.stats.stalls == 0 and run.follower.stats.starts == 1


def test_the_stall_timeout_must_outlast_the_heartbeat(root: Path) -> None:
    with pytest.raises(ValueError):
        InnerJournalFollower(-1, options=WorkerOptions(heartbeat_seconds=5), stall_seconds=5)


def test_too_many_files_keeps_the_newest_and_leaks_no_fd(root: Path, follow) -> None:
    directory = journal_dir(root)
    for i in range(1, 6):
        write(directory / f"system@{i}.journal", [entry(i)])
        os.utime(directory / f"system@{i}.journal", ns=(i * 10**9, i * 10**9))
    run = follow(options=WorkerOptions(poll_seconds=0.1, max_files=2))
    assert run.wait_messages(2) == lines(4, 5)
    time.sleep(0.5)  # more polls: nothing is opened again, nothing leaks
    pid = run.follower.worker_pid
    journals = [
        link
        for fd in os.listdir(f"/proc/{pid}/fd")
        if (link := os.readlink(f"/proc/{pid}/fd/{fd}")).endswith(".journal")
    ]
    run.finish()
    assert len(journals) == 4, journals  # two the bridge passed, their duplicates in sd-journal
    assert run.follower.stats.problems == {"max_files": 3}  # the three oldest left out


def test_a_bad_file_is_tried_again_once_it_changes(root: Path, follow, tmp_path: Path) -> None:
    directory = journal_dir(root)
    (directory / "system.journal").write_bytes(b"\0" * 4096)  # as journald is creating it
    run = follow()
    time.sleep(0.5)
    valid = write(tmp_path / "valid.journal", [entry(1)]).read_bytes()
    with open(directory / "system.journal", "r+b") as same_inode:
        same_inode.write(valid)
    assert run.wait_messages(1) == lines(1)
    run.finish()
    assert run.follower.stats.problems == {"bad": 1}


def test_no_worker_outlives_a_bridge_killed_with_sigkill(root: Path) -> None:
    write(journal_dir(root) / "system.journal", [entry(1)])
    script = f"""
import os, sys
from bridge.sources.inner_journal import InnerJournalFollower
fd = os.open({str(root)!r}, os.O_PATH | os.O_DIRECTORY)
follower = InnerJournalFollower(fd)
for event in follower:
    print(follower.worker_pid, flush=True)
"""
    bridge = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert bridge.stdout is not None
        worker = int(bridge.stdout.readline())
        os.kill(bridge.pid, signal.SIGKILL)
        bridge.wait()
        deadline = time.monotonic() + 5
        while running(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(worker)
    finally:
        bridge.kill()
        bridge.wait()
        if bridge.stdout is not None:
            bridge.stdout.close()


def running(pid: int) -> bool:
    """Whether `pid` runs: gone, or a zombie waiting to be reaped, does not."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_more_ready_is_false_after_the_last_entry_read(root: Path, follow) -> None:
    """A consumer that batches hands its batch on when `more_ready` is False: after the last
    entry of what the worker sent, never in the middle of it."""
    write(journal_dir(root) / "system.journal", [entry(i) for i in range(1, 51)])
    flags: list[bool] = []
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    with InnerJournalFollower(fd, name="test", options=FAST) as follower:
        for _event in follower:
            flags.append(follower.more_ready)
            if len(flags) == 50:
                break
    assert flags[-1] is False
    assert flags.count(False) < 50  # entries read together were batched


def test_the_directory_polls_share_the_wake_ups_of_the_worker_s_frames(
    root: Path, follow, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll due within half an interval is done when frames wake the follower anyway: the
    follower wakes once per interval (for the heartbeat), not once more for the poll."""
    from bridge.sources.inner_journal import follower as follower_module

    timeouts: list[float] = []
    real = follower_module.readable

    def counting(fds: list[int], timeout: float | None = None) -> list[int]:
        ready = real(fds, timeout)
        if not ready and timeout:
            timeouts.append(time.monotonic())
        return ready

    monkeypatch.setattr(follower_module, "readable", counting)
    write(journal_dir(root) / "system.journal", [entry(1)])
    run = follow(options=WorkerOptions(poll_seconds=0.4, heartbeat_seconds=0.4))
    run.wait_messages(1)
    start = time.monotonic()
    time.sleep(4)
    run.finish()
    woken_by_the_poll = [t for t in timeouts if start <= t <= start + 4]
    assert len(woken_by_the_poll) <= 2, woken_by_the_poll  # ten without sharing
    assert run.follower.stats.stalls == 0
