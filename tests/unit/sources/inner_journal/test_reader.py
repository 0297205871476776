"""The inner-journal reader with a fake follower, a real queue and a real journal writer.

The follower is scripted (events arrive when the test feeds them); the writer sends to a fake
socket that records datagrams. The container's first process is a real `sleep`, so that the
reader's view of it (alive, exited) is the kernel's.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge.config import TransformsConfig
from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor
from bridge.core.fields import ContainerInfo, encode_pairs
from bridge.core.queue import InnerBatch, PendingQueue
from bridge.sinks.journald.writer import JournalWriter
from bridge.sources.inner_journal.options import FollowerStats
from bridge.sources.inner_journal.position import Gap, InnerPosition
from bridge.sources.inner_journal.protocol import InnerEnd, InnerEntry, InnerGap, decode_native
from bridge.sources.inner_journal.reader import InnerJournalReader
from bridge.telemetry import Telemetry
from bridge.transforms import build_chain

SEQNUM_ID = "1" * 32
BOOT = "2" * 32
FIELDS = encode_pairs(
    [("CONTAINER_ID_FULL", "a" * 64), ("CONTAINER_NAME", "web"), ("SYSLOG_IDENTIFIER", "web")]
)


def pos(i: int, drained: bool = False) -> InnerPosition:
    cursor = f"s={SEQNUM_ID};i={i:x};b={BOOT};m={i:x};t={1000 + i:x};x={i:x}"
    return InnerPosition(cursor, drained=drained)


def entry(i: int) -> InnerEntry:
    return InnerEntry(b"line %d" % i, 5, b"SYSLOG_IDENTIFIER=app\nINNER_PID=7\n", 10**15, i, pos(i))


_DONE = object()


class FakeSocket:
    """Records what the writer sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_batch(self, datagrams: list[bytes], keep_waiting: Any) -> tuple[int, list[int]]:
        self.sent.extend(datagrams)
        return len(datagrams), []


