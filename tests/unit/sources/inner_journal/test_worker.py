"""The worker's loop in this process: what it logs and how often it heartbeats under a flood."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.sources.inner_journal import InnerJournalFollower, protocol
from bridge.sources.inner_journal.containment import JournalName
from bridge.sources.inner_journal.fileset import Held
from bridge.sources.inner_journal.worker import Worker

from .journals import entry, needs_journal_remote, write

MID = "0123456789abcdef0123456789abcdef"


class Capture:
    """The worker's output: frames by kind, and when each flush happened."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, bytes]] = []
        self.flushes: list[float] = []
        self.last_sent = time.monotonic()
        self._pending = False
        self._reader = protocol.FrameReader(1 << 20)

    def add(self, data: bytes) -> None:
        self.frames.extend(self._reader.feed(data))
        self._pending = True

    def flush(self) -> None:  # as Output's: nothing added, nothing sent
        if self._pending:
            self._pending = False
            self.last_sent = time.monotonic()
            self.flushes.append(self.last_sent)

    def logs(self) -> list[dict[str, object]]:
        return [protocol.decode_json(p) for k, p in self.frames if k == protocol.LOG]


def test_thousands_of_hostile_names_make_one_line_per_kind_not_one_per_name_per_poll(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """r26: past 1,024 names every name was logged again on every poll."""
    directory = tmp_path / "var/log/journal" / MID
    directory.mkdir(parents=True)
    for i in range(3000):
        (directory / f"h{i:05d}.journal").symlink_to("/etc/shadow")
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    follower = InnerJournalFollower(fd, name="hostile")
    per_poll = []
    try:
        for poll in range(3):
            if poll:  # the container changes a name on every poll
                os.rename(directory / f"h{poll:05d}.journal", directory / f"r{poll}.journal")
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                follower._scan()
            per_poll.append([r.getMessage() for r in caplog.records])
    finally:
        follower.close()
    assert len(per_poll[0]) == 2, per_poll[0]  # refused names; more names than are opened
    assert "256 journal file names refused" in " ".join(per_poll[0])
    assert per_poll[1:] == [[], []]
    assert follower.stats.problems == {"file": 256, "names": 2}


def test_hundreds_of_files_sd_journal_refuses_are_one_line_and_heartbeats_flow(
    tmp_path: Path,
) -> None:
    files = []
    for i in range(300):
        path = tmp_path / f"bad{i}.journal"
        path.write_bytes(b"LPKSHHRH" + bytes(300))
        name = JournalName("var/log/journal", MID, path.name)
        files.append(Held(os.open(path, os.O_RDONLY | os.O_CLOEXEC), name))
    out = Capture()
    worker = Worker(files, None, out, heartbeat_seconds=0.0)  # type: ignore[arg-type]
    try:
        worker._refresh()
        worker._report()
        worker._refresh()
        worker._report()
    finally:
        for held in files:
            os.close(held.fd)
    [log] = out.logs()
    assert log["kind"] == "bad" and log["count"] == 300
    assert str(log["msg"]).startswith("300 journal files that cannot be read")
    assert sum(k == protocol.HEARTBEAT for k, _ in out.frames) >= 300  # one per file tried


def test_the_worker_process_imports_none_of_the_bridge_s_services() -> None:
    """Its memory is per container: prometheus_client alone would add 5 MiB to each."""
    code = (
        "import sys, bridge.sources.inner_journal.worker; "
        "print(sorted(m for m in ('prometheus_client', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, check=True)
    assert out.stdout.strip() == b"[]"


@needs_journal_remote
def test_an_entry_s_machine_id_is_its_own_and_a_forged_one_is_left_out(tmp_path: Path) -> None:
    """The worker remembers the last machine id it checked: a change must still be seen."""
    other = "fedcba9876543210fedcba9876543210"
    path = write(
        tmp_path / "system.journal",
        [
            entry(1),
            entry(2, _MACHINE_ID="../../etc"),
            entry(3, _MACHINE_ID=other),
            entry(4, _MACHINE_ID=other),
            entry(5),
        ],
    )
    held = Held(os.open(path, os.O_RDONLY | os.O_CLOEXEC), JournalName("var/log/journal", MID, "x"))
    out = Capture()
    worker = Worker([held], None, out)  # type: ignore[arg-type]
    try:
        worker._refresh()
        worker._pump()
    finally:
        worker._close_reader()
        os.close(held.fd)
    entries = [protocol.decode_entry(p) for k, p in out.frames if k == protocol.ENTRY]
    assert [e.message for e in entries] == [b"line 1", b"line 2", b"line 3", b"line 4", b"line 5"]
    machines = [e.position.machine_id for e in entries]
    assert machines == ["6504787f5ea3415483cafb9ed0d18600", "", other, other, machines[0]]


@needs_journal_remote
def test_a_heartbeat_goes_out_only_when_no_frame_did_for_half_the_interval(
    tmp_path: Path,
) -> None:
    """Entries just sent count as a sign of life: one write per poll, not entries + heartbeat."""
    path = write(tmp_path / "system.journal", [entry(1), entry(2)])
    held = Held(os.open(path, os.O_RDONLY | os.O_CLOEXEC), JournalName("var/log/journal", MID, "x"))
    out = Capture()
    worker = Worker([held], None, out, poll_seconds=0.2, heartbeat_seconds=0.2)  # type: ignore[arg-type]
    try:
        worker._refresh()
        worker._pump()  # entries: a frame just went out
        worker._idle()
        assert [k for k, _ in out.frames] == [protocol.ENTRY, protocol.ENTRY]
        worker._pump()  # nothing new: the next poll interval needs its heartbeat
        worker._idle()
    finally:
        worker._close_reader()
        os.close(held.fd)
    assert [k for k, _ in out.frames][2:] == [protocol.HEARTBEAT]


@needs_journal_remote
def test_frames_are_never_further_apart_than_the_heartbeat_interval(tmp_path: Path) -> None:
    path = write(tmp_path / "system.journal", [entry(1)])
    held = Held(os.open(path, os.O_RDONLY | os.O_CLOEXEC), JournalName("var/log/journal", MID, "x"))
    out = Capture()
    worker = Worker([held], None, out, poll_seconds=1.0, heartbeat_seconds=0.3)  # type: ignore[arg-type]
    try:
        worker._refresh()
        worker._pump()
        worker._idle()
    finally:
        worker._close_reader()
        os.close(held.fd)
    gaps = [b - a for a, b in zip(out.flushes, out.flushes[1:], strict=False)]
    assert len(out.flushes) >= 4 and max(gaps) < 0.3 + 0.1, gaps  # the entry, 3 heartbeats
