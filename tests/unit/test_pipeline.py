from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry

from bridge.container import ContainerHandle
from bridge.cursor import Cursor
from bridge.fields import ContainerInfo, MetadataSelection, TagTemplate
from bridge.pipeline import Batch, EndOfStream, JournalWriter, PendingQueue
from bridge.record import Record
from bridge.telemetry import Telemetry

TS = b"2026-11-28T00:13:57.123456789Z"


class FakeSocket:
    def __init__(self):
        self.sent = []
        self.refuse = False

    def send(self, datagram, keep_waiting):
        while self.refuse:
            if not keep_waiting():
                return False
            time.sleep(0.01)
        self.sent.append(datagram)
        return True

    def send_batch(self, datagrams, keep_waiting):
        for done, datagram in enumerate(datagrams):
            if not self.send(datagram, keep_waiting):
                return done, []
        return len(datagrams), []


def forwarded(registry, stream="stdout"):
    return registry.get_sample_value("journald_bridge_lines_forwarded_total", {"stream": stream})


def dropped(registry, reason):
    return registry.get_sample_value("journald_bridge_lines_dropped_total", {"reason": reason})


def handle():
    info = ContainerInfo(id="a" * 64, name="web", image_name="img", image_id="sha256:b")
    return ContainerHandle.create(info, TagTemplate("{{.Name}}"), MetadataSelection(), Cursor())


def test_queue_blocks_producers_at_the_byte_budget():
    queue = PendingQueue(100)
    h = handle()
    queue.put(Batch(h, [], 80))
    done = threading.Event()
    threading.Thread(target=lambda: (queue.put(Batch(h, [], 80)), done.set())).start()
    assert not done.wait(0.2)
    assert len(queue.get_many(0.1, 0)) == 1
    queue.release(80)
    assert done.wait(1)


def test_blocked_producers_wait_for_the_queue_to_drain_to_three_quarters():
    queue = PendingQueue(100)
    h = handle()
    for _ in range(4):
        queue.put(Batch(h, [], 25))
    done = threading.Event()
    threading.Thread(target=lambda: (queue.put(Batch(h, [], 10)), done.set())).start()
    assert len(queue.get_many(0.1, 0)) == 1
    queue.release(10)  # 90 pending: there is room, but not yet worth a wake-up
    assert not done.wait(0.2)
    queue.release(15)  # 75 pending: the producer goes on
    assert done.wait(1)
    assert queue.pending_bytes == 85


def test_writer_commits_only_what_was_sent_and_counts_it():
    registry = CollectorRegistry()
    queue, sock, h = PendingQueue(1 << 20), FakeSocket(), handle()
    writer = JournalWriter(queue, sock, Telemetry(registry), lambda: None)
    writer.start()
    records = [Record(1, b"a", TS, (1, 1), (1, 1)), Record(2, b"bb", TS, (2, 1), (2, 1))]
    queue.put(Batch(h, records, 3))
    queue.put(EndOfStream(h, "2026-11-28T00:00:00Z"))
    assert writer.drain_and_stop(5)
    assert len(sock.sent) == 2 and b"CONTAINER_NAME=web\n" in sock.sent[0]
    assert h.committed == {1: (1, 1), 2: (2, 1)}
    assert h.finished_at == "2026-11-28T00:00:00Z"
    assert forwarded(registry) == 1
    assert (
        registry.get_sample_value("journald_bridge_bytes_forwarded_total", {"stream": "stderr"})
        == 2
    )
    assert queue.pending_bytes == 0


def test_writer_abandons_at_shutdown_without_committing():
    queue, sock, h = PendingQueue(1 << 20), FakeSocket(), handle()
    sock.refuse = True
    writer = JournalWriter(queue, sock, Telemetry(CollectorRegistry()), lambda: None)
    writer.start()
    queue.put(Batch(h, [Record(1, b"a", TS, (1, 1), (1, 1))], 1))
    assert not writer.drain_and_stop(0.3)
    assert h.committed == {}


class RefusingSocket(FakeSocket):
    def send_batch(self, datagrams, keep_waiting):
        return len(datagrams), [0]  # journald refused the first entry for good


def test_refused_entries_are_counted_as_dropped_not_forwarded_and_still_committed():
    registry = CollectorRegistry()
    queue, h = PendingQueue(1 << 20), handle()
    writer = JournalWriter(queue, RefusingSocket(), Telemetry(registry), lambda: None)
    writer.start()
    queue.put(
        Batch(h, [Record(1, b"a", TS, (1, 1), (1, 1)), Record(1, b"b", TS, (2, 1), (2, 1))], 2)
    )
    assert writer.drain_and_stop(5)
    assert forwarded(registry) == 1
    assert dropped(registry, "journal_error") == 1
    assert h.committed == {1: (2, 1)}


class RecordingSocket(FakeSocket):
    """Records each send_batch call; refuses the entries at the given indices of a call."""

    def __init__(self, refuse_indices=()):
        super().__init__()
        self.calls = []
        self.refuse_indices = list(refuse_indices)

    def send_batch(self, datagrams, keep_waiting):
        self.calls.append(list(datagrams))
        self.sent += datagrams
        return len(datagrams), self.refuse_indices


def test_queued_batches_of_several_containers_go_out_in_one_send_in_order():
    registry = CollectorRegistry()
    queue, sock = PendingQueue(1 << 20), RecordingSocket(refuse_indices=[2])
    web = handle()
    db = ContainerHandle.create(
        ContainerInfo(id="c" * 64, name="db", image_name="img", image_id="sha256:b"),
        TagTemplate("{{.Name}}"),
        MetadataSelection(),
        Cursor(),
    )
    queue.put(Batch(web, [Record(1, b"w1", TS, (1, 1), (1, 1))], 1))
    queue.put(Batch(db, [Record(1, b"d1", TS, (5, 1), (5, 1))], 1))
    queue.put(Batch(db, [Record(1, b"d2", TS, (6, 1), (6, 1))], 1))
    writer = JournalWriter(queue, sock, Telemetry(registry), lambda: None)
    writer.start()
    assert writer.drain_and_stop(5)
    assert len(sock.calls) == 1
    assert [d.split(b"\n", 1)[0] for d in sock.calls[0]] == [
        b"MESSAGE=w1",
        b"MESSAGE=d1",
        b"MESSAGE=d2",
    ]
    # index 2 of the one call is db's second entry: refused, counted against db, committed
    assert web.committed == {1: (1, 1)} and db.committed == {1: (6, 1)}
    assert forwarded(registry) == 2
    assert dropped(registry, "journal_error") == 1
    assert queue.pending_bytes == 0
