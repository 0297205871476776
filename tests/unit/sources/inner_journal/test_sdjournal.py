"""sd-journal over fds: the same answers as python-systemd's path-based reader, no fd lost."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from systemd import _reader

from bridge.sources.inner_journal.sdjournal import FdJournal, field_name

from .journals import entry, needs_journal_remote, write

pytestmark = needs_journal_remote


def fds_open() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_entries_fields_and_cursors_are_those_of_python_systemd(tmp_path: Path) -> None:
    path = write(
        tmp_path / "system.journal",
        [entry(1), entry(2, "two", EXTRA="a"), entry(3, b"bin\x00ary\n", EXTRA="b")],
    )
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    reference = _reader._Reader(0, files=[str(path)])
    ours = FdJournal([fd])
    try:
        seen = []
        while reference._next(1):
            assert ours._next(1) == 1
            assert ours._get_all() == reference._get_all()
            assert ours._get_realtime() == reference._get_realtime()
            assert ours._get_monotonic()[0] == reference._get_monotonic()[0]
            assert ours._get_cursor() == reference._get_cursor()
            seen.append(ours._get_cursor())
        assert ours._next(1) == 0
        ours.seek_cursor(seen[1])
        assert ours._next(1) and ours.test_cursor(seen[1]) and not ours.test_cursor(seen[0])
        ours.seek_head()
        assert ours._next(1) and ours._get_all()["MESSAGE"] == b"line 1"
        ours.data_threshold = 4
        ours._next(1)
        assert ours._get_all()["MESSAGE"] == b"two"  # uncompressed small fields are whole
    finally:
        reference.close()
        ours.close()
    assert os.fstat(fd)  # the caller's fd is the caller's
    os.close(fd)


def test_pairs_are_every_field_in_order_the_same_as_python_systemd_s(tmp_path: Path) -> None:
    path = write(
        tmp_path / "system.journal",
        [entry(1, EXTRA="a"), entry(2, b"bin\x00ary\n", OTHER="b", EXTRA="c")],
    )
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    reference = _reader._Reader(0, files=[str(path)])
    ours = FdJournal([fd])
    try:
        while reference._next(1):
            assert ours._next(1) == 1
            pairs = ours.get_pairs()
            assert dict(pairs) == reference._get_all()  # no field repeats in these
            assert [name for name, _ in pairs].count("MESSAGE") == 1
            assert ours.get_pairs() == pairs  # read again: the same, from the first field
    finally:
        reference.close()
        ours.close()
        os.close(fd)


def test_a_file_that_is_not_a_journal_raises_and_leaks_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.journal"
    bad.write_bytes(b"root:x:0:0\n" * 1000)
    fd = os.open(bad, os.O_RDONLY | os.O_CLOEXEC)
    before = fds_open()
    for _ in range(20):
        with pytest.raises(OSError):
            FdJournal([fd])
    assert fds_open() == before
    os.close(fd)


def test_open_and_close_leak_no_fd(tmp_path: Path) -> None:
    path = write(tmp_path / "system.journal", [entry(1)])
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    before = fds_open()
    for _ in range(20):
        with FdJournal([fd]) as journal:
            assert journal._next(1)
    assert fds_open() == before
    os.close(fd)


def test_a_closed_journal_refuses_get_pairs(tmp_path: Path) -> None:
    path = write(tmp_path / "system.journal", [entry(1)])
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    journal = FdJournal([fd])
    assert journal._next(1) and journal.get_pairs()
    journal.close()
    with pytest.raises(OSError) as raised:
        journal.get_pairs()
    assert raised.value.errno == errno.EBADF
    os.close(fd)


@given(st.lists(st.binary(max_size=200), max_size=50))
def test_field_names_are_decoded_and_only_short_ones_kept(raws: list[bytes]) -> None:
    names: dict[bytes, str] = {}
    for raw in raws:
        try:
            name = field_name(raw, names)
        except ValueError:
            assert not raw.isascii()
            continue
        assert name == raw.decode("ascii")
    assert all(len(raw) <= 64 for raw in names)  # a forged file's long names are not kept
    assert len(names) <= 4096
