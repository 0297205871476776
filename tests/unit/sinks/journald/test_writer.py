from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry

from bridge.config import TransformsConfig
from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor
from bridge.core.fields import ContainerInfo, encode_pairs
from bridge.core.queue import Batch, EndOfStream, PendingQueue
from bridge.core.record import Record
from bridge.sinks.journald.writer import JournalWriter
from bridge.telemetry import Telemetry
from bridge.transforms import build_chain

TS = b"2026-11-28T00:13:57.123456789Z"

FIELDS = encode_pairs([("CONTAINER_NAME", "web")])


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
    return ContainerHandle.create(info, FIELDS, Cursor())


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
        FIELDS,
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


def test_a_position_never_moves_backwards_and_an_attempt_is_counted():
    registry = CollectorRegistry()
    queue, sock, h = PendingQueue(1 << 20), FakeSocket(), handle()
    writer = JournalWriter(queue, sock, Telemetry(registry), lambda: None)
    writer.start()
    queue.put(Batch(h, [Record(1, b"new", TS, (10, 1), (10, 1))], 1))
    queue.put(Batch(h, [Record(1, b"old", TS, (5, 1), (5, 1))], 1))
    assert writer.drain_and_stop(5)
    assert h.committed == {1: (10, 1)}
    assert registry.get_sample_value("journald_bridge_position_regressions_total") == 1


def test_a_batch_that_breaks_the_writer_costs_that_batch_only():
    registry = CollectorRegistry()
    queue, sock, h = PendingQueue(1 << 20), FakeSocket(), handle()
    writer = JournalWriter(queue, sock, Telemetry(registry), lambda: None)
    writer.start()
    broken = Record(1, None, TS, (1, 1), (1, 1))  # type: ignore[arg-type]  # encoding raises
    queue.put(Batch(h, [broken], 1))
    time.sleep(0.3)  # the broken batch gets a pass of its own
    assert writer.alive
    queue.put(Batch(h, [Record(1, b"after", TS, (2, 1), (2, 1))], 1))
    assert writer.drain_and_stop(5)
    assert [d.split(b"\n", 1)[0] for d in sock.sent] == [b"MESSAGE=after"]
    assert registry.get_sample_value("journald_bridge_writer_errors_total") == 1
    assert queue.pending_bytes == 0


def test_the_writer_beats_while_idle():
    queue = PendingQueue(1 << 20)
    beats: list[float] = []
    writer = JournalWriter(
        queue, FakeSocket(), Telemetry(CollectorRegistry()), lambda: beats.append(1)
    )
    writer.start()
    time.sleep(0.6)
    assert writer.alive and len(beats) >= 2
    assert time.monotonic() - writer.last_beat < 0.5
    assert writer.drain_and_stop(5)


def test_the_writer_counts_a_pass_when_positions_may_have_moved_and_none_while_idle():
    queue, h = PendingQueue(1 << 20), handle()
    writer = JournalWriter(queue, FakeSocket(), Telemetry(CollectorRegistry()), lambda: None)
    writer.start()
    time.sleep(0.6)  # idle passes: nothing to save
    assert writer.passes == 0
    queue.put(Batch(h, [Record(1, b"a", TS, (1, 1), (1, 1))], 1))
    deadline = time.monotonic() + 5
    while h.committed != {1: (1, 1)} and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert writer.passes >= 1  # counted once the position it moved is committed
    assert writer.drain_and_stop(5)


def test_queue_items_without_bytes_never_wait_for_room():
    queue, h = PendingQueue(100), handle()
    queue.put(Batch(h, [], 500))  # one oversize batch may always enter
    done = threading.Event()
    threading.Thread(target=lambda: (queue.put(EndOfStream(h, "")), done.set())).start()
    assert done.wait(1)


