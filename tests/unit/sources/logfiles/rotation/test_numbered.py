from __future__ import annotations

import os
import shutil

import pytest

from bridge.sources.logfiles.formats.jsonfile import JSON_FILE
from bridge.sources.logfiles.rotation.identity import FileId
from bridge.sources.logfiles.rotation.numbered import NumberedFiles

from ..rotating import Reader, Writer, names


@pytest.fixture
def log(tmp_path):
    d = tmp_path / "c0ffee"
    d.mkdir()
    return Writer(str(d / "c0ffee-json.log"), max_files=5)


def open_set(log: Writer, **kw) -> NumberedFiles:
    gaps: list[str] = []
    fs = NumberedFiles(log.path, JSON_FILE, on_gap=gaps.append, **kw)
    fs.gap_reasons = gaps  # type: ignore[attr-defined]
    return fs


def held_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_follows_appends_and_says_when_at_the_end(log):
    log.lines(3)
    with open_set(log) as fs:
        r = Reader(fs)
        assert r.drain() == names(3)
        assert r.restarts == ["start"]
        assert fs.read().data == b""
        log.lines(2)
        assert r.drain() == names(2, 3)
        fid, offset = fs.position
        assert (fid.dev, fid.ino) == (os.stat(log.path).st_dev, os.stat(log.path).st_ino)
        assert offset == os.path.getsize(log.path) == r.lines[-1].end


def test_a_rotated_file_is_read_to_its_end_before_the_next(log):
    log.lines(10)
    with open_set(log) as fs:
        r = Reader(fs)
        fs.read(100)  # behind: most of the file is unread
        r.parser.reset(100)
        log.lines(5)  # written after the read, before the rotation
        log.rotate()
        log.lines(3)
        r.drain()
        got = [x.message for x in r.lines]
        assert got == names(18)[-len(got) :] and len(got) > 10
        assert r.restarts == ["rotated"]
        assert fs.gaps == 0
        assert r.lines[-1].end == os.path.getsize(log.path)


def test_behind_by_several_rotations_every_file_is_read_in_order(log):
    log.lines(20)
    with open_set(log) as fs:
        r = Reader(fs)
        r.drain(max_bytes=300)
        for _ in range(3):  # each rotated file still there, under another name each time
            log.lines(20)
            log.rotate()
        log.lines(20)
        r.drain(max_bytes=300)
        assert [x.message for x in r.lines] == names(100)
        assert r.restarts == ["start", "rotated", "rotated", "rotated"]
        assert fs.gaps == 0


def test_rotated_files_compressed_meanwhile_are_found_by_content_and_read_through_gzip(log):
    with open_set(log) as fs:
        r = Reader(fs)
        log.lines(10)
        assert r.drain(max_bytes=200) == names(10)
        log.lines(10)
        log.rotate(compress=True)  # the file being read becomes P.1.gz: another inode
        log.lines(10)
        log.rotate(compress=True)
        log.lines(10)
        log.rotate(compress=True)
        log.lines(10)
        assert sorted(os.listdir(os.path.dirname(log.path)))[1:] == [
            "c0ffee-json.log.1.gz",
            "c0ffee-json.log.2.gz",
            "c0ffee-json.log.3.gz",
        ]
        r.drain(max_bytes=200)
        assert [x.message for x in r.lines] == names(50)
        assert fs.gaps == 0
        compressed = [x for x in r.restarts if x == "rotated"]
        assert len(compressed) == 3


def test_a_rotated_file_deleted_while_held_loses_nothing(log):
    log.max_files = 2  # P and P.1: the next rotation deletes P.1
    log.lines(30)
    with open_set(log) as fs:
        r = Reader(fs)
        fs.read(50)
        r.parser.reset(50)
        log.rotate()  # the file being read is P.1 now
        fs.read(50)  # ... and noticed as rotated
        r.parser.reset(100)
        log.lines(5)
        log.rotate()  # P.1 deleted while held: its bytes stay readable
        log.lines(5)
        r.drain()
        assert [x.message for x in r.lines][-10:] == names(10, 30)
        assert r.lines[0].message != b"line-0"  # it started after the two reads skipped above
        assert fs.gaps == 0


def test_a_file_deleted_before_the_reader_got_to_it_is_a_gap(log):
    log.max_files = 2
    log.lines(10)
    with open_set(log) as fs:
        r = Reader(fs)
        r.drain()
        for _ in range(3):  # P -> P.1 -> deleted, twice over, between two reads
            log.lines(10)
            log.rotate()
        log.lines(10)
        r.drain()
        got = [x.message for x in r.lines]
        assert got[:20] == names(20)  # the held file is read to its end
        assert got[-20:] == names(20, 30)  # then the oldest still there, and the current
        assert fs.gaps == 1
        assert "rotated away" in fs.gap_reasons[0]
        assert "gap" in r.restarts


def test_max_file_1_on_20_10_renames_over_the_one_rotated_file(log):
    log.max_files = 1
    log.lines(5)
    with open_set(log) as fs:
        r = Reader(fs)
        r.drain()
        log.lines(5)
        log.rotate()  # P -> P.1 (over the previous P.1)
        log.lines(5)
        r.drain()
        log.lines(5)
        log.rotate()
        log.lines(5)
        r.drain()
        assert [x.message for x in r.lines] == names(25)
        assert fs.gaps == 0


