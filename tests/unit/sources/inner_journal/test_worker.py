"""The worker's loop in this process: what it logs and how often it heartbeats under a flood."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bridge.sources.inner_journal import protocol
from bridge.sources.inner_journal.worker import Worker

MID = "0123456789abcdef0123456789abcdef"


class Capture:
    """The worker's output: frames by kind, and when each flush happened."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, bytes]] = []
        self.flushes: list[float] = []
        self.last_sent = time.monotonic()
        self._reader = protocol.FrameReader(1 << 20)

    def add(self, data: bytes) -> None:
        self.frames.extend(self._reader.feed(data))

    def flush(self) -> None:
        self.last_sent = time.monotonic()
        self.flushes.append(self.last_sent)

    def logs(self) -> list[dict[str, object]]:
        return [protocol.decode_json(p) for k, p in self.frames if k == protocol.LOG]


def test_thousands_of_hostile_names_make_one_line_per_kind_not_one_per_name_per_poll(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "var/log/journal" / MID
    directory.mkdir(parents=True)
    for i in range(3000):
        (directory / f"h{i:05d}.journal").symlink_to("/etc/shadow")
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        out = Capture()
        worker = Worker(fd, None, None, out)  # type: ignore[arg-type]
        per_poll = []
        for poll in range(3):
            if poll:  # the container changes a name on every poll
                os.rename(directory / f"h{poll:05d}.journal", directory / f"r{poll}.journal")
            out.frames.clear()
            worker._scan(final=False)
            worker._report()
            per_poll.append(out.logs())
    finally:
        os.close(fd)
    first = {str(log["kind"]): log for log in per_poll[0]}
    assert sorted(first) == ["file", "names"]
    assert first["file"]["count"] == 256 and "256 journal file names refused" in str(
        first["file"]["msg"]
    )
    assert per_poll[1:] == [[], []]


def test_heartbeats_keep_flowing_through_a_scan_of_many_machine_directories(
    tmp_path: Path,
) -> None:
    for m in range(400):
        directory = tmp_path / "var/log/journal" / f"{m:032x}"
        directory.mkdir(parents=True)
        for i in range(25):
            (directory / f"h{i}.journal").symlink_to("/etc/shadow")
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        out = Capture()
        worker = Worker(fd, None, None, out, heartbeat_seconds=0.0)  # type: ignore[arg-type]
        started = time.monotonic()
        worker._scan(final=False)
        took = time.monotonic() - started
    finally:
        os.close(fd)
    beats = [k for k, _ in out.frames if k == protocol.HEARTBEAT]
    assert len(beats) >= 8192 // 256 - 1  # one at least every 256 names when they are due
    assert took < 5.0


def test_the_worker_process_imports_none_of_the_bridge_s_services() -> None:
    """Its memory is per container: prometheus_client alone would add 5 MiB to each."""
    code = (
        "import sys, bridge.sources.inner_journal.worker; "
        "print(sorted(m for m in ('prometheus_client', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, check=True)
    assert out.stdout.strip() == b"[]"
