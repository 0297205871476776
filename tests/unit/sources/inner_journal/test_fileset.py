"""The held journal files of a root: bounded work per scan, and problems as counted states."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.sources.inner_journal.containment import list_journals
from bridge.sources.inner_journal.fileset import MAX_LISTED, FileSet, Reports, Tally

MID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def root() -> Iterator[tuple[Path, int]]:
    """A root on tmpfs where there is one: making thousands of names on disk is slow here."""
    path = Path(tempfile.mkdtemp(dir=_ram_dir()))
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    yield path, fd
    os.close(fd)
    shutil.rmtree(path)


def _ram_dir() -> str | None:
    shm = "/dev/shm"
    return shm if os.access(shm, os.W_OK) else None


def machine_dir(path: Path, machine: str = MID) -> Path:
    directory = path / "var/log/journal" / machine
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_hostile_names_are_one_problem_of_each_kind(root: tuple[Path, int]) -> None:
    path, fd = root
    directory = machine_dir(path)
    for i in range(3000):
        (directory / f"h{i:05d}.journal").symlink_to("/etc/shadow")
    (directory / "system.journal").write_bytes(b"x")
    files = FileSet(fd)
    assert files.scan()
    # the file journald writes goes first, whatever the flood of names around it
    assert [h.name.name for h in files.held.values()] == ["system.journal"]
    assert files.problems["file"].count == 255  # the rest of what may be opened
    assert files.problems["names"].count == 2  # the listing and the opening were both cut
    files.close()


def test_the_work_of_a_scan_is_bounded(root: tuple[Path, int]) -> None:
    path, fd = root
    for m in range(40):
        directory = machine_dir(path, f"{m:032x}")
        for i in range(300):
            (directory / f"{i}.journal").touch()
    ticks = []
    listing = list_journals(fd, per_dir=4096, total=5000, tick=lambda: ticks.append(1))
    assert 4900 < len(listing.names) < 5000  # the machine directories' names count too
    assert listing.unlisted > 0
    assert len(ticks) >= 5000 // 256 - 1
    files = FileSet(fd, max_files=8, max_open=100, max_listed=5000)
    files.scan()
    assert len(files.held) == 8
    assert files.problems["max_files"].count == 92
    files.close()


def test_a_rename_changes_no_file_and_no_report(root: tuple[Path, int]) -> None:
    path, fd = root
    directory = machine_dir(path)
    (directory / "system.journal").write_bytes(b"x")
    for i in range(10):
        (directory / f"h{i}.journal").symlink_to("/etc/shadow")
    files = FileSet(fd)
    reports = Reports()
    assert files.scan()
    reports.update("file", files.problems.get("file"))
    assert [(k, c, n) for k, c, n, _ in reports.due(0.0)] == [("file", 10, 10)]
    os.rename(directory / "h0.journal", directory / "r0.journal")
    os.rename(directory / "system.journal", directory / "system@1.journal")
    assert not files.scan()  # the same file under another name: still held, nothing reopened
    reports.update("file", files.problems.get("file"))
    assert reports.due(1.0) == []
    files.close()


def test_reports_come_again_on_a_change_at_most_every_interval() -> None:
    reports = Reports(relog_seconds=60)
    reports.update("bad", Tally(1, ["a: Bad message"]))
    [(kind, count, new, message)] = reports.due(0.0)
    assert (kind, count, new, message) == ("bad", 1, 1, "a: Bad message; skipped")
    reports.update("bad", Tally(2, ["a: x", "b: y"]))
    assert reports.due(10.0) == []  # changed, but reported a moment ago
    [(_, count, new, message)] = reports.due(61.0)
    assert (count, new) == (2, 1)
    assert message == "2 journal files that cannot be read (e.g. a: x; b: y); skipped"
    reports.update("bad", None)
    assert reports.due(200.0) == []
    reports.update("bad", Tally(1, ["c: z"]))
    assert [(c, n) for _, c, n, _ in reports.due(201.0)] == [(1, 1)]


@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=50))
def test_reports_are_bounded_by_time_whatever_the_counts(counts: list[int]) -> None:
    reports = Reports(relog_seconds=60)
    lines = 0
    for second, count in enumerate(counts):
        reports.update("file", Tally(count, ["x"]) if count else None)
        lines += len(reports.due(float(second)))
    assert lines <= 1 + len(counts) // 60


def test_a_directory_of_many_names_costs_bounded_time(root: tuple[Path, int]) -> None:
    """100,000 names in one journal directory (20,000 where there is no tmpfs to make them)."""
    path, fd = root
    directory = machine_dir(path)
    for i in range(100_000 if _ram_dir() else 20_000):
        os.close(os.open(directory / f"h{i:07d}.journal", os.O_CREAT | os.O_WRONLY, 0o600))
    beats: list[float] = []
    files = FileSet(fd, tick=lambda: beats.append(time.monotonic()))
    started = time.monotonic()
    files.scan()
    took = time.monotonic() - started
    files.close()
    assert took < 1.0, took
    assert files.problems["names"].count == 2  # the listing and the opening were both cut
    assert len(beats) >= MAX_LISTED // 256 - 1
