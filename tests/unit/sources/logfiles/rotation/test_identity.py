"""identity: how a file is known (FileId, Listed), and Opened, one open file, plain or .gz."""

from __future__ import annotations

import contextlib
import gzip
import os

import pytest

from bridge.sources.logfiles.rotation.identity import FileId, Listed, Opened
from bridge.sources.logfiles.safe_open import NotRegularFile


def test_a_file_is_known_by_its_inode_and_whether_its_bytes_are_decompressed(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"abc\n")
    st = os.stat(path)
    assert FileId.of(st) == FileId(st.st_dev, st.st_ino, False) != FileId.of(st, True)
    assert Listed(1, FileId.of(st, True)).gz and not Listed(0, FileId.of(st)).gz


def test_a_plain_file_is_read_at_an_offset_of_its_own(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"0123456789")
    f = Opened.open(str(path), 0, False)
    assert f.id == FileId.of(os.stat(path)) and not f.final
    assert f.read(4) == b"0123" and f.offset == 4
    assert f.pread(8, 10) == b"89" and f.offset == 4  # pread leaves the offset alone
    assert f.head(3) == b"012" and f.size() == 10 and not f.truncated()
    os.truncate(path, 2)
    assert f.truncated()
    f.close()
    f.close()  # idempotent
    assert f.fd == -1


def test_a_gz_file_is_read_decompressed_and_cannot_be_seeked(tmp_path):
    path = tmp_path / "log.1.gz"
    path.write_bytes(gzip.compress(b"line one\nline two\n"))
    f = Opened.open(str(path), 1, True)
    assert f.final and f.id.compressed
    assert f.head(4) == b"line" and Opened.gz_head(str(path), 4) == b"line"
    assert f.pread(0, 4) == b""
    assert f.read(100) == b"line one\nline two\n" and f.offset == 18
    assert f.read(100) == b"" and not f.damaged
    f.close()


def test_a_damaged_gz_stops_with_a_reason_and_never_raises(tmp_path):
    data = gzip.compress(os.urandom(4096) + b"tail\n")  # incompressible: the cut loses data
    path = tmp_path / "log.2.gz"
    path.write_bytes(data[: len(data) // 2])
    f = Opened.open(str(path), 2, True)
    got = b""
    while chunk := f.read(1000):
        got += chunk
    assert f.damaged and len(got) < 4096 + 5
    assert f.read(1000) == b""  # and it stays stopped
    f.close()
    path.write_bytes(b"not gzip at all")
    with contextlib.closing(Opened.open(str(path), 2, True)) as f2:
        assert f2.read(100) == b"" and f2.damaged
    assert Opened.gz_head(str(tmp_path / "absent.gz"), 4) == b""


@pytest.mark.timeout(10)  # opened blocking, a FIFO would hang here
def test_a_name_that_leads_to_no_file_is_not_opened(tmp_path):
    os.mkfifo(tmp_path / "log.1")
    os.symlink("/etc/passwd", tmp_path / "log.2")
    os.mkfifo(tmp_path / "log.3.gz")
    with pytest.raises(NotRegularFile):
        Opened.open(str(tmp_path / "log.1"), 1, False)
    with pytest.raises(OSError):  # ELOOP: never followed
        Opened.open(str(tmp_path / "log.2"), 2, False)
    assert Opened.gz_head(str(tmp_path / "log.3.gz"), 4) == b""