class FakeFollower:
    """Yields what the test feeds it, with the `more_ready` flag the test gives."""

    def __init__(self, position: InnerPosition | None) -> None:
        self.position = position
        self.stats = FollowerStats()
        self.more_ready = False
        self.events: queue.Queue[Any] = queue.Queue()
        self.stopped = threading.Event()
        self.closed = False

    def feed(self, *events: Any, more: bool = False) -> None:
        """Events read together: `more_ready` is True for all but the last (unless `more`)."""
        for index, event in enumerate(events):
            self.events.put((event, more or index < len(events) - 1))

    def __iter__(self) -> Iterator[Any]:
        while not self.stopped.is_set():
            try:
                event, more = self.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if event is _DONE:
                return
            self.more_ready = more
            yield event
            if isinstance(event, InnerEnd):
                return

    def stop(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        self.closed = True


class Setup:
    def __init__(self, handle: ContainerHandle | None = None, max_bytes: int = 64 << 20) -> None:
        self.registry = CollectorRegistry()
        self.telemetry = Telemetry(self.registry)
        self.queue = PendingQueue(max_bytes)
        self.socket = FakeSocket()
        self.writer: JournalWriter | None = None
        info = ContainerInfo(id="a" * 64, name="web", image_name="img", image_id="sha256:b")
        self.handle = handle or ContainerHandle.create(info, FIELDS, Cursor())
        self.followers: list[FakeFollower] = []
        self.asked: list[tuple[int, InnerPosition | None]] = []
        self.new_follower_error: OSError | None = None

    def new_follower(self, pid: int, position: InnerPosition | None) -> FakeFollower:
        self.asked.append((pid, position))
        if self.new_follower_error is not None:
            raise self.new_follower_error
        follower = FakeFollower(position)
        self.followers.append(follower)
        return follower

    def reader(self, pid: int, start: InnerPosition | None = None, **kw: Any) -> InnerJournalReader:
        return InnerJournalReader(
            self.handle,
            self.queue,
            self.telemetry,
            pid,
            start,
            new_follower=self.new_follower,
            **kw,
        )

    def start_writer(self) -> JournalWriter:
        self.writer = JournalWriter(self.queue, self.socket, self.telemetry, lambda: None)  # type: ignore[arg-type]
        self.writer.start()
        return self.writer

    def follower(self, index: int = 0, timeout: float = 5) -> FakeFollower:
        deadline = time.monotonic() + timeout
        while len(self.followers) <= index:
            assert time.monotonic() < deadline, "no follower was made"
            time.sleep(0.01)
        return self.followers[index]

    def sent(self) -> list[dict[bytes, bytes]]:
        return [dict(decode_native(d)) for d in self.socket.sent]

    def wait_sent(self, count: int, timeout: float = 5) -> list[dict[bytes, bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.socket.sent) < count:
            assert time.monotonic() < deadline, f"{len(self.socket.sent)} of {count} sent"
            time.sleep(0.01)
        return self.sent()

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def stop(self) -> None:
        if self.writer is not None:
            self.writer.drain_and_stop(5)


@pytest.fixture
def process() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def wait_for(predicate: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_entries_reach_the_journal_with_the_containers_fields_and_their_position_commits(process):
    setup = Setup()
    setup.start_writer()
    reader = setup.reader(process.pid)
    reader.start()
    follower = setup.follower()
    follower.feed(entry(1), entry(2), entry(3))
    sent = setup.wait_sent(3)
    assert [e[b"MESSAGE"] for e in sent] == [b"line 1", b"line 2", b"line 3"]
    first = sent[0]
    assert first[b"CONTAINER_STREAM"] == b"journal"
    assert first[b"CONTAINER_NAME"] == b"web"
    assert first[b"SYSLOG_IDENTIFIER"] == b"app"  # the inner one, once
    assert decode_native(setup.socket.sent[0]).count((b"SYSLOG_IDENTIFIER", b"app")) == 1
    assert first[b"PRIORITY"] == b"5"
    assert first[b"INNER_PID"] == b"7"
    assert first[b"JOURNALD_BRIDGE_INNER_CURSOR"] == pos(1).cursor.encode()
    wait_for(lambda: reader.committed_position() == pos(3))
    assert setup.handle.inner is not None
    assert setup.handle.inner.committed_json() == pos(3).to_json()
    lines = setup.sample("journald_bridge_lines_forwarded_total", stream="journal")
    assert lines == 3
    reader.stop()
    reader.join(5)
    assert reader.finished and follower.closed
    setup.stop()


def test_entries_read_together_are_one_batch(process):
    setup = Setup()
    reader = setup.reader(process.pid)
    reader.start()
    follower = setup.follower()
    follower.feed(entry(1), entry(2), more=True)  # more is ready: nothing queued yet
    time.sleep(0.2)
    assert setup.queue.empty()
    follower.feed(entry(3))
    (batch,) = setup.queue.get_many(5, 1 << 30)
    assert isinstance(batch, InnerBatch)
    assert [e.message for e in batch.entries] == [b"line 1", b"line 2", b"line 3"]
    assert batch.last == pos(3)
    assert b"SYSLOG_IDENTIFIER" not in dict(decode_native(batch.fields))
    assert setup.handle.inner_stream().read == pos(3)  # queued, not yet committed
    assert reader.committed_position() is None
    reader.stop()
    reader.join(5)


def test_the_end_of_the_journal_commits_a_drained_position_and_finishes(process):
    setup = Setup()
    setup.start_writer()
    reader = setup.reader(process.pid)
    reader.start()
    assert reader.wake()  # its process runs: nothing to do
    setup.follower().feed(entry(1), InnerEnd(pos(1, drained=True)))
    reader.join(5)
    assert reader.finished
    assert not reader.wake()  # finished: a new start needs a new reader
    wait_for(lambda: reader.committed_position() == pos(1, drained=True))
    setup.stop()


def test_a_stopped_reader_queues_what_the_follower_yielded(process):
    setup = Setup()
    reader = setup.reader(process.pid)
    reader.start()
    follower = setup.follower()
    follower.feed(entry(1), entry(2), entry(3), more=True)
    wait_for(lambda: follower.events.empty())
    time.sleep(0.1)
    reader.stop()
    reader.join(5)
    assert follower.stopped.is_set() and follower.closed
    (batch,) = setup.queue.get_many(1, 1 << 30)
    assert isinstance(batch, InnerBatch) and batch.last == pos(3)


def test_the_next_reader_waits_for_the_last_one_and_goes_on_after_it(process):
    setup = Setup()
    setup.start_writer()
    first = setup.reader(process.pid, start=pos(1))
    first.start()
    setup.follower(0).feed(entry(2), entry(3))
    wait_for(lambda: setup.handle.inner_stream().read == pos(3))
    # the container restarted: its new process gets a new reader while the old one drains
    second = setup.reader(process.pid, start=pos(1))  # a stale start changes nothing
    second.start()
    time.sleep(0.3)
    assert len(setup.followers) == 1  # it waits for its turn
    setup.follower(0).feed(entry(4), InnerEnd(pos(4, drained=True)))
    first.join(5)
    assert setup.follower(1).position == pos(4, drained=True)
    assert setup.asked[0] == (process.pid, pos(1))
    setup.follower(1).feed(entry(5))
    setup.wait_sent(4)
    assert [e[b"MESSAGE"] for e in setup.sent()] == [b"line 2", b"line 3", b"line 4", b"line 5"]
    second.stop()
    second.join(5)
    setup.stop()


def test_a_reader_of_an_exited_process_ends_at_once():
    proc = subprocess.Popen(["true"])
    proc.wait()
    setup = Setup()
    reader = setup.reader(proc.pid)
    assert not reader.wake()
    reader.start()
    reader.join(5)
    assert reader.finished and not setup.followers


def test_a_root_that_cannot_be_opened_is_counted_and_ends_the_reader(process, caplog):
    setup = Setup()
    setup.new_follower_error = PermissionError(1, "Operation not permitted")
    reader = setup.reader(process.pid)
    reader.start()
    reader.join(5)
    assert reader.finished
    assert setup.sample("journald_bridge_inner_journal_errors_total", kind="open") == 1
    assert "CAP_SYS_PTRACE" in caplog.text


def test_a_gap_is_counted(process):
    setup = Setup()
    reader = setup.reader(process.pid)
    reader.start()
    gap = Gap("vacuumed", 12, pos(1), pos(14).cursor)
    setup.follower().feed(InnerGap(gap), entry(14))
    wait_for(lambda: not setup.queue.empty())
    assert setup.sample("journald_bridge_inner_journal_gaps_total", kind="vacuumed") == 1
    assert setup.sample("journald_bridge_inner_journal_lost_entries_total") == 12
    reader.stop()
    reader.join(5)


def test_one_stream_never_holds_more_than_its_share_of_the_queue(process):
    setup = Setup()
    reader = setup.reader(process.pid, max_inflight_bytes=1)  # one batch at a time
    reader.start()
    follower = setup.follower()
    follower.feed(entry(1))
    follower.feed(entry(2))
    wait_for(lambda: follower.events.empty())
    time.sleep(0.2)
    items = setup.queue.get_many(0.1, 1 << 30)
    assert len(items) == 1  # the second waits until the writer is done with the first
    assert setup.handle.inner_stream().read == pos(1)
    (first,) = items
    assert isinstance(first, InnerBatch)
    first.stream.unqueued(first.nbytes)  # what the writer does once it sent them
    (second,) = setup.queue.get_many(5, 1 << 30)
    assert isinstance(second, InnerBatch) and second.last == pos(2)
    second.stream.unqueued(second.nbytes)
    reader.stop()
    reader.join(5)


def test_a_stop_while_waiting_for_room_leaves_the_rest_to_be_read_again(process):
    setup = Setup()
    reader = setup.reader(process.pid, max_inflight_bytes=1)
    reader.start()
    follower = setup.follower()
    follower.feed(entry(1))
    follower.feed(entry(2))
    wait_for(lambda: follower.events.empty())
    time.sleep(0.2)
    reader.stop()
    reader.join(5)
    assert reader.finished
    assert setup.handle.inner_stream().read == pos(1)  # entry 2 was never queued


def test_a_removed_container_is_read_to_its_end():
    proc = subprocess.Popen(["sleep", "60"])
    try:
        setup = Setup()
        setup.start_writer()
        reader = setup.reader(proc.pid)
        reader.start()
        follower = setup.follower()
        follower.feed(entry(1))
        setup.wait_sent(1)
        proc.kill()  # exited, not yet reaped: its pidfd says so
        wait_for(lambda: not reader.wake())
        setup.handle.removed = True
        reader.stop()
        time.sleep(0.2)
        assert not follower.stopped.is_set()  # its last output is still being read
        follower.feed(entry(2), InnerEnd(pos(2, drained=True)))
        reader.join(5)
        assert [e[b"MESSAGE"] for e in setup.wait_sent(2)] == [b"line 1", b"line 2"]
        wait_for(lambda: reader.committed_position() == pos(2, drained=True))
        setup.stop()
    finally:
        proc.wait()


def test_a_second_stop_ends_the_drain():
    proc = subprocess.Popen(["sleep", "60"])
    try:
        setup = Setup()
        reader = setup.reader(proc.pid)
        reader.start()
        follower = setup.follower()
        proc.kill()
        wait_for(lambda: not reader.wake())
        setup.handle.removed = True
        reader.stop()
        time.sleep(0.1)
        assert not follower.stopped.is_set()
        reader.stop()
        reader.join(5)
        assert follower.stopped.is_set() and reader.finished
    finally:
        proc.wait()


def test_the_containers_rate_limit_applies_and_dropped_entries_are_consumed(process):
    setup = Setup()
    config = TransformsConfig(rate_limit_lines_per_second=0.001, rate_limit_burst=2)
    setup.handle.chain = build_chain(
        config, {}, 1 << 20, lambda: "web", lambda *_: None, setup.telemetry
    )
    setup.start_writer()
    reader = setup.reader(process.pid)
    reader.start()
    setup.follower().feed(*(entry(i) for i in range(1, 6)), InnerEnd(pos(5, drained=True)))
    reader.join(5)
    sent = setup.wait_sent(3)
    assert [e[b"MESSAGE"] for e in sent[:2]] == [b"line 1", b"line 2"]
    assert sent[2][b"MESSAGE"] == b"Suppressed 3 inner journal entries from container web"
    assert sent[2][b"N_DROPPED"] == b"3" and sent[2][b"SYSLOG_IDENTIFIER"] == b"web"
    assert sent[2][b"JOURNALD_BRIDGE_INNER_CURSOR"] == pos(5).cursor.encode()
    wait_for(lambda: reader.committed_position() == pos(5, drained=True))
    dropped = setup.sample("journald_bridge_lines_dropped_total", reason="rate_limited")
    assert dropped == 3
    setup.stop()


def test_a_rename_applies_to_the_next_batch(process):
    setup = Setup()
    reader = setup.reader(process.pid)
    reader.start()
    follower = setup.follower()
    follower.feed(entry(1))
    (first,) = setup.queue.get_many(5, 1 << 30)
    info = setup.handle.info
    setup.handle.refresh_fields(info, encode_pairs([("CONTAINER_NAME", "shop")]))
    follower.feed(entry(2))
    (second,) = setup.queue.get_many(5, 1 << 30)
    assert isinstance(first, InnerBatch) and isinstance(second, InnerBatch)
    assert dict(decode_native(first.fields))[b"CONTAINER_NAME"] == b"web"
    assert dict(decode_native(second.fields))[b"CONTAINER_NAME"] == b"shop"
    reader.stop()
    reader.join(5)
