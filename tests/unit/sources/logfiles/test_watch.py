"""LogFileWatcher on real inotify: directories and files made the way dockerd makes them."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.sources.logfiles.watch import LogFileWatcher, OpenedLog

CONFIG = b'{"ID":"x","Name":"/web","Config":{"Labels":{"a":"b"}}}'
HOSTCONFIG = b'{"LogConfig":{"Type":"json-file","Config":{}}}'


class Recorder:
    """The integrator's side: records every call; owns (and finally closes) every fd."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.opened: list[OpenedLog] = []
        self.calls: list[tuple[str, ...]] = []
        self.created: list[str] = []
        self.hold: threading.Event | None = None  # while set up, on_open parks the watcher here
        self.held = threading.Event()
        self.raise_on_open = False

    def _note(self, *call: str) -> None:
        with self.cond:
            self.calls.append(call)
            self.cond.notify_all()

    def on_open(self, log: OpenedLog) -> None:
        with self.cond:
            self.opened.append(log)
            self.cond.notify_all()
        if self.hold is not None:
            hold, self.hold = self.hold, None
            self.held.set()
            assert hold.wait(30)
        if self.raise_on_open:
            raise RuntimeError("integrator bug")

    def on_created(self, container_id: str) -> None:
        with self.cond:
            self.created.append(container_id)  # a race's outcome: not among `calls`
            self.cond.notify_all()

    def on_open_error(self, container_id: str, path: str, reason: str) -> None:
        self._note("open_error", container_id, reason)

    def on_missed(self, container_id: str) -> None:
        self._note("missed", container_id)

    def on_removed(self, container_id: str) -> None:
        self._note("removed", container_id)

    def on_overflow(self) -> None:
        self._note("overflow")

    def on_watch_error(self, errno_name: str) -> None:
        self._note("watch_error", errno_name)

    def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), (self.opened, self.calls)

    def of(self, cid: str) -> list[OpenedLog]:
        with self.cond:
            return [o for o in self.opened if o.container_id == cid]

    def count(self, *call: str) -> int:
        with self.cond:
            return self.calls.count(call)

    def close(self) -> None:
        for o in self.opened:
            os.close(o.fd)


@contextlib.contextmanager
def watching(root: Path, rec: Recorder, **kwargs: Any) -> Iterator[LogFileWatcher]:
    w = LogFileWatcher(root, rec, **kwargs)
    w.start()
    try:
        yield w
    finally:
        w.stop()


def create(root: Path, config: bytes | None = CONFIG, cid: str | None = None) -> tuple[str, Path]:
    """`docker create`: the directory, then its config files written the way dockerd does."""
    cid = cid or secrets.token_hex(32)
    d = root / "containers" / cid
    d.mkdir()
    for name, data in (("config.v2.json", config), ("hostconfig.json", HOSTCONFIG)):
        if data is not None:
            (d / f".tmp-{name}").write_bytes(data)
            os.rename(d / f".tmp-{name}", d / name)  # ioutils.AtomicWriteFile
    return cid, d


def write_log(path: Path, data: bytes, trunc: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if trunc else os.O_APPEND)
    fd = os.open(path, flags, 0o640)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def json_log(d: Path) -> Path:
    return d / f"{d.name}-json.log"


def read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def wait_watched(w: LogFileWatcher, cid: str) -> None:
    """follow() is True once the directory is watched (it arms a wake-up no one waits for)."""
    deadline = time.monotonic() + 5
    while not w.follow(cid, lambda: None):
        assert time.monotonic() < deadline, "directory never watched"
        time.sleep(0.005)


