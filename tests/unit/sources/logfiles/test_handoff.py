"""HandOff: the files the watcher opened after a container's first, in order and bounded."""

from __future__ import annotations

import os
import threading

from bridge.sources.logfiles.handoff import Handed, HandOff


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
    h = HandOff()
    fds = [new_file(tmp_path) for _ in range(3)]
    for fd in fds:
        h.offer(fd)
    assert h.take() == ([Handed(fd, False) for fd in fds], False)
    assert h.take() == ([], False)
    for fd in fds:
        os.close(fd)


def test_past_the_file_bound_the_oldest_is_closed_and_the_next_marked(tmp_path):
    h = HandOff(max_files=2)
    fds = [new_file(tmp_path) for _ in range(4)]
    for fd in fds:
        h.offer(fd)
    assert h.take() == ([Handed(fds[2], True), Handed(fds[3], False)], False)
    assert not is_open(fds[0]) and not is_open(fds[1])
    assert h.dropped == 2
    os.close(fds[2])
    os.close(fds[3])


def test_the_byte_bound_counts_every_file_but_the_newest(tmp_path):
    h = HandOff(max_bytes=1000)
    a, b, c = new_file(tmp_path, 600), new_file(tmp_path, 600), new_file(tmp_path, 10_000)
    h.offer(a)
    h.offer(b)  # 600 held besides the newest: fine
    h.offer(c)  # 1200 held besides the newest: the oldest goes
    assert h.take() == ([Handed(b, True), Handed(c, False)], False)
    assert not is_open(a)
    os.close(b)
    os.close(c)


def test_a_miss_marks_the_newest_file_waiting_or_comes_with_the_next_take(tmp_path):
    h = HandOff()
    a, b = new_file(tmp_path), new_file(tmp_path)
    h.offer(a)
    h.missed()
    assert h.take() == ([Handed(a, True)], False)
    h.missed()  # after `a` was taken: the gap was before it
    h.offer(b)
    assert h.take() == ([Handed(b, False)], True)
    assert h.take() == ([], False)
    os.close(a)
    os.close(b)


def test_close_closes_what_waits_and_what_comes_later(tmp_path):
    h = HandOff()
    a, b = new_file(tmp_path), new_file(tmp_path)
    h.offer(a)
    h.close()
    h.offer(b)
    assert not is_open(a) and not is_open(b)
    assert h.take() == ([], False)


def test_offers_from_another_thread_keep_their_order(tmp_path):
    h = HandOff(max_files=10_000)
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