def test_a_file_truncated_in_place_is_read_again_from_its_start(log):
    log.lines(10)
    with open_set(log) as fs:
        r = Reader(fs)
        r.drain()
        ino = os.stat(log.path).st_ino
        log.truncate()
        log.lines(3)
        assert os.stat(log.path).st_ino == ino and os.path.getsize(log.path) < r.lines[-1].end
        r.drain()
        assert [x.message for x in r.lines] == names(13)
        assert r.restarts == ["start", "truncated"]
        assert r.lines[-1].end == os.path.getsize(log.path)


def test_conmon_renaming_a_new_file_over_the_current_one(tmp_path):
    log = Writer(str(tmp_path / "ctr.log"))
    log.lines(5)
    with open_set(log) as fs:
        r = Reader(fs)
        r.drain()
        log.lines(5)
        log.replace()  # the old file is unlinked at once: only the descriptor reads it
        log.lines(5)
        r.drain()
        assert [x.message for x in r.lines] == names(15)
        assert r.restarts == ["start", "rotated"]


def test_a_removed_container_is_read_to_its_last_line_then_exhausted(log):
    fd = os.open(log.path, os.O_RDONLY)  # opened the moment the file appeared
    log.lines(7)
    shutil.rmtree(os.path.dirname(log.path))  # docker run --rm: the directory is gone
    with open_set(log, fd=fd) as fs:
        r = Reader(fs)
        assert r.drain() == names(7)
        assert fs.exhausted
        assert fs.gaps == 0


def test_a_removed_container_while_behind_keeps_the_newest_file(log):
    log.lines(10)
    with open_set(log) as fs:
        r = Reader(fs)
        fs.read(100)
        r.parser.reset(100)
        log.rotate()
        log.lines(10)
        fs.read(100)  # notices the rotation: holds the new current file too
        r.parser.reset(200)
        shutil.rmtree(os.path.dirname(log.path))
        r.drain()
        assert [x.message for x in r.lines][-10:] == names(10, 10)
        assert fs.exhausted and fs.gaps == 0


def test_at_most_two_files_are_held_while_behind(log):
    log.lines(5)
    with open_set(log) as fs:
        r = Reader(fs)
        before = held_fds()
        for _ in range(4):
            log.lines(5)
            log.rotate(compress=True)
        log.lines(5)
        while True:
            chunk = fs.read(40)
            if chunk.restart:
                r.parser.reset(chunk.offset)
            r.lines += r.parser.feed(chunk.data)
            assert held_fds() <= before + 1  # the file read and the newest
            if not chunk.data:
                break
        assert [x.message for x in r.lines] == names(30)[-len(r.lines) :]
        assert len(r.lines) > 25


def test_position_hints(log):
    log.lines(10)
    with open_set(log) as fs:
        r = Reader(fs)
        r.drain()
        fid, _ = fs.position
        at = r.lines[4].end
    with open_set(log) as fs:
        assert not fs.resume(fid, at + 3)  # not a line start
        assert not fs.resume(fid, os.path.getsize(log.path) + 1)  # beyond the end
        assert not fs.resume(FileId(fid.dev, fid.ino + 12345), at)  # another file
        assert not fs.resume(FileId(fid.dev, fid.ino, compressed=True), at)
        assert fs.resume(fid, at)
        r = Reader(fs)
        assert r.drain() == names(5, 5)
        assert r.restarts == ["start"]


def test_a_hint_into_a_rotated_file_goes_on_through_the_newer_ones(log):
    log.lines(10)
    with open_set(log) as fs:
        r = Reader(fs)
        r.drain()
        fid, at = fs.position[0], r.lines[2].end
    log.rotate()
    log.lines(10)
    with open_set(log) as fs:
        assert fs.resume(fid, at)
        r = Reader(fs)
        assert r.drain() == names(17, 3)
        assert r.restarts == ["start", "rotated"]


def test_constructing_without_a_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        NumberedFiles(str(tmp_path / "nothing.log"), JSON_FILE)


def test_the_held_newest_file_compressed_since_is_read_once_from_the_descriptor(log):
    log.lines(10)
    with open_set(log) as fs:
        r = Reader(fs)
        fs.read(100)
        r.parser.reset(100)
        log.rotate()  # R -> P.1; N1 is the current file
        log.lines(10)
        fs.read(100)  # notices: R is final, N1 is held as the newest
        r.parser.reset(200)
        log.rotate(compress=True)  # N1 -> P.1.gz, a copy with another inode; R -> P.2
        log.lines(10)
        r.drain()
        got = [x.message for x in r.lines]
        assert got == names(30)[-len(got) :] and got[-20:] == names(20, 10)
        assert len(set(got)) == len(got)
        assert fs.gaps == 0


def test_a_newest_file_that_rotated_while_held_still_leads_to_the_files_after_it(log):
    log.lines(10)
    with open_set(log) as fs:
        r = Reader(fs)
        fs.read(100)
        r.parser.reset(100)
        log.rotate()
        log.lines(10)
        fs.read(100)  # N1 held as the newest
        r.parser.reset(200)
        for _ in range(2):  # N1 -> P.1 -> P.2 and N2 -> P.1, while held
            log.rotate()
            log.lines(10)
        r.drain()
        got = [x.message for x in r.lines]
        assert got[-30:] == names(30, 10)
        assert r.restarts[-3:] == ["rotated"] * 3 and fs.gaps == 0