def test_existing_files_are_handed_over_before_start_returns(
    root: Path, rec: Recorder, tmp_path: Path
) -> None:
    json_cid, json_dir = create(root)
    write_log(json_log(json_dir), b'{"log":"1\\n","stream":"stdout","time":"t"}\n')
    local_cid, local_dir = create(root, config=None)
    (local_dir / "local-logs").mkdir()
    write_log(local_dir / "local-logs" / "container.log", b"\x00\x00\x00\x03\xffx\n")
    create(root)  # created, never started: no log file yet
    # Names no container has: upper-case hex, 63 digits, a symlink and a file named like ids.
    for bad in ("A" * 64, "a" * 63, "b" * 65):
        bad_dir = root / "containers" / bad
        bad_dir.mkdir()
        write_log(bad_dir / f"{bad}-json.log", b"x\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link_id = secrets.token_hex(32)
    write_log(elsewhere / f"{link_id}-json.log", b"x\n")
    (root / "containers" / link_id).symlink_to(elsewhere)
    (root / "containers" / secrets.token_hex(32)).write_bytes(b"not a directory")

    with watching(root, rec):
        assert sorted((o.container_id, o.kind) for o in rec.opened) == sorted(
            [(json_cid, "json-file"), (local_cid, "local")]
        )
        (j,) = rec.of(json_cid)
        assert (j.created, j.path, j.config, j.hostconfig) == (
            False,
            str(json_log(json_dir)),
            CONFIG,
            HOSTCONFIG,
        )
        assert read_all(j.fd) == b'{"log":"1\\n","stream":"stdout","time":"t"}\n'
        (loc,) = rec.of(local_cid)
        assert loc.path.endswith(f"{local_cid}/local-logs/container.log")
        assert (loc.config, read_all(loc.fd)) == (None, b"\x00\x00\x00\x03\xffx\n")
        assert rec.calls == []


def test_a_new_log_file_is_opened_when_it_appears(root: Path, rec: Recorder) -> None:
    with watching(root, rec) as w:
        cid, d = create(root)
        wait_watched(w, cid)
        write_log(json_log(d), b"first\n")
        rec.wait(lambda: len(rec.opened) == 1)
        (o,) = rec.opened
        assert (o.container_id, o.kind, o.created, o.config, o.hostconfig) == (
            cid,
            "json-file",
            True,
            CONFIG,
            HOSTCONFIG,
        )
        write_log(json_log(d), b"second\n")  # written after the open: read through the same fd
        assert read_all(o.fd) == b"first\nsecond\n"
        assert os.get_blocking(o.fd) and os.get_inheritable(o.fd) is False


def test_a_file_created_before_the_directory_watch_lands_is_found(
    root: Path, rec: Recorder, tmp_path: Path
) -> None:
    """The directory arrives with its log already inside (a rename into place): only the look
    after adding the watch can find it."""
    staging = tmp_path / "staging"
    (staging / "containers").mkdir(parents=True)
    with watching(root, rec):
        ids = []
        for local in (False, True):
            cid, d = create(staging)
            if local:
                (d / "local-logs").mkdir()
                write_log(d / "local-logs" / "container.log", b"L")
            else:
                write_log(json_log(d), b"J")
            os.rename(d, root / "containers" / cid)  # IN_MOVED_TO|IN_ISDIR
            ids.append(cid)
        rec.wait(lambda: len(rec.opened) == 2)
        assert [(o.container_id, o.created, read_all(o.fd)) for o in rec.opened] == [
            (ids[0], False, b"J"),
            (ids[1], False, b"L"),
        ]


def test_a_burst_of_containers_is_opened_once_each(root: Path, rec: Recorder) -> None:
    """Directory and file back to back, as a `docker run` burst does: the event, the look after
    the new watch, or both see each file, and each is handed over exactly once."""
    with watching(root, rec):
        made = []
        for i in range(200):
            cid, d = create(root)
            write_log(json_log(d), b"%d\n" % i)
            made.append(cid)
        rec.wait(lambda: len(rec.opened) >= 200)
        time.sleep(0.2)  # a duplicate would arrive now
        assert sorted(o.container_id for o in rec.opened) == sorted(made)
        assert len({os.fstat(o.fd).st_ino for o in rec.opened}) == 200
        assert rec.calls == []


def test_a_removed_container_stays_readable_through_its_fd(root: Path, rec: Recorder) -> None:
    with watching(root, rec) as w:
        cid, d = create(root)
        wait_watched(w, cid)
        write_log(json_log(d), b"the only line\n")
        rec.wait(lambda: len(rec.opened) == 1)
        shutil.rmtree(d)  # what `--rm` does 24 ms after `die`
        rec.wait(lambda: ("removed", cid) in rec.calls)
        (o,) = rec.opened
        assert os.fstat(o.fd).st_nlink == 0  # unlinked, and the watcher did not close it
        assert read_all(o.fd) == b"the only line\n"
        assert w.follow(cid, lambda: None) is False


def test_local_logs_directory_created_later(root: Path, rec: Recorder) -> None:
    with watching(root, rec) as w:
        cid, d = create(root)
        wait_watched(w, cid)
        (d / "local-logs").mkdir()
        write_log(d / "local-logs" / "container.log", b"\xff raw bytes")
        rec.wait(lambda: len(rec.opened) == 1)
        (o,) = rec.opened
        assert (o.kind, o.created, read_all(o.fd)) in {
            ("local", True, b"\xff raw bytes"),
            ("local", False, b"\xff raw bytes"),
        }
        woken = threading.Event()
        assert w.follow(cid, woken.set)  # armed on local-logs/, where the writes land
        write_log(d / "local-logs" / "container.log", b"more")
        assert woken.wait(5)


def test_follow_is_one_shot(root: Path, rec: Recorder) -> None:
    with watching(root, rec) as w:
        cid, d = create(root)
        write_log(json_log(d), b"a\n")
        rec.wait(lambda: len(rec.opened) == 1)
        woken = threading.Event()
        assert w.follow(cid, woken.set)
        write_log(json_log(d), b"b\n")
        assert woken.wait(5)
        woken.clear()
        write_log(json_log(d), b"c\n")  # not following any more: no call, and no IN_MODIFY
        assert not woken.wait(0.2)
        assert w.follow(cid, woken.set)
        write_log(json_log(d), b"d\n")
        assert woken.wait(5)
        calls: list[int] = []
        for _ in range(2):  # the same callable twice: still one call
            assert w.follow(cid, lambda: calls.append(1))
            assert w.follow(cid, woken.set)
            assert w.follow(cid, woken.set)
        woken.clear()
        write_log(json_log(d), b"e\n")
        assert woken.wait(5)
        time.sleep(0.1)
        assert len(calls) == 2  # two distinct lambdas: each called once
        assert w.follow(secrets.token_hex(32), woken.set) is False  # unknown container


def test_rotation_hands_over_the_new_file_and_wakes_the_reader(root: Path, rec: Recorder) -> None:
    with watching(root, rec) as w:
        cid, d = create(root)
        write_log(json_log(d), b"old\n")
        rec.wait(lambda: len(rec.opened) == 1)
        woken = threading.Event()
        assert w.follow(cid, woken.set)
        os.rename(json_log(d), d / f"{cid}-json.log.1")  # json-file's rotate()
        write_log(json_log(d), b"new\n")
        rec.wait(lambda: len(rec.opened) == 2)
        assert woken.wait(5)
        old, new = rec.opened
        assert (new.created, read_all(new.fd), read_all(old.fd)) == (True, b"new\n", b"old\n")
        assert rec.calls == []


def test_truncation_in_place_wakes_without_a_new_file(root: Path, rec: Recorder) -> None:
    """max-file=1: json-file truncates the same inode instead of renaming."""
    with watching(root, rec) as w:
        cid, d = create(root)
        write_log(json_log(d), b"x" * 1000)
        rec.wait(lambda: len(rec.opened) == 1)
        woken = threading.Event()
        assert w.follow(cid, woken.set)
        write_log(json_log(d), b"y\n", trunc=True)
        assert woken.wait(5)
        time.sleep(0.1)
        assert len(rec.opened) == 1 and read_all(rec.opened[0].fd) == b"y\n"


@pytest.mark.parametrize("keep_fd", [True, False])
def test_removal_wakes_the_reader(root: Path, rec: Recorder, keep_fd: bool) -> None:
    """With the log held open, the directory's own IN_IGNORED never comes (the open file pins its
    parent); the parent's IN_DELETE reports the removal then. Without, either may come first."""
    with watching(root, rec) as w:
        cid, d = create(root)
        write_log(json_log(d), b"x\n")
        rec.wait(lambda: len(rec.opened) == 1)
        if not keep_fd:
            os.close(rec.opened.pop().fd)
        woken = threading.Event()
        assert w.follow(cid, woken.set)
        os.unlink(json_log(d))
        for name in os.listdir(d):
            os.unlink(d / name)
        d.rmdir()
        assert woken.wait(5)
        rec.wait(lambda: ("removed", cid) in rec.calls)


def hold_watcher(root: Path, rec: Recorder) -> threading.Event:
    """Park the watcher thread inside a callback, so the kernel queues what happens next."""
    release = threading.Event()
    rec.hold = release
    _, d = create(root)
    write_log(json_log(d), b"parked\n")
    assert rec.held.wait(5)
    return release


def test_queue_overflow_rescans_and_misses_nothing(root: Path, rec: Recorder) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 100_000:
        pytest.skip(f"max_queued_events is {limit}: too many files to provoke an overflow")
    with watching(root, rec) as w:
        busy_cid, busy = create(root)
        write_log(json_log(busy), b"busy\n")
        rec.wait(lambda: len(rec.opened) == 1)
        woken = threading.Event()
        assert w.follow(busy_cid, woken.set)
        release = hold_watcher(root, rec)
        for i in range(limit + 10):  # distinct names: the kernel cannot merge these
            (busy / f"noise{i}").touch()
        late_cid, late = create(root)  # its events are dropped: only a rescan can find it
        write_log(json_log(late), b"late\n")
        release.set()
        rec.wait(lambda: len(rec.of(late_cid)) == 1)
        assert rec.count("overflow") == 1
        assert woken.wait(5)  # its wake-up may have been dropped too: the rescan wakes it
        assert len(rec.of(busy_cid)) == 1  # a rescan hands nothing over twice
        assert read_all(rec.of(late_cid)[0].fd) == b"late\n"


def test_a_missing_root_is_watched_once_it_appears(tmp_path: Path, rec: Recorder) -> None:
    with watching(tmp_path, rec, retry_seconds=0.05):
        rec.wait(lambda: ("watch_error", "ENOENT") in rec.calls)
        (tmp_path / "containers").mkdir()
        _, d = create(tmp_path)
        write_log(json_log(d), b"x\n")
        rec.wait(lambda: len(rec.opened) == 1)
        time.sleep(0.2)
        assert rec.calls == [("watch_error", "ENOENT")]  # once, not once per retry


def test_a_failing_callback_does_not_stop_the_watcher(root: Path, rec: Recorder) -> None:
    rec.raise_on_open = True
    with watching(root, rec):
        for _ in range(2):
            _, d = create(root)
            write_log(json_log(d), b"x\n")
        rec.wait(lambda: len(rec.opened) == 2)


def test_stop_is_prompt_and_leaves_no_descriptor(root: Path, rec: Recorder) -> None:
    fds_before = set(os.listdir("/proc/self/fd"))
    w = LogFileWatcher(root, rec)
    w.start()
    cid, d = create(root)
    write_log(json_log(d), b"x\n")
    rec.wait(lambda: len(rec.opened) == 1)
    started = time.monotonic()
    w.stop()
    assert time.monotonic() - started < 1
    w.stop()
    assert w.follow(cid, lambda: None) is False
    assert set(os.listdir("/proc/self/fd")) - fds_before == {str(rec.opened[0].fd)}
