"""The opener process on real inotify: files opened there, handed over through the socket, and
the watcher opening them itself once the process is gone."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from bridge.sources.logfiles.layout import DOCKER
from bridge.sources.logfiles.opener import Opener

from .test_watch import (
    CONFIG,
    HOSTCONFIG,
    Recorder,
    create,
    json_log,
    read_all,
    rec,  # noqa: F401 (a fixture)
    root,  # noqa: F401 (a fixture)
    watching,
    write_log,
)


def test_files_are_opened_in_the_opener_and_handed_over_with_their_configs(
    root: Path,  # noqa: F811
    rec: Recorder,  # noqa: F811
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
        # new: its creation event, or a scan that found it a moment before the event did
        rec.wait(lambda: o.created or cid in rec.created)
        assert (read_all(o.fd), o.config, o.hostconfig) == (b"new\n", CONFIG, HOSTCONFIG)
        assert o.path == str(json_log(d))
        assert w.sync()
        assert opener.nice is not None


def test_without_the_opener_files_are_opened_by_the_watcher_itself(
    root: Path,  # noqa: F811
    rec: Recorder,  # noqa: F811
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
    root: Path,  # noqa: F811
    rec: Recorder,  # noqa: F811
    monkeypatch,
) -> None:
    monkeypatch.setattr("sys.executable", "/nonexistent/python")
    with watching(root, rec, opener=Opener(str(root), DOCKER)):
        cid, d = create(root)
        write_log(json_log(d), b"x\n")
        rec.wait(lambda: len(rec.of(cid)) == 1)
