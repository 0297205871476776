"""ReplacedFiles on real files replaced the way conmon replaces ctr.log, and Replacements: the
files the watcher opened after a container's first, in order and bounded."""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.record import STDOUT
from bridge.sources.logfiles.formats.k8sfile import K8S_FILE
from bridge.sources.logfiles.rotation.replaced import (
    HeldBudget,
    ReplacedFiles,
    Replacement,
    Replacements,
)

from ..encode import Rec, k8s_line
from ..rotating import Conmon, Reader, names


@pytest.fixture
def log(tmp_path):
    d = tmp_path / "userdata"
    d.mkdir()
    return Conmon(str(d / "ctr.log"))


def held_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def replaced(log: Conmon, replacements: Replacements, first: int | None = None) -> ReplacedFiles:
    return ReplacedFiles(
        log.path, K8S_FILE, fd=log.opened() if first is None else first, replacements=replacements
    )


def rotate(log: Conmon, replacements: Replacements | None, lines: int = 5) -> None:
    """conmon replaces ctr.log; the watcher opens the new file and hands it over."""
    log.rotate()
    if replacements is not None:
        replacements.offer(log.opened())
    log.lines(lines)


def test_files_replaced_while_behind_are_read_in_order_through_the_replacements(log):
    before = held_fds()
    replacements = Replacements(live=lambda: True)
    first = log.opened()  # opened the moment ctr.log appeared
    log.lines(5)
    rotate(log, replacements)
    rotate(log, replacements)
    with replaced(log, replacements, first) as fs:
        r = Reader(fs)
        assert r.drain() == names(15)  # two of the three files have no name any more
        assert r.restarts == ["start", "rotated", "rotated"]
        assert fs.gaps == 0 and fs.exhausted is False
        log.lines(2)
        assert r.drain() == names(2, 15)
    assert held_fds() == before


def test_the_reader_follows_rotations_as_they_happen(log):
    replacements = Replacements(live=lambda: True)
    with replaced(log, replacements) as fs:
        r = Reader(fs)
        for _ in range(4):
            log.lines(3)
            assert r.drain(max_bytes=50) == names(3, log.n - 3)
            rotate(log, replacements, lines=0)
        assert fs.gaps == 0
        assert r.restarts == ["start", "rotated", "rotated", "rotated"]


def test_replaced_with_nothing_handed_over_yet_waits_for_the_watcher(log):
    replacements = Replacements(live=lambda: True)
    with replaced(log, replacements) as fs:
        r = Reader(fs)
        log.lines(2)
        rotate(log, None, lines=0)  # the watcher has not got to it yet
        assert r.drain() == names(2)
        assert fs.exhausted  # at the end of a final file: nothing known after it
        replacements.offer(log.opened())
        log.lines(1)
        assert r.drain() == names(1, 2)
        assert fs.gaps == 0


def test_without_a_watch_the_path_is_looked_at(log):
    replacements = Replacements(live=lambda: False)  # the inotify limit: nobody hands files over
    with replaced(log, replacements) as fs:
        r = Reader(fs)
        log.lines(2)
        rotate(log, None, lines=2)
        assert r.drain() == names(4)
        assert r.restarts == ["start", "rotated"]


def test_a_file_the_watcher_missed_is_a_gap(log):
    replacements = Replacements(live=lambda: True)
    with replaced(log, replacements) as fs:
        r = Reader(fs)
        log.lines(2)
        rotate(log, None, lines=2)  # replaced again before the watcher could open it
        rotate(log, replacements, lines=2)
        replacements.missed()  # the watcher notices after handing over the newer file
        assert r.drain() == names(2) + names(2, 4)
        assert r.restarts == ["start", "gap"]
        assert fs.gaps == 1


