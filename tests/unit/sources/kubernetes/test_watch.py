"""PodLogWatcher on a real directory tree: each N.log opened as it appears, once; hostile
names, symlinks and FIFOs left alone; wake-ups, close and delete reported."""

from __future__ import annotations

import os
import threading

import pytest

from bridge.sources.kubernetes.watch import PodLogWatcher

UID = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
POD = f"shop_api-0_{UID}"


class Events:
    def __init__(self) -> None:
        self.opened: list[tuple[str, bool, int]] = []  # key, created, inode
        self.closed: list[str] = []
        self.deleted: list[str] = []
        self.missed: list[str] = []
        self.writer_closed: list[tuple[str, int]] = []

    def on_open(self, key: str, fd: int, created: bool) -> None:
        self.opened.append((key, created, os.fstat(fd).st_ino))
        os.close(fd)

    def on_closed(self, key: str) -> None:
        self.closed.append(key)

    def on_deleted(self, key: str) -> None:
        self.deleted.append(key)

    def on_missed(self, key: str) -> None:
        self.missed.append(key)

    def on_writer_closed(self, key: str, file) -> None:
        self.writer_closed.append((key, file.ino))


@pytest.fixture
def tree(tmp_path):
    pods = tmp_path / "pods"
    pods.mkdir()
    events = Events()
    watcher = PodLogWatcher(str(pods), events)
    yield pods, events, watcher
    watcher.stop()


def test_logs_there_at_start_and_new_ones_are_opened_once(tree):
    pods, events, watcher = tree
    (pods / POD / "web").mkdir(parents=True)
    (pods / POD / "web" / "0.log").write_text("x\n")
    watcher.start()
    assert events.opened == [
        (f"{POD}/web/0.log", False, (pods / POD / "web" / "0.log").stat().st_ino)
    ]
    (pods / POD / "web" / "1.log").write_text("")  # a restart
    other = pods / f"shop_api-1_{UID}" / "db"
    other.mkdir(parents=True)
    (other / "0.log").write_text("")
    assert watcher.sync()
    keys = [k for k, _, _ in events.opened]
    assert keys == [f"{POD}/web/0.log", f"{POD}/web/1.log", f"shop_api-1_{UID}/db/0.log"]
    assert watcher.watched(f"{POD}/web/0.log") and watcher.watched_root()


def test_a_reopen_after_the_kubelets_rename_is_a_new_file_and_not_a_deletion(tree):
    pods, events, watcher = tree
    d = pods / POD / "web"
    d.mkdir(parents=True)
    (d / "0.log").write_text("a\n")
    watcher.start()
    os.rename(d / "0.log", d / "0.log.20261207-080000")
    (d / "0.log").write_text("b\n")  # ReopenContainerLog: a new inode (and its close)
    assert watcher.sync()
    assert [created for _, created, _ in events.opened] == [False, True]
    assert events.deleted == []
    assert events.closed == [f"{POD}/web/0.log"]
    (d / "0.log").unlink()
    assert watcher.sync()
    assert events.deleted == [f"{POD}/web/0.log"]


def test_hostile_names_symlinks_and_fifos_are_not_pod_logs(tree, tmp_path):
    pods, events, watcher = tree
    secret = tmp_path / "secret"
    secret.write_text("root's\n")
    d = pods / POD / "web"
    d.mkdir(parents=True)
    os.symlink(secret, d / "0.log")  # a symlinked log
    os.mkfifo(d / "1.log")  # a FIFO must not block the thread
    (d / "2.log.20261207-080000").write_text("")  # a rotated name is not a current log
    (d / "x.log").write_text("")
    os.symlink(d, pods / POD / "link")  # a symlinked container directory
    (pods / f"Bad_Name_{UID}").mkdir()
    (pods / f"Bad_Name_{UID}" / "web").mkdir()
    (pods / f"Bad_Name_{UID}" / "web" / "0.log").write_text("")
    (pods / "0.log").write_text("")  # a log at the wrong depth
    watcher.start()
    (pods / f"evil_pod_{UID}").symlink_to(pods / POD)  # a symlinked pod directory
    assert watcher.sync()
    assert events.opened == []


def test_follow_wakes_once_at_the_next_write(tree):
    pods, _, watcher = tree
    d = pods / POD / "web"
    d.mkdir(parents=True)
    log = d / "0.log"
    log.write_text("")
    watcher.start()
    woken = threading.Event()
    assert watcher.follow(f"{POD}/web/0.log", woken.set)
    with open(log, "a") as f:
        f.write("line\n")
    assert woken.wait(5)
    assert not watcher.follow(f"{POD}/nothere/0.log", woken.set)


def test_a_deleted_pod_directory_drops_its_watches(tree):
    pods, events, watcher = tree
    d = pods / POD / "web"
    d.mkdir(parents=True)
    (d / "0.log").write_text("")
    watcher.start()
    (d / "0.log").unlink()
    d.rmdir()
    (pods / POD).rmdir()
    assert watcher.sync()
    assert not watcher.watched(f"{POD}/web/0.log")
    assert events.deleted == [f"{POD}/web/0.log"]


def test_the_pods_directory_appearing_later_is_watched_then(tmp_path):
    pods = tmp_path / "pods"
    events = Events()
    watcher = PodLogWatcher(str(pods), events, retry_seconds=0.05)
    watcher.start()
    try:
        assert not watcher.watched_root()
        (pods / POD / "web").mkdir(parents=True)
        (pods / POD / "web" / "0.log").write_text("")
        deadline = 50
        while not events.opened and deadline:
            watcher.sync()
            deadline -= 1
            threading.Event().wait(0.05)
        assert [k for k, _, _ in events.opened] == [f"{POD}/web/0.log"]
    finally:
        watcher.stop()


def test_cri_os_reopen_renames_a_new_file_over_the_log_and_it_is_handed_over(tree):
    # conmon (CRI-O) answers ReopenContainerLog by creating 0.log.tmp and renaming it over 0.log
    # (after the kubelet renamed the old one away): an IN_MOVED_TO, not an IN_CREATE.
    pods, events, watcher = tree
    d = pods / POD / "web"
    d.mkdir(parents=True)
    (d / "0.log").write_text("old\n")
    watcher.start()
    os.rename(d / "0.log", d / "0.log.20261207-080000")
    (d / "0.log.tmp").write_text("")
    os.rename(d / "0.log.tmp", d / "0.log")
    assert watcher.sync()
    assert [(k, created) for k, created, _ in events.opened] == [
        (f"{POD}/web/0.log", False),
        (f"{POD}/web/0.log", True),
    ]
    assert events.deleted == []


def test_the_writers_close_of_a_renamed_file_is_reported_with_its_identity(tree):
    pods, events, watcher = tree
    d = pods / POD / "web"
    d.mkdir(parents=True)
    writer = os.open(d / "0.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    watcher.start()
    os.rename(d / "0.log", d / "0.log.20261207-080000")  # the kubelet's rename
    os.write(writer, b"flushed\n")
    os.close(writer)  # containerd closes the old file after the reopen
    assert watcher.sync()
    ino = (d / "0.log.20261207-080000").stat().st_ino
    assert events.writer_closed == [(f"{POD}/web/0.log", ino)]
    assert events.closed == []  # not "the container exited"