def test_a_removed_container_loses_its_series_and_gets_no_new_ones():
    registry = CollectorRegistry()
    queue, h = PendingQueue(1 << 20), handle()
    writer = JournalWriter(
        queue, FakeSocket(), Telemetry(registry, per_container=True), lambda: None
    )
    writer.start()
    labels = {"engine": "docker", "container_name": "web", "compose_service": ""}
    queue.put(Batch(h, [Record(1, b"a", TS, (1, 1), (1, 1))], 1))
    deadline = time.monotonic() + 5
    while not registry.get_sample_value("journald_bridge_container_lines_forwarded_total", labels):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    h.removed = True
    queue.put(EndOfStream(h, ""))
    queue.put(Batch(h, [Record(1, b"late", TS, (2, 1), (2, 1))], 1))  # read before the removal
    assert writer.drain_and_stop(5)
    assert (
        registry.get_sample_value("journald_bridge_container_lines_forwarded_total", labels) is None
    )
    assert forwarded(registry) == 2


def test_a_rename_moves_the_series_to_the_new_name():
    registry = CollectorRegistry()
    queue, h = PendingQueue(1 << 20), handle()
    writer = JournalWriter(
        queue, FakeSocket(), Telemetry(registry, per_container=True), lambda: None
    )
    queue.put(Batch(h, [Record(1, b"a", TS, (1, 1), (1, 1))], 1))
    writer.start()
    deadline = time.monotonic() + 5
    while not h.committed:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    h.refresh_fields(
        ContainerInfo(id="a" * 64, name="web2", image_name="img", image_id="sha256:b"),
        encode_pairs([("CONTAINER_NAME", "web2")]),
    )
    queue.put(Batch(h, [Record(1, b"b", TS, (2, 1), (2, 1))], 1))
    assert writer.drain_and_stop(5)
    name = "journald_bridge_container_lines_forwarded_total"
    assert (
        registry.get_sample_value(
            name, {"engine": "docker", "container_name": "web", "compose_service": ""}
        )
        is None
    )
    assert (
        registry.get_sample_value(
            name, {"engine": "docker", "container_name": "web2", "compose_service": ""}
        )
        == 1
    )


def test_reader_holds_keep_the_persisted_position_before_the_held_line():
    queue, h = PendingQueue(1 << 20), handle()
    writer = JournalWriter(queue, FakeSocket(), Telemetry(CollectorRegistry()), lambda: None)
    writer.start()
    # stderr: the first piece of a long line is held by the reader (stamped 100);
    # stdout moves far ahead meanwhile.
    queue.put(Batch(h, [Record(1, b"a", TS, (10**12, 1), (10**12, 1))], 1, held={2: (100, 1)}))
    assert writer.drain_and_stop(5)
    cursor = h.committed_cursor()
    assert cursor.streams[2] == (100, 0) and 2 in cursor.pinned
    assert cursor.since_ns() <= 100


S = 10**9
T = 1_780_000_000 * S


def rec(stream: int, message: bytes, ns: int) -> Record:
    return Record(stream, message, TS, (ns, 1), (ns, 1))


class Events:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def line_failed(self, step: str) -> None:
        self.failed.append(step)

    def fields_dropped(self, reason: str, count: int) -> None:
        pass


def chained(labels: dict[str, str], config: TransformsConfig | None = None) -> ContainerHandle:
    h = handle()
    h.chain = build_chain(
        config or TransformsConfig(), labels, 1 << 20, lambda: "web", lambda k, m: None, Events()
    )
    assert h.chain is not None
    return h


def run_writer(items, handle_settle=0.3):
    registry = CollectorRegistry()
    queue, sock = PendingQueue(1 << 20), FakeSocket()
    writer = JournalWriter(queue, sock, Telemetry(registry), lambda: None)
    writer.start()
    for item in items:
        queue.put(item)
    time.sleep(handle_settle)
    return writer, queue, sock, registry


TRACEBACK = [
    b"Traceback (most recent call last):",
    b'  File "app.py", line 1',
    b"ZeroDivisionError: x",
]


