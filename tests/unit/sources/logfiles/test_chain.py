"""ChainFileSet on real files replaced the way conmon replaces ctr.log."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.record import STDOUT
from bridge.sources.logfiles.chain import ChainFileSet
from bridge.sources.logfiles.formats.k8sfile import K8S_FILE
from bridge.sources.logfiles.handoff import HandOff

from .encode import Rec, k8s_line
from .rotating import Conmon, Reader, names


@pytest.fixture
def log(tmp_path):
    d = tmp_path / "userdata"
    d.mkdir()
    return Conmon(str(d / "ctr.log"))


def held_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def chain(log: Conmon, handoff: HandOff, first: int | None = None) -> ChainFileSet:
    return ChainFileSet(
        log.path, K8S_FILE, fd=log.opened() if first is None else first, handoff=handoff
    )


def rotate(log: Conmon, handoff: HandOff | None, lines: int = 5) -> None:
    """conmon replaces ctr.log; the watcher opens the new file and hands it over."""
    log.rotate()
    if handoff is not None:
        handoff.offer(log.opened())
    log.lines(lines)


def test_files_replaced_while_behind_are_read_in_order_through_the_hand_off(log):
    before = held_fds()
    handoff = HandOff(live=lambda: True)
    first = log.opened()  # opened the moment ctr.log appeared
    log.lines(5)
    rotate(log, handoff)
    rotate(log, handoff)
    with chain(log, handoff, first) as fs:
        r = Reader(fs)
        assert r.drain() == names(15)  # two of the three files have no name any more
        assert r.restarts == ["start", "rotated", "rotated"]
        assert fs.gaps == 0 and fs.exhausted is False
        log.lines(2)
        assert r.drain() == names(2, 15)
    assert held_fds() == before


def test_the_reader_follows_rotations_as_they_happen(log):
    handoff = HandOff(live=lambda: True)
    with chain(log, handoff) as fs:
        r = Reader(fs)
        for _ in range(4):
            log.lines(3)
            assert r.drain(max_bytes=50) == names(3, log.n - 3)
            rotate(log, handoff, lines=0)
        assert fs.gaps == 0
        assert r.restarts == ["start", "rotated", "rotated", "rotated"]


def test_replaced_with_nothing_handed_over_yet_waits_for_the_watcher(log):
    handoff = HandOff(live=lambda: True)
    with chain(log, handoff) as fs:
        r = Reader(fs)
        log.lines(2)
        rotate(log, None, lines=0)  # the watcher has not got to it yet
        assert r.drain() == names(2)
        assert fs.exhausted  # at the end of a final file: nothing known after it
        handoff.offer(log.opened())
        log.lines(1)
        assert r.drain() == names(1, 2)
        assert fs.gaps == 0


def test_without_a_watch_the_path_is_looked_at(log):
    handoff = HandOff(live=lambda: False)  # the inotify limit: nobody hands files over
    with chain(log, handoff) as fs:
        r = Reader(fs)
        log.lines(2)
        rotate(log, None, lines=2)
        assert r.drain() == names(4)
        assert r.restarts == ["start", "rotated"]


def test_a_file_the_watcher_missed_is_a_gap(log):
    handoff = HandOff(live=lambda: True)
    with chain(log, handoff) as fs:
        r = Reader(fs)
        log.lines(2)
        rotate(log, None, lines=2)  # replaced again before the watcher could open it
        rotate(log, handoff, lines=2)
        handoff.missed()  # the watcher notices after handing over the newer file
        assert r.drain() == names(2) + names(2, 4)
        assert r.restarts == ["start", "gap"]
        assert fs.gaps == 1


def test_a_miss_noticed_after_the_newer_file_was_taken_still_counts(log):
    handoff = HandOff(live=lambda: True)
    with chain(log, handoff) as fs:
        r = Reader(fs)
        log.lines(2)
        rotate(log, handoff, lines=2)
        assert r.drain() == names(4)
        handoff.missed()
        log.lines(1)
        assert r.drain() == names(1, 4)
        assert fs.gaps == 1
        assert r.restarts == ["start", "rotated"]  # counted, but no parser reset mid-file


def test_past_the_bound_the_oldest_file_waiting_is_dropped(log):
    handoff = HandOff(live=lambda: True, max_files=2)
    first = log.opened()
    log.lines(1)
    for _ in range(3):
        rotate(log, handoff, lines=1)
    assert handoff.dropped == 1
    with chain(log, handoff, first) as fs:
        r = Reader(fs)
        assert r.drain() == [b"line-0", b"line-2", b"line-3"]
        assert r.restarts == ["start", "gap", "rotated"]


def test_a_file_handed_over_after_a_newer_one_was_opened_is_dropped(log):
    older = log.opened()
    log.lines(1)
    rotate(log, None, lines=1)  # the set opens the path: the newer file
    handoff = HandOff(live=lambda: True)
    with ChainFileSet(log.path, K8S_FILE, handoff=handoff) as fs:
        handoff.offer(older)  # the watcher's open raced with the claim
        r = Reader(fs)
        assert r.drain() == [b"line-1"]
        assert fs.gaps == 1


def test_settle_gets_what_the_watcher_hands_over_meanwhile(log):
    pending: list[int] = []
    handoff = HandOff(live=lambda: True)

    def settle(timeout: float) -> bool:
        for fd in pending:
            handoff.offer(fd)
        pending.clear()
        return True

    handoff.settle = settle
    with chain(log, handoff) as fs:
        r = Reader(fs)
        log.lines(1)
        log.rotate()
        pending.append(log.opened())
        log.lines(1)
        assert r.drain() == [b"line-0"]
        assert fs.settle() is True
        assert r.drain() == [b"line-1"]
        assert fs.settle() is False


def test_start_at_finds_the_file_and_the_line(log):
    log.per_read = 3  # three lines share each timestamp
    handoff = HandOff(live=lambda: True)
    first = log.opened()
    log.lines(9)
    rotate(log, handoff, lines=9)
    rotate(log, handoff, lines=9)
    with chain(log, handoff, first) as fs:
        fs.start_at(log.ts(12))  # line-12 is the first of its timestamp, in the second file
        r = Reader(fs)
        assert r.drain() == names(15, 12)
        assert r.restarts == ["start", "rotated"]
    with ChainFileSet(log.path, K8S_FILE, handoff=HandOff()) as fs:
        fs.start_at(0)  # before everything: the file's start
        assert Reader(fs).drain() == names(9, 18)


def test_a_truncated_file_is_read_again_from_its_start(log):
    with chain(log, HandOff(live=lambda: True)) as fs:
        r = Reader(fs)
        log.lines(3)
        r.drain()
        with open(log.path, "r+b") as f:
            f.truncate(0)
        log.lines(1)
        assert r.drain() == [b"line-3"]
        assert r.restarts == ["start", "truncated"]


# Each step: write n lines, then maybe rotate: the watcher opens the new file (True) or misses
# it (False: replaced again before the watcher got to it); reads of random sizes in between.
steps = st.lists(
    st.tuples(st.integers(0, 6), st.sampled_from([None, True, True, False]), st.integers(1, 400)),
    max_size=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps)
def test_every_line_of_every_file_handed_over_comes_once_in_order(tmp_path, plan):
    d = tmp_path / os.urandom(4).hex()
    d.mkdir()
    log = Conmon(str(d / "ctr.log"))
    handoff = HandOff(live=lambda: True)
    expected: list[bytes] = []
    lost = False
    with chain(log, handoff) as fs:
        r = Reader(fs)
        got: list[bytes] = []
        for n, rotation, read_size in plan:
            start = log.n
            log.lines(n)
            expected += names(n, start)
            got += r.drain(read_size)
            if rotation is None:
                continue
            log.rotate()
            if rotation:
                handoff.offer(log.opened())
            else:  # replaced again, with a line, before the watcher could open it: lost
                with open(log.path, "ab") as f:
                    f.write(k8s_line(Rec(STDOUT, log.ts(log.n), b"lost")))
                log.rotate()
                handoff.offer(log.opened())
                handoff.missed()
                lost = True
        got += r.drain(1000)
        assert got == expected
        assert (fs.gaps > 0) == lost
