"""The chain (chain.py), as a NumberedFiles reads it: every file handed over by the watcher at its
creation, and the files it missed, placed by names or counted."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from bridge.sources.logfiles.rotation.numbered import NumberedFiles

from ..rotating import Reader, Writer, names
from .test_numbered import open_set


class Watcher:
    """What the watcher does for a Docker log: each new file at the path opened at once and
    offered; a file gone before it could be opened reported as missed."""

    def __init__(self, log: Writer) -> None:
        from bridge.sources.logfiles.rotation.replaced import Replacements

        self.log = log
        self.replacements = Replacements(live=lambda: True)
        self.first = os.open(log.path, os.O_RDONLY | os.O_CLOEXEC)

    def rotate(self, missed_before: bool = False) -> None:
        """A new file, opened at once; `missed_before`: the one before it was not (the watcher
        notices that after it has handed this one over, as handover.py does)."""
        self.log.rotate()
        self.replacements.offer(os.open(self.log.path, os.O_RDONLY | os.O_CLOEXEC))
        if missed_before:
            self.replacements.missed()


@contextlib.contextmanager
def chained(tmp_path, max_files: int) -> Iterator[tuple[Writer, Watcher, NumberedFiles, Reader]]:
    """A log whose files the watcher hands over, and its set reading them (a claimed container)."""
    d = tmp_path / "c0ffee"
    d.mkdir()
    log = Writer(str(d / "c0ffee-json.log"), max_files=max_files)
    w = Watcher(log)
    with open_set(log, fd=w.first, replacements=w.replacements) as fs:
        yield log, w, fs, Reader(fs)


def test_files_deleted_before_the_reader_got_to_them_are_read_from_the_chain(tmp_path):
    with chained(tmp_path, max_files=2) as (log, w, fs, r):  # deleted two rotations on
        log.lines(3)
        assert r.drain() == names(3)
        for _ in range(6):  # each file gone long before the reader looks again
            log.lines(4)
            w.rotate()
        log.lines(2)
        r.drain()
        assert [x.message for x in r.lines] == names(3 + 6 * 4 + 2)
        assert fs.gaps == 0
        assert r.restarts == ["start"] + ["rotated"] * 6


def test_a_file_the_watcher_missed_is_found_by_name_while_it_has_one(tmp_path):
    with chained(tmp_path, max_files=3) as (log, w, fs, r):
        log.lines(2)
        w.rotate()
        log.lines(2)
        log.rotate()  # not opened in time: the watcher's open found the next file
        log.lines(2)
        w.rotate(missed_before=True)
        log.lines(1)
        r.drain()
        assert [x.message for x in r.lines] == names(7)
        assert fs.gaps == 0


def test_a_file_the_watcher_missed_and_no_name_leads_to_is_a_gap_never_a_silent_one(tmp_path):
    with chained(tmp_path, max_files=2) as (log, w, fs, r):
        log.lines(2)
        w.rotate()
        log.lines(2)
        log.rotate()
        log.lines(2)  # lost: in a file rotated, then deleted, and never opened
        log.rotate()
        log.lines(1)  # in a file never opened either, but still named P.1
        w.rotate(missed_before=True)
        r.drain()
        assert [x.message for x in r.lines] == names(4) + names(7)[-1:]
        assert fs.gaps == 1 and r.restarts == ["start", "rotated", "gap", "rotated"]


def hand_over_late(w: Watcher) -> None:
    """The watcher, behind by several rotations, handles an old file's event only now: it opens
    the file at the path and `.1` ahead of it (handover.py's _rotated). The events still queued
    then count the files handed ahead; one left over is reported missed, after both."""
    for name in (w.log.path + ".1", w.log.path):
        w.replacements.offer(os.open(name, os.O_RDONLY | os.O_CLOEXEC))


@pytest.mark.parametrize("max_files", [2, 4])  # the missed file deleted, or still named P.2
def test_a_file_missed_while_the_watcher_was_several_rotations_behind_is_placed_by_names(
    tmp_path, max_files
):
    with chained(tmp_path, max_files=max_files) as (log, w, fs, r):
        log.lines(2)  # F1, handed over first
        for _ in range(3):  # F2 (its event handled late), F3, F4
            log.rotate()
            log.lines(2)
        hand_over_late(w)  # F3 from P.1, F4 from P
        w.replacements.missed()  # F4's event: nothing new at the path, nothing handed ahead
        log.lines(1)
        r.drain()
        got = [x.message for x in r.lines]
        if max_files == 2:  # F2's lines are lost, and counted where they were lost
            assert got == names(2) + names(5, 4)
            assert fs.gaps == 1 and r.restarts == ["start", "gap", "rotated"]
            assert fs.gap_reasons == [
                f"a log file of {log.path} was rotated away before it was opened"
            ]
        else:  # F2 read from its name: nothing lost
            assert got == names(9)
            assert fs.gaps == 0 and r.restarts == ["start"] + ["rotated"] * 3


def test_two_files_missed_at_two_boundaries_are_two_gaps(tmp_path):
    with chained(tmp_path, max_files=2) as (log, w, fs, r):
        log.lines(2)  # F1
        for _ in range(3):  # F2 lost, F3, F4
            log.rotate()
            log.lines(2)
        hand_over_late(w)  # F3, F4
        w.replacements.missed()  # F2, told at F4's event
        for _ in range(3):  # F5 lost, F6, F7
            log.rotate()
            log.lines(2)
        hand_over_late(w)  # F6, F7
        w.replacements.missed()  # F5, told at F7's event
        r.drain()
        assert [x.message for x in r.lines] == names(2) + names(4, 4) + names(4, 10)
        # (F3's and F4's names are gone: which of F1->F3, F3->F4 lost lines, no name tells)
        assert fs.gaps == 2 and r.restarts.count("gap") == 2 and r.restarts[-1] == "rotated"


def test_a_missed_report_where_the_names_prove_nothing_was_lost_still_counts(tmp_path):
    with chained(tmp_path, max_files=5) as (log, w, fs, r):
        log.lines(2)
        for _ in range(2):
            log.lines(2)
            w.rotate()
        w.replacements.missed()  # (a rescan forgot a file handed ahead of its event)
        r.drain()
        assert [x.message for x in r.lines] == names(6)
        assert fs.gaps == 1 and r.restarts == ["start", "rotated", "rotated"]