def test_a_miss_noticed_after_the_newer_file_was_taken_still_counts(log):
    replacements = Replacements(live=lambda: True)
    with replaced(log, replacements) as fs:
        r = Reader(fs)
        log.lines(2)
        rotate(log, replacements, lines=2)
        assert r.drain() == names(4)
        replacements.missed()
        log.lines(1)
        assert r.drain() == names(1, 4)
        assert fs.gaps == 1
        assert r.restarts == ["start", "rotated"]  # counted, but no parser reset mid-file


def test_past_the_bound_the_oldest_file_waiting_is_dropped(log):
    replacements = Replacements(live=lambda: True, max_files=2)
    first = log.opened()
    log.lines(1)
    for _ in range(3):
        rotate(log, replacements, lines=1)
    assert replacements.dropped == 1
    with replaced(log, replacements, first) as fs:
        r = Reader(fs)
        assert r.drain() == [b"line-0", b"line-2", b"line-3"]
        assert r.restarts == ["start", "gap", "rotated"]


def test_a_file_handed_over_after_a_newer_one_was_opened_is_dropped(log):
    older = log.opened()
    log.lines(1)
    rotate(log, None, lines=1)  # the set opens the path: the newer file
    replacements = Replacements(live=lambda: True)
    with ReplacedFiles(log.path, K8S_FILE, replacements=replacements) as fs:
        replacements.offer(older)  # the watcher's open raced with the claim
        r = Reader(fs)
        assert r.drain() == [b"line-1"]
        assert fs.gaps == 1


def test_settle_gets_what_the_watcher_hands_over_meanwhile(log):
    pending: list[int] = []
    replacements = Replacements(live=lambda: True)

    def settle(timeout: float) -> bool:
        for fd in pending:
            replacements.offer(fd)
        pending.clear()
        return True

    replacements.settle = settle
    with replaced(log, replacements) as fs:
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
    replacements = Replacements(live=lambda: True)
    first = log.opened()
    log.lines(9)
    rotate(log, replacements, lines=9)
    rotate(log, replacements, lines=9)
    with replaced(log, replacements, first) as fs:
        fs.start_at(log.ts(12))  # line-12 is the first of its timestamp, in the second file
        r = Reader(fs)
        assert r.drain() == names(15, 12)
        assert r.restarts == ["start", "rotated"]
    with ReplacedFiles(log.path, K8S_FILE, replacements=Replacements()) as fs:
        fs.start_at(0)  # before everything: the file's start
        assert Reader(fs).drain() == names(9, 18)


def test_a_truncated_file_is_read_again_from_its_start(log):
    with replaced(log, Replacements(live=lambda: True)) as fs:
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
    replacements = Replacements(live=lambda: True)
    expected: list[bytes] = []
    lost = False
    with replaced(log, replacements) as fs:
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
                replacements.offer(log.opened())
            else:  # replaced again, with a line, before the watcher could open it: lost
                with open(log.path, "ab") as f:
                    f.write(k8s_line(Rec(STDOUT, log.ts(log.n), b"lost")))
                log.rotate()
                replacements.offer(log.opened())
                replacements.missed()
                lost = True
        got += r.drain(1000)
        assert got == expected
        assert (fs.gaps > 0) == lost


# -- Replacements ------------------------------------------------------------------------


def new_file(tmp_path, size: int = 0) -> int:
    path = tmp_path / os.urandom(4).hex()
    path.write_bytes(b"x" * size)
    return os.open(path, os.O_RDONLY)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_files_come_out_in_the_order_they_went_in_each_once(tmp_path):
    h = Replacements()
    fds = [new_file(tmp_path) for _ in range(3)]
    for fd in fds:
        h.offer(fd)
    assert h.take() == ([Replacement(fd, False) for fd in fds], False)
    assert h.take() == ([], False)
    for fd in fds:
        os.close(fd)


