"""LogFileWatcher with Podman's layout, on real inotify: directories and files made the way
podman and conmon make them (`overlay-containers/<id>/userdata/ctr.log`, replaced by rename)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.sources.logfiles.layout import podman
from bridge.sources.logfiles.watch import LogFileWatcher

from .test_watch import Recorder, read_all, wait_watched, write_log

LAYOUT = podman("overlay")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "overlay-containers").mkdir()
    (tmp_path / "containers").mkdir()  # Docker's: not watched by a Podman watcher
    return tmp_path


@contextlib.contextmanager
def watching(root: Path, rec: Recorder) -> Iterator[LogFileWatcher]:
    w = LogFileWatcher(root, rec, layout=LAYOUT)
    w.start()
    try:
        yield w
    finally:
        w.stop()


def create(root: Path) -> tuple[str, Path]:
    """`podman create`: the directory, then userdata/ with the runtime's config in it."""
    cid = secrets.token_hex(32)
    d = root / "overlay-containers" / cid
    d.mkdir()
    (d / "userdata").mkdir()
    (d / "userdata" / "config.json").write_bytes(b'{"ociVersion":"1.0.2"}')
    return cid, d / "userdata"


def replace(userdata: Path, data: bytes) -> None:
    """conmon's reopen_k8s_file: a new ctr.log.tmp renamed over ctr.log."""
    write_log(userdata / "ctr.log.tmp", data)
    os.rename(userdata / "ctr.log.tmp", userdata / "ctr.log")


LINE = b"2026-12-02T06:05:22.513454705+00:00 stdout F hi\n"


def hold_watcher(root: Path, rec: Recorder) -> threading.Event:
    """Park the watcher thread inside a callback, so the kernel queues what happens next."""
    release = threading.Event()
    rec.hold = release
    _, userdata = create(root)
    write_log(userdata / "ctr.log", LINE)
    assert rec.held.wait(5)
    return release


def wait_userdata_watched(w: LogFileWatcher, cid: str) -> None:
    deadline = time.monotonic() + 5
    while not w.watched(cid):
        assert time.monotonic() < deadline, "userdata/ never watched"
        time.sleep(0.002)


def test_ctr_log_is_opened_when_conmon_creates_it(root: Path, rec: Recorder) -> None:
    with watching(root, rec) as w:
        cid, userdata = create(root)
        wait_userdata_watched(w, cid)
        write_log(userdata / "ctr.log", LINE)
        rec.wait(lambda: len(rec.opened) == 1)
        (o,) = rec.opened
        assert (o.container_id, o.kind, o.created) == (cid, "k8s-file", True)
        assert o.path == str(userdata / "ctr.log")
        assert (o.config, o.hostconfig) == (None, None)  # nothing usable on disk
        assert w.watched(cid)
        assert rec.calls == []


def test_userdata_made_after_the_directory_is_watched_too(root: Path, rec: Recorder) -> None:
    with watching(root, rec) as w:
        cid = secrets.token_hex(32)
        d = root / "overlay-containers" / cid
        d.mkdir()
        wait_watched(w, cid)
        (d / "userdata").mkdir()
        write_log(d / "userdata" / "ctr.log", LINE)
        rec.wait(lambda: len(rec.opened) == 1)
        woken = threading.Event()
        assert w.follow(cid, woken.set)  # armed on userdata/, where conmon writes
        write_log(d / "userdata" / "ctr.log", LINE)
        assert woken.wait(5)


def test_existing_logs_are_handed_over_before_start_returns(root: Path, rec: Recorder) -> None:
    cid, userdata = create(root)
    write_log(userdata / "ctr.log", LINE)
    create(root)  # created, never started: no ctr.log
    (root / "containers" / secrets.token_hex(32)).mkdir()  # Docker's directory: not Podman's
    with watching(root, rec):
        assert [(o.container_id, o.created) for o in rec.opened] == [(cid, False)]


def test_each_replacement_is_handed_over_in_order(root: Path, rec: Recorder) -> None:
    with watching(root, rec) as w:
        cid, userdata = create(root)
        wait_userdata_watched(w, cid)
        write_log(userdata / "ctr.log", b"0")
        woken = threading.Event()
        rec.wait(lambda: len(rec.opened) == 1)
        assert w.follow(cid, woken.set)
        for gen in (b"1", b"2", b"3"):
            replace(userdata, gen)
            assert w.sync(5)  # every event so far handled: the new file is handed over
            assert read_all(rec.opened[-1].fd) == gen
        assert woken.wait(5)
        assert [read_all(o.fd) for o in rec.of(cid)] == [b"0", b"1", b"2", b"3"]
        assert all(os.fstat(o.fd).st_nlink == 0 for o in rec.opened[:-1])  # no name left
        assert rec.calls == []


def test_a_file_replaced_before_it_could_be_opened_is_reported(root: Path, rec: Recorder) -> None:
    with watching(root, rec) as w:
        cid, userdata = create(root)
        wait_userdata_watched(w, cid)
        write_log(userdata / "ctr.log", b"0")
        rec.wait(lambda: len(rec.of(cid)) == 1)
        release = hold_watcher(root, rec)
        replace(userdata, b"1")
        replace(userdata, b"2")  # "1" has no name any more, and nobody holds it
        release.set()
        rec.wait(lambda: rec.count("missed", cid) == 1)
        assert w.sync(5)
        assert [read_all(o.fd) for o in rec.of(cid)] == [b"0", b"2"]


def test_rm_removes_the_directory_and_the_file_stays_readable(root: Path, rec: Recorder) -> None:
    with watching(root, rec) as w:
        cid, userdata = create(root)
        wait_userdata_watched(w, cid)
        write_log(userdata / "ctr.log", LINE)
        rec.wait(lambda: len(rec.opened) == 1)
        shutil.rmtree(userdata.parent)  # podman run --rm, 60-80 ms after conmon's exit
        rec.wait(lambda: ("removed", cid) in rec.calls)
        assert read_all(rec.opened[0].fd) == LINE
        assert not w.watched(cid) and not w.follow(cid, lambda: None)


def test_sync_outside_the_thread_only(root: Path, rec: Recorder) -> None:
    w = LogFileWatcher(root, rec, layout=LAYOUT)
    assert w.sync(0.1) is False  # not started
    w.start()
    assert w.sync(5) is True
    w.stop()
    assert w.sync(0.1) is False


def test_a_log_created_between_the_watch_and_the_look_is_new(root: Path, rec: Recorder) -> None:
    """podman run: userdata/ and ctr.log back to back. The look after the new watch finds the
    file (handed over as found by a scan), then its creation event says it is new."""

    class Racing(LogFileWatcher):
        def _watch(self, path: str, mask: int) -> int | OSError:
            wd = super()._watch(path, mask)
            if (
                isinstance(wd, int)
                and path.endswith("/userdata")
                and not os.path.exists(f"{path}/ctr.log")
            ):
                write_log(Path(path) / "ctr.log", LINE)  # conmon, right after the watch
            return wd

    w = Racing(root, rec, layout=LAYOUT)
    w.start()
    try:
        cid, _ = create(root)
        rec.wait(lambda: rec.created == [cid])
        (o,) = rec.opened
        assert (o.container_id, o.created) == (cid, False)
        assert rec.calls == []
    finally:
        w.stop()
