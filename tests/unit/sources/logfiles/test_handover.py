"""The handover (handover.py) through a LogFileWatcher on real inotify: each file once and in
order, a file gone before its open reported, config files bounded, what is no plain log refused."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .test_watch import (
    Recorder,
    create,
    hold_watcher,
    json_log,
    read_all,
    wait_watched,
    watching,
    write_log,
)


def test_generations_rotated_away_before_the_open_are_reported(
    root: Path,
    rec: Recorder,
) -> None:
    with watching(root, rec) as w:
        cid, d = create(root)
        wait_watched(w, cid)
        release = hold_watcher(root, rec)
        for gen in (b"1", b"2"):
            write_log(json_log(d), gen)
            os.rename(json_log(d), d / f"{cid}-json.log.1")
        write_log(json_log(d), b"3")
        release.set()
        rec.wait(lambda: rec.count("missed", cid) == 2)
        time.sleep(0.1)
        (o,) = rec.of(cid)
        assert (o.created, read_all(o.fd)) == (True, b"3")  # the newest, and only once


def test_a_file_rotated_on_before_its_event_is_handed_over_from_its_rotated_name(
    root: Path,
    rec: Recorder,
) -> None:
    with watching(root, rec) as w:
        cid, d = create(root)
        write_log(json_log(d), b"A")
        rec.wait(lambda: len(rec.of(cid)) == 1)
        release = hold_watcher(root, rec)
        os.rename(json_log(d), d / f"{cid}-json.log.1")
        write_log(json_log(d), b"B")
        os.rename(json_log(d), d / f"{cid}-json.log.1")  # max-file=2: A is gone; B is .1
        write_log(json_log(d), b"C")
        release.set()
        rec.wait(lambda: len(rec.of(cid)) == 3)
        w.sync()
        assert [read_all(o.fd) for o in rec.of(cid)] == [b"A", b"B", b"C"]  # in order
        assert rec.count("missed", cid) == 0  # B's own event finds it handed already


def test_config_files_are_bounded_and_taken_as_they_are(
    root: Path,
    rec: Recorder,
) -> None:
    with watching(root, rec, config_max_bytes=64) as w:
        garbage = b"\x00\xff{not json"
        small, d1 = create(root, config=garbage)
        big, d2 = create(root, config=b"{" + b" " * 64 + b"}")
        fifo, d3 = create(root, config=None)
        os.mkfifo(d3 / "config.v2.json")  # must not block the thread
        for d in (d1, d2, d3):
            wait_watched(w, d.name)
            write_log(json_log(d), b"x\n")
        rec.wait(lambda: len(rec.opened) == 3)
        assert {o.container_id: o.config for o in rec.opened} == {
            small: garbage,
            big: None,
            fifo: None,
        }


def test_files_that_are_not_plain_logs_are_refused(
    root: Path,
    rec: Recorder,
    tmp_path: Path,
) -> None:
    (tmp_path / "elsewhere").mkdir()
    write_log(tmp_path / "elsewhere" / "container.log", b"host file")
    _, d0 = create(root)  # found by the start-up scan: refused by the watch
    (d0 / "local-logs").symlink_to(tmp_path / "elsewhere")
    with watching(root, rec) as w:
        fifo_cid, d1 = create(root)
        link_cid, d2 = create(root)
        wait_watched(w, fifo_cid)
        wait_watched(w, link_cid)
        os.mkfifo(json_log(d1))  # would block a plain open(O_RDONLY)
        (tmp_path / "secret").write_bytes(b"host file")
        json_log(d2).symlink_to(tmp_path / "secret")
        cid3, d3 = create(root)  # local-logs/ as a symlink: IN_CREATE without IN_ISDIR, ignored
        wait_watched(w, cid3)
        (d3 / "local-logs").symlink_to(tmp_path / "elsewhere")
        rec.wait(lambda: len(rec.calls) == 3)
        time.sleep(0.1)
        assert sorted(rec.calls) == sorted(
            [
                ("open_error", fifo_cid, "not a regular file"),
                ("open_error", link_cid, "ELOOP"),
                ("watch_error", "ENOTDIR"),  # IN_DONT_FOLLOW|IN_ONLYDIR, and nothing opened
            ]
        )
        assert rec.opened == []
