"""The inner-journal follower on a real systemd container.

A container of the project's debootstrap image runs systemd as PID 1 with its own journald;
the follower reads that journal from the host through `/proc/<pid>/root`, as the bridge will.
No bridge and no host journal are involved: these tests check what the follower yields.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from systemd import journal

from bridge.sources.inner_journal import (
    InnerEnd,
    InnerEntry,
    InnerGap,
    InnerJournalFollower,
    InnerPosition,
    WorkerOptions,
)
from tests.integration.conftest import TEST_LABEL, wait_until
from tests.unit.sources.inner_journal.journals import entry, needs_journal_remote, write

pytestmark = [pytest.mark.integration]

SYSTEMD_IMAGE = "bridge-test/systemd:latest"
FAST = WorkerOptions(poll_seconds=0.2)


def docker(*args: str, check: bool = True, timeout: float = 120, host: str = "") -> str:
    """The docker CLI, on the host's dockerd or on the engine at `host`."""
    command = ["docker", *(["-H", host] if host else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} -> {result.returncode}: {result.stderr}")
    return result.stdout


class Box:
    """A systemd container: `docker run ... /lib/systemd/systemd`, as machine.md has it."""

    def __init__(self, label: str, extra: list[str] | None = None, host: str = "") -> None:
        self.name = f"jb-inner-{uuid.uuid4().hex[:8]}"
        self.host = host  # the engine's, when not the host's dockerd
        self.docker(
            "run", "-d", "--name", self.name, "--label", f"{TEST_LABEL}={label}", *(extra or []),
            "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
            "--security-opt", "apparmor=unconfined", "--network", "none",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--cgroupns=host",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--stop-signal", "SIGRTMIN+3",  # systemd's "halt"; SIGTERM would make it re-execute
            SYSTEMD_IMAGE, "/lib/systemd/systemd",
        )  # fmt: skip
        self.wait_running()

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        return docker(*args, check=check, timeout=timeout, host=self.host)

    def wait_running(self) -> None:
        wait_until(
            lambda: (
                self.sh("systemctl is-system-running", check=False).strip()
                in ("running", "degraded")
            ),
            60,
            "systemd to boot in the container",
            interval=0.25,
        )

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> str:
        return self.docker("exec", self.name, "sh", "-c", script, check=check, timeout=timeout)

    def logger(self, tag: str, message: str, *, priority: str = "", unit: str = "") -> None:
        """One `logger` line whose process outlives its sending by a moment.

        journald takes a datagram sender's unit and command from /proc when it handles the
        datagram: from a logger that has exited by then (a loaded host) the entry has no
        _SYSTEMD_UNIT or _COMM. Fed by a pipe, logger sends each line as it reads it and lives
        until the pipe closes.
        """
        script = f"(echo {shlex.quote(message)}; sleep 2) | logger -t {tag}"
        if priority:
            script += f" -p {priority}"
        if unit:
            script = f"systemd-run --wait -q -u {unit} sh -c {shlex.quote(script)}"
        self.sh(script)

    @property
    def pid(self) -> int:
        return int(self.docker("inspect", "-f", "{{.State.Pid}}", self.name))

    @property
    def machine_id(self) -> str:
        return self.sh("cat /etc/machine-id").strip()

    def count(self, tag: str) -> int:
        return int(self.sh(f"journalctl -q -t {tag} -o cat | wc -l"))

    def remove(self) -> None:
        self.docker("rm", "-f", self.name, check=False)


@pytest.fixture
def box(label: str) -> Iterator[Box]:
    instance = Box(label)
    try:
        yield instance
    finally:
        instance.remove()


class Follow:
    """A follower of the box's inner journal, iterated in a thread."""

    def __init__(self, pid: int, **kwargs: Any) -> None:
        kwargs.setdefault("options", FAST)
        self.follower = InnerJournalFollower.for_pid(pid, name="test", **kwargs)
        self.events: queue.Queue[Any] = queue.Queue()
        self.seen: list[Any] = []
        self.by_tag: dict[bytes, list[InnerEntry]] = {}  # kept as events arrive: no rescans
        self.cpu_seconds = 0.0  # of the iterating thread: the bridge's share of the work
        self.thread = threading.Thread(target=self._iterate)
        self.thread.start()

    def _iterate(self) -> None:
        start = time.thread_time()
        try:
            for event in self.follower:
                self.events.put(event)
        finally:
            self.cpu_seconds = time.thread_time() - start
            self.events.put(StopIteration)

    def wait(self, predicate: Callable[[list[Any]], bool], timeout: float = 60) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not predicate(self.seen):
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                event = None
            if event is StopIteration:
                break
            if event is not None:
                self._add(event)
            elif time.monotonic() > deadline:
                break
        if not predicate(self.seen):
            raise AssertionError(f"timed out; {len(self.seen)} events seen")
        return self.seen

    def _add(self, event: Any) -> None:
        self.seen.append(event)
        if isinstance(event, InnerEntry):
            tag = dict(event.fields).get(b"SYSLOG_IDENTIFIER", b"")
            self.by_tag.setdefault(tag, []).append(event)

    def entries(self, tag: str | None = None) -> list[InnerEntry]:
        if tag is not None:
            return self.by_tag.get(tag.encode(), [])
        return [e for e in self.seen if isinstance(e, InnerEntry)]

    def wait_tag(self, tag: str, count: int, timeout: float = 60) -> list[InnerEntry]:
        self.wait(lambda _: len(self.entries(tag)) >= count, timeout)
        return self.entries(tag)

    def worker_cpu(self) -> float:
        pid = self.follower.worker_pid
        assert pid is not None
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def finish(self) -> None:
        self.follower.stop()
        self.thread.join(15)
        assert not self.thread.is_alive()
        while not self.events.empty():
            event = self.events.get_nowait()
            if event is not StopIteration:
                self._add(event)
        self.follower.close()


def test_a_logger_line_arrives_with_its_fields(box: Box) -> None:
    box.logger("innerapp", "hello")
    box.logger("unitapp", "from-a-unit", unit="innerdemo")
    run = Follow(box.pid)
    try:
        (hello,) = run.wait_tag("innerapp", 1)
        (from_unit,) = run.wait_tag("unitapp", 1)
    finally:
        run.finish()
    # "the unit inside the container": journalctl CONTAINER_NAME=x INNER_SYSTEMD_UNIT=...
    assert dict(from_unit.fields)[b"INNER_SYSTEMD_UNIT"] == b"innerdemo.service"
    fields = dict(hello.fields)
    assert hello.message == b"hello"
    assert hello.priority == 5  # logger's default, user.notice
    assert fields[b"SYSLOG_IDENTIFIER"] == b"innerapp"
    assert fields[b"SYSLOG_FACILITY"] == b"1"
    assert fields[b"INNER_COMM"] == b"logger"
    assert fields[b"INNER_TRANSPORT"] == b"syslog"
    assert int(fields[b"INNER_PID"]) > 1
    assert fields[b"INNER_MACHINE_ID"] == box.machine_id.encode()
    assert fields[b"INNER_HOSTNAME"] == box.sh("hostname").strip().encode()
    assert fields[b"INNER_REALTIME_TIMESTAMP"] == str(hello.realtime_us).encode()
    assert b"SYSLOG_TIMESTAMP" not in fields and b"INNER_SYSLOG_TIMESTAMP" in fields
    assert hello.position.machine_id == box.machine_id
    # the container's boot id is the host's: one kernel (so monotonic times compare across both)
    assert hello.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace(
        "-", ""
    )
    assert run.follower.stats.exits == run.follower.stats.stalls == 0


@pytest.mark.slow
def test_catch_up_on_20000_entries_and_follow_5000(box: Box, record_property) -> None:
    total, live = 20000, 5000
    box.sh("logger -t mark start")
    first = Follow(box.pid)
    first.wait_tag("mark", 1)
    first.finish()
    start = first.follower.position
    box.sh(f"seq {total} | systemd-cat -t load")
    wait_until(lambda: box.count("load") >= total, 120, "journald to write the lines", 0.5)

    began = time.monotonic()
    run = Follow(box.pid, position=start)
    try:
        loaded = run.wait_tag("load", total, timeout=300)
        catch_up = time.monotonic() - began
        worker_cpu = run.worker_cpu()
        box.sh(f"seq {live} | systemd-cat -t live")
        written = time.monotonic()
        followed = run.wait_tag("live", live, timeout=120)
        lag = time.monotonic() - written
    finally:
        run.finish()
    assert [int(e.message) for e in loaded] == list(range(1, total + 1))
    assert [int(e.message) for e in followed] == list(range(1, live + 1))
    cursors = [e.position.cursor for e in run.entries()]
    assert len(cursors) == len(set(cursors))
    figures = {
        "catch_up_seconds": round(catch_up, 2),
        "catch_up_entries_per_second": round(total / catch_up),
        "worker_cpu_us_per_entry": round(worker_cpu / total * 1e6, 1),
        "bridge_thread_cpu_us_per_entry": round(run.cpu_seconds / (total + live) * 1e6, 1),
        "live_5000_done_after_seconds": round(lag, 2),
    }
    record_property("inner_journal_bench", json.dumps(figures))
    print(f"\ninner journal: {figures}")


def test_stop_and_start_repeat_nothing(box: Box) -> None:
    box.sh("logger -t before one; logger -t before two")
    run = Follow(box.pid)
    run.wait_tag("before", 2)
    docker("stop", "-t", "30", box.name)
    run.wait(lambda seen: isinstance(seen[-1], InnerEnd), timeout=60)
    run.thread.join(10)
    end = run.seen[-1]
    assert end.position is not None and end.position.drained
    first_cursors = {e.position.cursor for e in run.entries()}
    run.follower.close()
    # the shutdown was read to its very end, after the container's exit
    assert run.entries()[-1].message == b"Journal stopped"

    docker("start", box.name)
    box.wait_running()
    box.sh("logger -t after three")
    again = Follow(box.pid, position=end.position)
    try:
        again.wait_tag("after", 1)
    finally:
        again.finish()
    second = again.entries()
    assert not first_cursors & {e.position.cursor for e in second}
    assert not again.entries("before")
    assert not any(isinstance(e, InnerGap) for e in again.seen)
    # the same journal file went on: its seqnum id is the saved one
    assert second[0].position.parts.seqnum_id == end.position.parts.seqnum_id


def test_run_flushed_to_var_repeats_nothing(box: Box) -> None:
    """journald writes to /run until it may use /var, then copies /run there and deletes it.

    The copies have a new seqnum id (the /var file's) and keep boot, times and hash: the
    follower, whose cursor was in the /run file, must send none of them again.
    """
    box.sh("journalctl --relinquish-var && logger -t early one && logger -t early two")
    wait_until(lambda: box.count("early") >= 2, 30, "journald to write to /run", 0.1)
    run = Follow(box.pid)
    try:
        early = run.wait_tag("early", 2)
        box.sh("journalctl --flush && logger -t late three")
        (late,) = run.wait_tag("late", 1)
        time.sleep(1)  # a few more polls
    finally:
        run.finish()
    # the early entries were read from the /run file, the late one from /var
    assert early[-1].position.parts.seqnum_id != late.position.parts.seqnum_id
    assert [e.message for e in run.entries("early")] == [b"one", b"two"]
    sent = [(e.message, e.realtime_us, e.monotonic_us) for e in run.entries()]
    assert len(sent) == len(set(sent))
    assert not any(isinstance(e, InnerGap) for e in run.seen)
    assert box.sh("ls /run/log/journal/*/ 2>/dev/null | wc -l").strip() == "0"  # /run was emptied


def test_an_inner_journald_restart_repeats_nothing(box: Box) -> None:
    run = Follow(box.pid)
    try:
        box.sh("seq 1 500 | systemd-cat -t restart")
        run.wait_tag("restart", 500)
        box.sh(
            "systemctl kill -s SIGKILL systemd-journald; sleep 0.5; seq 501 1000 | systemd-cat -t restart"
        )
        box.sh("systemctl restart systemd-journald; seq 1001 1500 | systemd-cat -t restart")
        got = run.wait_tag("restart", 1500)
        time.sleep(1)
    finally:
        run.finish()
    assert [int(e.message) for e in run.entries("restart")] == list(range(1, 1501))
    assert got and not any(isinstance(e, InnerGap) for e in run.seen)


def test_vacuumed_entries_are_a_counted_gap(box: Box) -> None:
    box.sh("logger -t mark saved")
    run = Follow(box.pid)
    run.wait_tag("mark", 1)
    run.finish()
    saved = run.follower.position
    assert saved is not None
    # the follower is away: entries are written, rotated and vacuumed before it comes back
    box.sh("seq 300 | systemd-cat -t lost")
    wait_until(lambda: box.count("lost") >= 300, 60, "journald to write the lines", 0.25)
    # two rotations, so that the file with the saved entry is not the newest archived one
    box.sh("journalctl --rotate; logger -t filler x; journalctl --rotate")
    box.sh("journalctl --vacuum-files=1")
    box.sh("logger -t kept after-vacuum")
    again = Follow(box.pid, position=saved)
    try:
        again.wait_tag("kept", 1)
    finally:
        again.finish()
    gaps = [e for e in again.seen if isinstance(e, InnerGap)]
    assert len(gaps) == 1 and gaps[0].gap.kind == "vacuumed"
    first = again.entries()[0].position.parts
    assert gaps[0].gap.lost == first.seqnum - saved.parts.seqnum - 1 >= 300
    assert not again.entries("lost") and not again.entries("mark")
    assert again.follower.stats.lost == gaps[0].gap.lost


@needs_journal_remote
def test_a_symlink_attack_inside_the_container_is_refused(box: Box, tmp_path: Path) -> None:
    marker = f"HOST-ONLY-{uuid.uuid4().hex}"
    host_dir = tmp_path / "hostjournal" / ("e" * 32)
    secret = write(host_dir / "system.journal", [entry(1, marker)])
    machine = box.machine_id
    box.sh(
        f"mkdir -p /run/log/journal && ln -s {host_dir} /run/log/journal/{'e' * 32} && "
        f"ln -s {secret} /var/log/journal/{machine}/evil.journal && "
        f"ln -s {host_dir.parent} /run/log/journal/{'d' * 32} && logger -t innerapp still-here"
    )
    # the attack is real: sd-journal's own OS_ROOT mode follows the links out to the host
    naive = journal.Reader(path=f"/proc/{box.pid}/root", flags=journal.OS_ROOT)
    try:
        assert marker in [e.get("MESSAGE") for e in naive]
    finally:
        naive.close()
    run = Follow(box.pid)
    try:
        run.wait_tag("innerapp", 1)
        time.sleep(1)
    finally:
        run.finish()
    assert all(marker.encode() not in e.message for e in run.entries())
    assert run.follower.stats.problems.get("file") == 1  # evil.journal, a symlink: refused


def test_a_killed_container_is_read_to_the_end(box: Box) -> None:
    run = Follow(box.pid, options=WorkerOptions(poll_seconds=30))  # the exit, not a poll, wakes it
    try:
        run.wait(lambda seen: bool(seen))  # the boot's entries: the worker is at the end
        box.sh("logger -t innerapp last-words")
        wait_until(lambda: box.count("innerapp") >= 1, 30, "journald to write the line", 0.1)
        docker("kill", box.name)
        run.wait(lambda seen: bool(seen) and isinstance(seen[-1], InnerEnd), timeout=60)
    finally:
        run.finish()
    assert run.entries("innerapp")[-1].message == b"last-words"
    end = run.seen[-1]
    assert end.position == InnerPosition(
        run.entries()[-1].position.cursor, run.entries()[-1].position.machine_id, drained=True
    )