def test_an_open_record_keeps_the_persisted_position_before_it():
    h = chained({"journald-bridge.multiline": "python"})
    items = [Batch(h, [rec(2, TRACEBACK[0], T)], 1)]
    for i in range(1, 51):  # the traceback is still being printed; stdout moves on
        items.append(
            Batch(
                h,
                [rec(2, b"  frame %d" % i, T + i * S // 10), rec(1, b"out", T + i * S // 10 + 1)],
                1,
            )
        )
    writer, queue, _, _ = run_writer(items)
    cursor = h.committed_cursor()
    assert cursor.since_ns() <= T  # a resume reads the whole open traceback again
    assert cursor.streams[2] == (T, 0) and 2 in cursor.pinned
    assert queue.pending_bytes > 0  # what the transforms hold counts against the budget
    assert writer.drain_and_stop(5)


def test_the_open_record_of_a_removed_container_is_written():
    h = chained({"journald-bridge.multiline": "python"})
    batch = Batch(h, [rec(2, m, T + i) for i, m in enumerate(TRACEBACK)], 3)
    h.removed = True  # the destroy event of a --rm container came right after its last line
    writer, queue, sock, _ = run_writer([batch, EndOfStream(h, "")])
    assert writer.drain_and_stop(5)
    assert len(sock.sent) == 1 and b"\nZeroDivisionError: x" in sock.sent[0]
    assert h.committed == {2: (T + 2, 1)} and queue.pending_bytes == 0


def test_the_suppression_notice_never_moves_a_position_back():
    config = TransformsConfig(rate_limit_lines_per_second=1, rate_limit_burst=1)
    h = chained({}, config)
    lines = [rec(1, b"line %d" % i, T + i) for i in range(20)]
    writer, _, sock, registry = run_writer([Batch(h, lines, 20), EndOfStream(h, "")])
    assert writer.drain_and_stop(5)
    assert any(d.startswith(b"MESSAGE=Suppressed") for d in sock.sent)
    assert h.committed[1] == (T + 19, 1)
    assert registry.get_sample_value("journald_bridge_position_regressions_total") == 0


def test_a_wall_clock_step_back_does_not_stop_rate_limited_lines(monkeypatch):
    config = TransformsConfig(rate_limit_lines_per_second=1000)
    h = chained({}, config)
    wall = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: wall[0])
    queue, sock = PendingQueue(1 << 20), FakeSocket()
    writer = JournalWriter(queue, sock, Telemetry(CollectorRegistry()), lambda: None)
    writer.start()
    queue.put(Batch(h, [rec(1, b"before", T)], 1))
    time.sleep(0.1)
    wall[0] -= 3600  # NTP or a VM resume steps the clock back an hour
    queue.put(Batch(h, [rec(1, b"after", T + 1)], 1))
    assert writer.drain_and_stop(5)
    assert [d.split(b"\n", 1)[0] for d in sock.sent] == [b"MESSAGE=before", b"MESSAGE=after"]


def renamed(h: ContainerHandle, name: str) -> None:
    """What a rename event does to the handle (handles.py: refresh)."""
    info = ContainerInfo(id=h.id, name=name, image_name="img", image_id="sha256:b")
    h.refresh_fields(info, encode_pairs([("CONTAINER_NAME", name)]))


def names(sent: list[bytes]) -> list[tuple[bytes, bytes]]:
    out = []
    for datagram in sent:
        if datagram.startswith(b"MESSAGE\n"):  # a value with a line break: length-prefixed
            size = int.from_bytes(datagram[8:16], "little")
            message = datagram[16 : 16 + size]
        else:
            message = datagram.split(b"\n", 1)[0].removeprefix(b"MESSAGE=")
        name = datagram.split(b"CONTAINER_NAME=", 1)[1].split(b"\n", 1)[0]
        out.append((message, name))
    return out


def test_lines_queued_before_a_rename_keep_the_name_they_were_read_under():
    h = handle()
    queue, sock = PendingQueue(1 << 20), FakeSocket()
    writer = JournalWriter(queue, sock, Telemetry(CollectorRegistry()), lambda: None)
    # A burst is queued (the writer has not taken it yet), then the container is renamed, then
    # its reader reads on.
    queue.put(Batch(h, [rec(1, b"burst %d" % i, T + i) for i in range(3)], 3))
    queue.put(Batch(h, [rec(1, b"burst 3", T + 3)], 1))
    renamed(h, "api")
    queue.put(Batch(h, [rec(1, b"after", T + 4)], 1))
    writer.start()
    assert writer.drain_and_stop(5)
    assert names(sock.sent) == [
        (b"burst 0", b"web"),
        (b"burst 1", b"web"),
        (b"burst 2", b"web"),
        (b"burst 3", b"web"),
        (b"after", b"api"),
    ]
    assert h.committed == {1: (T + 4, 1)}


def test_a_record_the_transforms_hold_across_a_rename_keeps_the_old_name():
    h = chained({"journald-bridge.multiline": "python"})
    before = Batch(h, [rec(2, TRACEBACK[0], T), rec(2, TRACEBACK[1], T + 1)], 2)
    renamed(h, "api")
    after = Batch(h, [rec(2, TRACEBACK[2], T + 2), rec(1, b"out", T + 3)], 2)
    writer, _, sock, _ = run_writer([before, after, EndOfStream(h, "")])
    assert writer.drain_and_stop(5)
    # The open traceback was read under "web": it goes out whole-so-far under that name, before
    # what was read under "api" (its last line among it: a rename splits a record).
    assert names(sock.sent) == [
        (TRACEBACK[0] + b"\n" + TRACEBACK[1], b"web"),
        (TRACEBACK[2], b"api"),
        (b"out", b"api"),
    ]
    assert h.committed == {1: (T + 3, 1), 2: (T + 2, 1)}


def test_what_time_releases_from_the_transforms_keeps_the_name_it_was_read_under():
    h = chained({"journald-bridge.multiline": "python"})
    writer, queue, sock, _ = run_writer([Batch(h, [rec(2, TRACEBACK[0], T)], 1)], 0.1)
    renamed(h, "api")  # no batch after it: the record is closed by its timeout, or the end
    queue.put(EndOfStream(h, ""))
    assert writer.drain_and_stop(5)
    assert names(sock.sent) == [(TRACEBACK[0], b"web")]


def test_batches_that_come_one_by_one_to_an_idle_writer_go_out_in_one_send():
    queue, sock = PendingQueue(1 << 20), RecordingSocket()
    h = handle()
    writer = JournalWriter(queue, sock, Telemetry(CollectorRegistry()), lambda: None)
    writer.start()
    time.sleep(0.05)  # idle: waiting on an empty queue
    for n in range(3):  # within the gathering window: one pass, one send
        queue.put(Batch(h, [Record(1, b"l%d" % n, TS, (n + 1, 1), (n + 1, 1))], 1))
    assert writer.drain_and_stop(5)
    # one send as a rule; fewer sends than batches even on a machine that stalls the test
    assert len(sock.calls) < 3
    assert [d.split(b"\n", 1)[0] for d in sock.sent] == [
        b"MESSAGE=l0",
        b"MESSAGE=l1",
        b"MESSAGE=l2",
    ]
    assert h.committed == {1: (3, 1)}


def test_wait_tells_whether_an_item_came_to_an_empty_queue():
    queue, h = PendingQueue(1 << 20), handle()
    assert queue.wait(0.01) is False  # none came
    threading.Timer(0.05, lambda: queue.put(Batch(h, [], 1))).start()
    assert queue.wait(5) is True
    assert queue.wait(5) is False  # not empty to begin with: nothing to wait for
    assert len(queue.get_many(0, 1 << 20)) == 1