def test_past_the_file_bound_the_oldest_is_closed_and_the_next_marked(tmp_path):
    h = Replacements(max_files=2)
    fds = [new_file(tmp_path) for _ in range(4)]
    for fd in fds:
        h.offer(fd)
    assert h.take() == ([Replacement(fds[2], True), Replacement(fds[3], False)], False)
    assert not is_open(fds[0]) and not is_open(fds[1])
    assert h.dropped == 2
    os.close(fds[2])
    os.close(fds[3])


def test_the_byte_bound_counts_every_file_but_the_newest(tmp_path):
    h = Replacements(max_bytes=1000)
    a, b, c = new_file(tmp_path, 600), new_file(tmp_path, 600), new_file(tmp_path, 10_000)
    h.offer(a)
    h.offer(b)  # 600 held besides the newest: fine
    h.offer(c)  # 1200 held besides the newest: the oldest goes
    assert h.take() == ([Replacement(b, True), Replacement(c, False)], False)
    assert not is_open(a)
    os.close(b)
    os.close(c)


def test_a_miss_marks_the_newest_file_waiting_or_comes_with_the_next_take(tmp_path):
    h = Replacements()
    a, b = new_file(tmp_path), new_file(tmp_path)
    h.offer(a)
    h.missed()
    assert h.take() == ([Replacement(a, True)], False)
    h.missed()  # after `a` was taken: the gap was before it
    h.offer(b)
    assert h.take() == ([Replacement(b, False)], True)
    assert h.take() == ([], False)
    os.close(a)
    os.close(b)


def test_close_closes_what_waits_and_what_comes_later(tmp_path):
    h = Replacements()
    a, b = new_file(tmp_path), new_file(tmp_path)
    h.offer(a)
    h.close()
    h.offer(b)
    assert not is_open(a) and not is_open(b)
    assert h.take() == ([], False)


def test_offers_from_another_thread_keep_their_order(tmp_path):
    h = Replacements(max_files=10_000)
    fds = [new_file(tmp_path) for _ in range(200)]
    t = threading.Thread(target=lambda: [h.offer(fd) for fd in fds])
    t.start()
    taken: list[int] = []
    while t.is_alive() or len(taken) < len(fds):
        taken += [x.fd for x in h.take()[0]]
    t.join()
    assert taken == fds
    for fd in fds:
        os.close(fd)


def test_the_engine_budget_takes_from_the_container_holding_the_most(tmp_path):
    drops: list[int] = []
    budget = HeldBudget(10_000, on_drop=lambda: drops.append(1))
    flood, quiet = Replacements(budget=budget), Replacements(budget=budget)

    def held(name: str, size: int) -> int:
        path = tmp_path / name
        path.write_bytes(b"x" * size)
        fd = os.open(path, os.O_RDONLY)
        path.unlink()  # deleted by the engine, held here: it keeps its space
        return fd

    for i in range(2):
        quiet.offer(held(f"q{i}", 2_000))
    for i in range(6):
        flood.offer(held(f"f{i}", 3_000))
    assert quiet.held_bytes() == 2_000 and quiet.dropped == 0  # within a fair share: untouched
    assert flood.held_bytes() + quiet.held_bytes() <= 10_000
    assert flood.dropped == len(drops) > 0
    taken, _ = flood.take()
    assert taken[0].gap_before  # the reader counts the lines of what was closed
    for r in taken:
        os.close(r.fd)
    flood.close()
    quiet.close()


def test_the_engine_budget_bounds_descriptors_too(tmp_path):
    budget = HeldBudget(1 << 30, max_files=5)
    unclaimed = [Replacements(budget=budget) for _ in range(3)]
    for n, r in enumerate(unclaimed):
        for i in range(3):
            path = tmp_path / f"{n}-{i}"
            path.write_bytes(b"")
            r.offer(os.open(path, os.O_RDONLY))
    assert sum(r.held()[1] for r in unclaimed) <= 5
    assert all(r.held()[1] >= 1 for r in unclaimed)  # each keeps its newest
    for r in unclaimed:
        r.close()
