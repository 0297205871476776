"""The opener process on real inotify: files opened there, handed over through the socket, and
the watcher opening them itself once the process is gone."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from pathlib import Path

import pytest

from bridge.sources.logfiles.layout import DOCKER
from bridge.sources.logfiles.opener import Opener
from bridge.sources.logfiles.realtime import RT_PRIORITY, RT_SECONDS
from bridge.sources.logfiles.watch import OpenedLog, OpenerGone, OpenerMessage

from .test_watch import (
    CONFIG,
    HOSTCONFIG,
    Recorder,
    create,
    json_log,
    read_all,
    watching,
    write_log,
)


def test_files_are_opened_in_the_opener_and_handed_over_with_their_configs(
    root: Path,
    rec: Recorder,
) -> None:
    before, d0 = create(root)
    write_log(json_log(d0), b"there already\n")
    opener = Opener(str(root), DOCKER)
    with watching(root, rec, opener=opener) as w:
        rec.wait(lambda: len(rec.of(before)) == 1)
        assert [read_all(o.fd) for o in rec.of(before)] == [b"there already\n"]
        cid, d = create(root)
        write_log(json_log(d), b"new\n")
        rec.wait(lambda: len(rec.of(cid)) == 1)
        (o,) = rec.of(cid)
        # (created or not: the file may be in place before the opener watches its directory,
        # and then only the directory's scan finds it, with no creation event of its own)
        assert (read_all(o.fd), o.config, o.hostconfig) == (b"new\n", CONFIG, HOSTCONFIG)
        assert o.path == str(json_log(d))
        assert w.sync()
        assert opener.nice is not None


def test_the_opener_runs_in_real_time_where_allowed_under_the_kernels_bound(
    root: Path,
    rec: Recorder,
) -> None:
    # Real time for every thread, with RLIMIT_RTTIME set first; the normal policy otherwise.
    opener = Opener(str(root), DOCKER)
    with watching(root, rec, opener=opener) as w:
        assert w.sync()
        assert opener._process is not None
        pid = opener._process.pid
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        policies = {os.sched_getscheduler(t) & ~os.SCHED_RESET_ON_FORK for t in tids}
        if os.geteuid() == 0:  # CAP_SYS_NICE; the unit grants it with LimitRTPRIO=
            assert opener.realtime
        assert policies == ({os.SCHED_RR} if opener.realtime else {os.SCHED_OTHER})
        if opener.realtime:
            assert {os.sched_getparam(t).sched_priority for t in tids} == {RT_PRIORITY}
            limits = Path(f"/proc/{pid}/limits").read_text()
            bound = RT_SECONDS * 1_000_000
            assert re.search(rf"Max realtime timeout\s+{bound}\s+{bound}\s", limits)
            assert opener.priority == f"real-time priority {RT_PRIORITY}"


def test_without_the_opener_files_are_opened_by_the_watcher_itself(
    root: Path,
    rec: Recorder,
) -> None:
    opener = Opener(str(root), DOCKER)
    with watching(root, rec, opener=opener) as w:
        process = opener._process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        cid, d = create(root)
        write_log(json_log(d), b"after\n")
        rec.wait(lambda: len(rec.of(cid)) == 1)
        assert read_all(rec.of(cid)[0].fd) == b"after\n"
        assert w.sync()


def test_an_opener_that_cannot_start_leaves_the_watcher_opening_files(
    root: Path,
    rec: Recorder,
    monkeypatch,
) -> None:
    monkeypatch.setattr("sys.executable", "/nonexistent/python")
    with watching(root, rec, opener=Opener(str(root), DOCKER)):
        cid, d = create(root)
        write_log(json_log(d), b"x\n")
        rec.wait(lambda: len(rec.of(cid)) == 1)


def test_a_config_that_cannot_travel_leaves_the_log_going_over(monkeypatch) -> None:
    from bridge.sources.logfiles import opener as module

    def no_memfd(name: str, flags: int = 0) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(module.os, "memfd_create", no_memfd)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.settimeout(5)  # nothing sent would be the defect
    r, w = os.pipe()
    try:
        log = OpenedLog("c" * 64, r, "/x/c-json.log", "json-file", True, CONFIG, HOSTCONFIG)
        module._Forwarder(theirs, DOCKER).on_open(log)  # closes its copy of r
        data, ancdata, _, _ = ours.recvmsg(65536, socket.CMSG_SPACE(12))
        message = module.Message(json.loads(data), module._fds(ancdata))
        opened = module.opened_log(message, 1 << 20)
        assert (opened.config, opened.hostconfig) == (None, None)
        os.write(w, b"the log itself\n")
        assert os.read(opened.fd, 100) == b"the log itself\n"
        os.close(opened.fd)
    finally:
        os.close(w)
        ours.close()
        theirs.close()


def test_a_config_memfd_that_cannot_be_read_is_no_config() -> None:
    from bridge.sources.logfiles import opener as module

    r, w = os.pipe()
    os.close(w)
    bad = os.open("/", os.O_RDONLY)  # a directory: pread fails with EISDIR
    message = module.Message(
        {
            "e": "open",
            "cid": "c" * 64,
            "path": "/x",
            "kind": "json-file",
            "created": True,
            "configs": [True, False],
        },
        [r, bad],
    )
    opened = module.opened_log(message, 1 << 20)
    assert opened.config is None and opened.fd == r
    os.close(r)


class _Scripted(Opener):
    """An Opener whose process is the test: `peer` is the process's end of the socket."""

    def start(self, timeout: float = 0.0) -> list[OpenerMessage]:
        ours, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = ours
        return []


def _rotated_away(d: Path, data: bytes) -> int:
    """A descriptor of a log file that no name leads to any more (rotated, then deleted)."""
    path = d / "gone.log"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    path.unlink()
    return fd


def test_what_came_before_the_opener_went_is_kept_with_its_descriptors(tmp_path: Path) -> None:
    from bridge.sources.logfiles import opener as module

    opener = _Scripted(str(tmp_path), DOCKER)
    opener.start()
    forwarder = module._Forwarder(opener.peer, DOCKER)
    cid = "c" * 64
    forwarder.on_open(
        OpenedLog(cid, _rotated_away(tmp_path, b"a\n"), "/x", "json-file", True, None, None)
    )
    forwarder.on_missed(cid)
    opener.peer.close()  # the process dies: its socket's end closes
    with pytest.raises(OpenerGone) as gone:
        opener.receive()
    received = gone.value.received
    assert [m.event for m in received] == ["open", "missed"]
    fd = opener.opened(received[0]).fd
    assert read_all(fd) == b"a\n"
    os.close(fd)
    opener.close()


def test_files_received_before_the_opener_died_are_handed_over_before_the_rescan(
    root: Path,
    rec: Recorder,
) -> None:
    from bridge.sources.logfiles import opener as module

    cid, d = create(root)
    write_log(json_log(d), b"current\n")
    opener = _Scripted(str(root), DOCKER)
    with watching(root, rec, opener=opener) as w:
        assert rec.of(cid) == []  # the opener's to hand over
        forwarder = module._Forwarder(opener.peer, DOCKER)
        rotated = _rotated_away(d, b"rotated\n")
        forwarder.on_open(OpenedLog(cid, rotated, "/x", "json-file", True, None, None))
        forwarder.on_missed(cid)
        opener.peer.close()  # dies with both messages still unread in the socket
        rec.wait(lambda: len(rec.of(cid)) == 2)
        assert [read_all(o.fd) for o in rec.of(cid)] == [b"rotated\n", b"current\n"]
        assert rec.count("missed", cid) == 1
        assert w.sync()
