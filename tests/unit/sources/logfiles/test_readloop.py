"""The read loop: tasks stepped on one thread, woken or timed, a wake-up never lost."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

from bridge.sources.logfiles.readloop import ReadLoop


class Task:
    """Steps `waits` in turn (None: done); records the thread of each step."""

    def __init__(self, *waits: float | None, fail: bool = False) -> None:
        self.waits = list(waits)
        self.steps = 0
        self.threads: set[str] = set()
        self.fail = fail
        self.done = threading.Event()

    def step(self) -> float | None:
        self.steps += 1
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("a reader's bug")
        wait = self.waits.pop(0) if self.waits else None
        if wait is None:
            self.done.set()
        return wait


def until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_tasks_run_on_the_loop_thread_until_done() -> None:
    loop = ReadLoop(gather_seconds=0.001, name="test-read")
    loop.start()
    try:
        tasks = [Task(0.0, 0.0, None) for _ in range(5)]
        for task in tasks:
            loop.add(task)
        assert all(task.done.wait(5) for task in tasks)
        assert all(task.steps == 3 and task.threads == {"test-read"} for task in tasks)
        loop.wake(tasks[0])  # a wake-up after the end: not stepped again
        time.sleep(0.05)
        assert tasks[0].steps == 3
    finally:
        loop.stop()


def test_a_waiting_task_runs_when_woken_or_when_its_wait_runs_out() -> None:
    loop = ReadLoop(gather_seconds=0.001)
    loop.start()
    try:
        woken, timed = Task(60.0, None), Task(0.05, None)
        loop.add(woken)
        loop.add(timed)
        assert until(lambda: woken.steps == 1)
        assert timed.done.wait(5)  # its 50 ms ran out
        assert woken.steps == 1  # still waiting: 60 s
        loop.wake(woken)
        assert woken.done.wait(5)
    finally:
        loop.stop()


def test_wake_ups_coalesce_and_none_is_lost() -> None:
    loop = ReadLoop(gather_seconds=0.02)
    loop.start()
    try:
        task = Task(*[60.0] * 100)
        loop.add(task)
        assert until(lambda: task.steps == 1)
        for _ in range(10):  # within one gathering window: one step for all
            loop.wake(task)
        assert until(lambda: task.steps == 2)
        time.sleep(0.1)
        assert task.steps == 2
        for n in range(3, 8):  # each wake-up after a step: a step each
            loop.wake(task)
            assert until(lambda n=n: task.steps == n)
    finally:
        loop.stop()


def test_a_failing_task_costs_itself_only() -> None:
    loop = ReadLoop(gather_seconds=0.001)
    loop.start()
    try:
        bad, good = Task(fail=True), Task(0.0, None)
        loop.add(bad)
        loop.add(good)
        assert good.done.wait(5)
        loop.wake(bad)
        time.sleep(0.05)
        assert bad.steps <= 2
    finally:
        loop.stop()


def test_a_write_into_a_watched_directory_wakes_once(tmp_path: Path) -> None:
    loop = ReadLoop(gather_seconds=0.001)
    log = tmp_path / "ctr.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    calls: list[str] = []
    try:
        assert not loop.watch(str(tmp_path), lambda: None)  # not started
        loop.start()
        assert loop.watch(str(tmp_path), lambda: calls.append(threading.current_thread().name))
        os.write(fd, b"a\n")
        assert until(lambda: len(calls) == 1)
        os.write(fd, b"b\n")  # one-shot: no watch any more
        time.sleep(0.1)
        assert calls == ["logfile-read"]
        assert loop.watch(str(tmp_path), lambda: calls.append("again"))
        os.write(fd, b"c\n")
        assert until(lambda: calls[-1:] == ["again"])
        assert not loop.watch(str(tmp_path / "gone"), lambda: None)
        assert not loop.watch(str(log), lambda: None)  # a file, not a directory
    finally:
        os.close(fd)
        loop.stop()


def inotify_fds() -> set[int]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed since
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify":
                found.add(int(fd))
    return found


def kernel_watches(fd: int) -> list[str]:
    """The watches of an inotify instance, as the kernel lists them (`wd:N ...`)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return [line.split()[1] for line in f if line.startswith("inotify wd:")]


def test_a_reader_that_waits_after_each_line_keeps_one_kernel_watch_and_a_write_nobody_waits_for_drops_it(
    tmp_path: Path,
) -> None:
    loop = ReadLoop(gather_seconds=0.001)
    before = inotify_fds()
    loop.start()
    (ours,) = inotify_fds() - before
    fd = os.open(tmp_path / "ctr.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    calls: list[int] = []
    try:
        for n in range(5):  # a line, a wake-up, the reader waits again: the same watch
            assert loop.watch(str(tmp_path), lambda n=n: calls.append(n))
            watches = kernel_watches(ours)
            assert len(watches) == 1
            if n == 0:
                first = watches
            assert watches == first
            os.write(fd, b"line\n")
            assert until(lambda n=n: calls[-1:] == [n])
        os.write(fd, b"nobody waits\n")  # behind, or gone: the watch goes
        assert until(lambda: kernel_watches(ours) == [])
        assert calls == [0, 1, 2, 3, 4]
        assert loop.watch(str(tmp_path), lambda: calls.append(5))
        os.write(fd, b"again\n")
        assert until(lambda: calls[-1:] == [5])
    finally:
        os.close(fd)
        loop.stop()


def test_a_watched_directory_that_goes_wakes_its_reader_and_can_be_watched_anew(
    tmp_path: Path,
) -> None:
    loop = ReadLoop(gather_seconds=0.001)
    directory = tmp_path / "ctr"
    directory.mkdir()
    calls: list[str] = []
    loop.start()
    try:
        assert loop.watch(str(directory), lambda: calls.append("gone"))
        directory.rmdir()
        assert until(lambda: calls == ["gone"])
        directory.mkdir()  # the same path, another directory: watched afresh
        assert loop.watch(str(directory), lambda: calls.append("new"))
        (directory / "ctr.log").write_bytes(b"x\n")
        assert until(lambda: calls[-1:] == ["new"])
    finally:
        loop.stop()


def test_a_reader_that_is_done_leaves_no_kernel_watch_behind(tmp_path: Path) -> None:
    """Its last wait's wake-up would fire at the next write (dockerd writes its config when
    the container stops), and nobody would wait on the directory after it."""
    loop = ReadLoop(gather_seconds=0.001)
    before = inotify_fds()
    loop.start()
    (ours,) = inotify_fds() - before
    other = tmp_path / "other"
    other.mkdir()
    try:

        def mine() -> None: ...

        def theirs() -> None: ...

        assert loop.watch(str(tmp_path), mine)
        assert loop.watch(str(other), mine)
        assert loop.watch(str(other), theirs)
        loop.forget(mine)
        assert len(kernel_watches(ours)) == 1  # `other`: still waited on
        loop.forget(theirs)
        assert kernel_watches(ours) == []
        loop.forget(theirs)  # twice: nothing
    finally:
        loop.stop()
