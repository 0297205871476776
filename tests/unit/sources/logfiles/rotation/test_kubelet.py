"""KubeletFiles on real files rotated the way the kubelet and containerd rotate a pod's log:
rename, lines still written to the renamed file, reopen, a flush into the old file, gzip of
older files into new inodes, a failed reopen renamed back, deletion."""

from __future__ import annotations

import gzip
import os
import shutil
import time

import pytest

from bridge.sources.logfiles.formats.k8sfile import K8S_FILE
from bridge.sources.logfiles.rotation.identity import FileId
from bridge.sources.logfiles.rotation.kubelet import KubeletFiles, WriterClosed, rotated_names
from bridge.sources.logfiles.rotation.replaced import Replacements

from ..encode import NS, T0, rfc3339
from ..rotating import Reader, names


class Containerd:
    """containerd's CRI logger: writes go to the file it holds (not to the name), one record a
    write, RFC3339Nano with trailing zeros trimmed; ReopenContainerLog opens a new `N.log` and
    then closes the old one. The kubelet's side: rename with a one-second stamp, gzip."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.n = 0
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self.stamp = 0

    def record(self, message: bytes, tag: bytes = b"F", fd: int | None = None) -> None:
        ts = rfc3339(T0 + self.n * NS // 1000, trim=True).replace(b"+00:00", b"Z")
        self.n += 1
        os.write(self.fd if fd is None else fd, b"%s stdout %s %s\n" % (ts, tag, message))

    def lines(self, count: int) -> None:
        for _ in range(count):
            self.record(b"line-%d" % self.n)

    def rename(self) -> str:
        self.stamp += 1
        rotated = f"{self.path}.20261207-0800{self.stamp:02d}"
        os.rename(self.path, rotated)
        return rotated

    def reopen(self) -> int:
        """The new file is there; the old one is still open (returned) until closed."""
        old = self.fd
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        return old

    def gzip(self, rotated: str) -> None:
        with open(rotated, "rb") as src, gzip.open(rotated + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.rename(rotated + ".tmp", rotated + ".gz")
        os.unlink(rotated)

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def log(tmp_path):
    d = tmp_path / "shop_api-0_uid" / "api"
    d.mkdir(parents=True)
    c = Containerd(str(d / "0.log"))
    yield c
    c.close()


def opened(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def kubelet_files(log: Containerd, replacements: Replacements, **kw) -> KubeletFiles:
    return KubeletFiles(log.path, K8S_FILE, fd=opened(log.path), replacements=replacements, **kw)


def test_lines_written_to_the_renamed_file_before_and_after_the_reopen_come_once_in_order(log):
    replacements = Replacements(live=lambda: True)
    with kubelet_files(log, replacements, close_seconds=0.05) as fs:
        r = Reader(fs)
        log.lines(3)
        assert r.drain() == names(3)
        log.rename()
        log.lines(2)  # containerd writes on to the renamed inode
        assert r.drain() == names(2, 3)
        old = log.reopen()
        replacements.offer(opened(log.path))  # the watcher, at IN_CREATE
        log.lines(2)  # into the new file
        log.record(b"flushed", fd=old)  # the old logger's last write, after the new file
        assert r.drain() == [b"flushed"]  # not moved on: the old file is not closed yet
        assert fs.waiting_for_close
        os.close(old)
        time.sleep(0.06)
        assert r.drain() == names(2, 5)
        assert r.restarts == ["start", "rotated"] and fs.gaps == 0
        assert not fs.waiting_for_close


def test_a_partial_line_flushed_into_the_old_file_is_joined_with_its_end_in_the_new(log):
    replacements = Replacements(live=lambda: True)
    with kubelet_files(log, replacements, close_seconds=0.0) as fs:
        r = Reader(fs)
        log.rename()
        old = log.reopen()
        replacements.offer(opened(log.path))
        log.record(b"before ", b"P", fd=old)
        os.close(old)
        log.record(b"after")
        r.drain()
        assert [(x.message, x.complete) for x in r.lines] == [(b"before ", False), (b"after", True)]


def test_a_failed_reopen_renames_the_file_back_and_nothing_is_read_twice(log):
    replacements = Replacements(live=lambda: True)
    with kubelet_files(log, replacements, close_seconds=0.0) as fs:
        r = Reader(fs)
        log.lines(3)
        assert r.drain() == names(3)
        rotated = log.rename()
        log.lines(1)
        assert r.drain() == names(1, 3)  # no newer file: the set waits on this one
        os.rename(rotated, log.path)  # ReopenContainerLog failed: renamed back
        log.lines(2)
        assert r.drain() == names(2, 4)
        assert r.restarts == ["start"] and fs.gaps == 0


def test_files_rotated_deleted_and_gzipped_while_behind_are_read_in_full_through_the_watcher(log):
    replacements = Replacements(live=lambda: True)
    first = opened(log.path)
    log.lines(5)
    rotated = []
    for _ in range(3):  # three rotations, MaxFiles 2: each rotated file gone at the next one
        rotated.append(log.rename())
        os.close(log.reopen())
        replacements.offer(opened(log.path))
        log.lines(5)
        if len(rotated) > 1:
            log.gzip(rotated[-2])
            os.unlink(rotated[-2] + ".gz")
    with KubeletFiles(
        log.path, K8S_FILE, fd=first, replacements=replacements, close_seconds=0
    ) as fs:
        r = Reader(fs)
        assert r.drain() == names(20)
        assert fs.gaps == 0


def test_started_behind_two_rotations_it_catches_up_from_the_gz_files_at_its_position(log):
    log.lines(5)
    first = log.rename()
    os.close(log.reopen())
    log.lines(5)
    second = log.rename()
    os.close(log.reopen())
    log.lines(5)
    log.gzip(first)  # the next rotation compresses the older one (a new inode)
    assert rotated_names(log.path) == [(first + ".gz", True), (second, False)]
    replacements = Replacements(live=lambda: True)
    with kubelet_files(log, replacements, rotated=True, close_seconds=0) as fs:
        fs.start_at(T0 + 7 * NS // 1000)  # the resume point: line-7, in the plain rotated file
        assert Reader(fs).drain() == names(8, 7)
    with kubelet_files(log, replacements, rotated=True, close_seconds=0) as fs:
        # in the .gz: read from its start (no seek in a stream); the cursor drops what is older
        fs.start_at(T0 + 3 * NS // 1000)
        r = Reader(fs)
        assert r.drain() == names(15)
        assert fs.gaps == 0


def test_the_first_file_renamed_and_compressed_before_the_claim_is_read_once(log):
    first = opened(log.path)
    log.lines(5)
    rotated = log.rename()
    os.close(log.reopen())
    log.lines(5)
    log.gzip(rotated)
    replacements = Replacements(live=lambda: True)
    replacements.offer(opened(log.path))
    with KubeletFiles(
        log.path, K8S_FILE, fd=first, replacements=replacements, rotated=True, close_seconds=0
    ) as fs:
        assert Reader(fs).drain() == names(10)


def test_a_deleted_file_is_final_at_once_and_read_to_its_end(log):
    replacements = Replacements(live=lambda: True)
    with kubelet_files(log, replacements, close_seconds=60) as fs:
        r = Reader(fs)
        log.lines(3)
        log.rename()
        old = log.reopen()
        replacements.offer(opened(log.path))
        log.record(b"last", fd=old)
        os.close(old)
        log.lines(1)
        for name, _ in rotated_names(log.path):
            os.unlink(name)  # the pod was deleted: every file of the container goes
        os.unlink(log.path)
        assert r.drain() == [*names(3), b"last", b"line-4"]


def test_rotated_names_ignore_tmp_and_hostile_names(log):
    d = os.path.dirname(log.path)
    for name in (
        "0.log.20261207-080000.tmp",
        "0.log.x",
        "0.log.2026120-080000",
        "1.log.20261207-080000",
    ):
        open(os.path.join(d, name), "w").close()
    os.symlink("/etc/passwd", os.path.join(d, "0.log.20261207-080001"))
    assert rotated_names(log.path) == [(log.path + ".20261207-080001", False)]
    replacements = Replacements(live=lambda: True)
    with kubelet_files(log, replacements, rotated=True) as fs:  # the symlink is not followed
        assert Reader(fs).drain() == []


def test_the_writers_close_makes_a_renamed_file_final_at_once(log):
    closed = WriterClosed()
    replacements = Replacements(live=lambda: True)
    with kubelet_files(log, replacements, closed=closed, close_seconds=60) as fs:
        r = Reader(fs)
        log.lines(2)
        rotated = log.rename()
        old = log.reopen()
        replacements.offer(opened(log.path))
        log.lines(1)
        assert r.drain() == names(2)  # without the close, the bound (60 s here) holds it
        assert fs.waiting_for_close
        log.record(b"last", fd=old)
        os.close(old)
        closed.add(FileId.of(os.stat(rotated)))  # the watcher's IN_CLOSE_WRITE
        assert r.drain() == [b"last", b"line-2"]
        assert not fs.waiting_for_close


def test_a_close_mark_from_before_a_file_was_taken_in_is_another_files(log):
    # Inodes are recycled: a mark for this inode that came before the file was taken in was a
    # deleted file's; believing it would move on while containerd still writes this one.
    closed = WriterClosed()
    replacements = Replacements(live=lambda: True)
    with kubelet_files(log, replacements, closed=closed, close_seconds=60) as fs:
        r = Reader(fs)
        log.lines(1)
        first = log.rename()
        old = log.reopen()
        closed.add(FileId.of(os.stat(log.path)))  # stale: "recycled" onto the new file
        replacements.offer(opened(log.path))
        os.close(old)
        closed.add(FileId.of(os.stat(first)))
        log.lines(1)
        assert r.drain() == names(2)  # moved on to the new file at the first one's close
        log.rename()
        old = log.reopen()
        replacements.offer(opened(log.path))
        log.lines(1)
        assert r.drain() == []
        assert fs.waiting_for_close  # the stale mark was dropped: it waits for the real close
        os.close(old)
