"""safe_open: only regular files get in from a directory containers write to."""

from __future__ import annotations

import os

import pytest

from bridge.sources.logfiles.safe_open import (
    NotRegularFile,
    OpenFailed,
    open_file,
    open_regular,
    read_config,
)


def test_a_regular_file_is_opened_with_its_stat(tmp_path):
    path = tmp_path / "ctr.log"
    path.write_bytes(b"line\n")
    fd, st = open_regular(str(path))
    try:
        assert st.st_size == 5 and os.read(fd, 10) == b"line\n"
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: None, "ENOENT"),
        (lambda p: os.symlink("/etc/passwd", p), "ELOOP"),  # a container's symlink to the host
        (os.mkfifo, "not a regular file"),  # its open would block without O_NONBLOCK
        (os.mkdir, "not a regular file"),
    ],
)
def test_what_is_not_a_regular_file_is_refused_with_a_one_line_reason(tmp_path, make, reason):
    path = str(tmp_path / "ctr.log")
    make(path)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OpenFailed) as refused:
        open_regular(path)
    assert str(refused.value) == reason
    assert len(os.listdir("/proc/self/fd")) == before  # nothing left open


@pytest.mark.timeout(10)  # a FIFO opened blocking would hang here
@pytest.mark.parametrize(
    ("make", "refused"),
    [
        (lambda p: None, FileNotFoundError),  # the type tells a file gone from a non-file
        (lambda p: os.symlink("/etc/passwd", p), OSError),  # ELOOP
        (os.mkfifo, NotRegularFile),
        (os.mkdir, NotRegularFile),
    ],
)
def test_open_file_refuses_the_same_with_an_oserror(tmp_path, make, refused):
    path = str(tmp_path / "ctr.log.1")
    make(path)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(refused):
        open_file(path)
    assert len(os.listdir("/proc/self/fd")) == before


def test_open_file_hands_a_regular_file_over_blocking(tmp_path):
    path = tmp_path / "ctr.log.1"
    path.write_bytes(b"line\n")
    fd, st = open_file(str(path))
    try:
        assert os.get_blocking(fd) and st.st_size == 5 and os.read(fd, 10) == b"line\n"
    finally:
        os.close(fd)


def test_a_config_is_read_whole_or_not_at_all(tmp_path):
    path = tmp_path / "config.v2.json"
    path.write_bytes(b"{}")
    assert read_config(str(path), 2) == b"{}"
    assert read_config(str(path), 1) is None  # bigger than the bound
    assert read_config(str(tmp_path / "absent.json"), 10) is None
    os.symlink("/etc/passwd", tmp_path / "hostconfig.json")
    assert read_config(str(tmp_path / "hostconfig.json"), 1 << 20) is None
