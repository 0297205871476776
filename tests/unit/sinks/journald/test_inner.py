"""Inner-journal entries in the sink: their datagrams, what the writer commits, the queue."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor
from bridge.core.fields import ContainerInfo, encode_pairs
from bridge.core.inner import InnerStream
from bridge.core.queue import Batch, InnerBatch, PendingQueue
from bridge.core.record import Record
from bridge.sinks.journald.inner import commit_inner, encode_inner
from bridge.sinks.journald.writer import JournalWriter
from bridge.telemetry import Telemetry

TS = b"2026-11-28T00:13:57.123456789Z"


@dataclass(frozen=True)
class Pos:
    cursor: str

    def to_json(self) -> dict[str, object]:
        return {"cursor": self.cursor}


@dataclass(frozen=True)
class Entry:
    message: bytes
    priority: int | None
    native_fields: bytes
    realtime_us: int
    position: Pos


def entry(i: int, message: bytes | None = None, priority: int | None = 6) -> Entry:
    return Entry(
        message if message is not None else b"inner %d" % i,
        priority,
        b"SYSLOG_IDENTIFIER=app\n",
        int(time.time() * 1e6),
        Pos(f"c{i}"),
    )


def parse(datagram: bytes) -> list[tuple[bytes, bytes]]:
    from bridge.sources.inner_journal.protocol import decode_native

    return list(decode_native(datagram))


def handle(name: str = "web") -> ContainerHandle:
    info = ContainerInfo(id=name[0] * 64, name=name, image_name="img", image_id="sha256:b")
    return ContainerHandle.create(info, encode_pairs([("CONTAINER_NAME", name)]), Cursor())


def batch(h: ContainerHandle, entries: list[Entry], last: Pos | None = None) -> InnerBatch:
    stream = h.inner if h.inner is not None else InnerStream()
    h.inner = stream
    return InnerBatch(h, stream, list(entries), b"CONTAINER_NAME=web\n", 100 * len(entries), last)


def test_an_inner_entry_carries_its_fields_the_containers_and_its_cursor():
    datagram = encode_inner(entry(1, b"two\nlines", priority=3), b"CONTAINER_NAME=web\n")
    assert parse(datagram) == [
        (b"MESSAGE", b"two\nlines"),
        (b"PRIORITY", b"3"),
        (b"CONTAINER_STREAM", b"journal"),
        (b"CONTAINER_NAME", b"web"),
        (b"SYSLOG_IDENTIFIER", b"app"),
        (b"JOURNALD_BRIDGE_INNER_CURSOR", b"c1"),
    ]


def test_an_entry_without_a_priority_stays_without_one():
    fields = dict(parse(encode_inner(entry(1, priority=None), b"")))
    assert b"PRIORITY" not in fields


def test_commit_moves_as_far_as_what_was_dealt_with():
    h = handle()
    entries = [entry(1), entry(2), entry(3)]
    b = batch(h, entries, last=Pos("c5"))  # c4, c5 were rate-limited away
    assert commit_inner(b, 0, set())[:2] == (0, 0)
    assert b.stream.committed is None
    assert commit_inner(b, 2, set())[:2] == (2, len(b"inner 1inner 2"))
    assert b.stream.committed == Pos("c2")  # not c3, not the batch's end: those were not sent
    lines, _, last = commit_inner(b, 3, {1})
    assert lines == 2 and last is entries[2]  # the refused one is not counted, but passed
    assert b.stream.committed == Pos("c5")


def test_a_batch_without_entries_commits_its_end():
    h = handle()
    b = batch(h, [], last=Pos("end"))
    assert commit_inner(b, 0, set()) == (0, 0, None)
    assert b.stream.committed == Pos("end")


class Socket:
    def __init__(self) -> None:
        self.sends: list[list[bytes]] = []

    def send_batch(self, datagrams: list[bytes], keep_waiting: Any) -> tuple[int, list[int]]:
        self.sends.append(list(datagrams))
        return len(datagrams), []


def run(items: list[Any], sock: Any = None) -> tuple[Any, CollectorRegistry, PendingQueue]:
    registry = CollectorRegistry()
    queue = PendingQueue(1 << 20)
    sock = sock or Socket()
    for item in items:
        queue.put(item)
    writer = JournalWriter(queue, sock, Telemetry(registry), lambda: None)
    writer.start()
    assert writer.drain_and_stop(5)
    return sock, registry, queue


def test_inner_entries_and_stdout_lines_go_out_in_one_send_and_both_commit():
    h = handle()
    record = Record(1, b"stdout line", TS, (5, 1), (5, 1))
    inner = batch(h, [entry(1), entry(2)])
    sock, registry, queue = run([Batch(h, [record], 100), inner])
    (send,) = sock.sends
    assert [dict(parse(d))[b"MESSAGE"] for d in send] == [b"stdout line", b"inner 1", b"inner 2"]
    assert h.committed[1] == (5, 1)
    assert inner.stream.committed == Pos("c2")
    assert inner.stream.inflight_bytes == 0
    assert queue.pending_bytes == 0
    sample = registry.get_sample_value
    assert sample("journald_bridge_lines_forwarded_total", {"stream": "journal"}) == 2
    assert sample("journald_bridge_lines_forwarded_total", {"stream": "stdout"}) == 1


class BrokenSocket:
    def send_batch(self, datagrams: list[bytes], keep_waiting: Any) -> tuple[int, list[int]]:
        raise RuntimeError("a bug")


def test_a_failed_pass_loses_the_batch_but_frees_its_reader():
    h = handle()
    inner = batch(h, [entry(1)])
    assert inner.stream.wait_for_room(inner.nbytes, 1 << 20, threading.Event())
    _, registry, queue = run([inner], BrokenSocket())
    assert inner.stream.committed is None  # not sent: read again after a restart
    assert inner.stream.inflight_bytes == 0
    assert queue.pending_bytes == 0
    assert registry.get_sample_value("journald_bridge_writer_errors_total") == 1


def test_the_stream_bound_blocks_its_reader_until_the_writer_is_done():
    stream = InnerStream()
    stop = threading.Event()
    assert stream.wait_for_room(600, 1000, stop)  # nothing in flight: always fits
    assert stream.wait_for_room(300, 1000, stop)
    done = threading.Event()
    threading.Thread(target=lambda: (stream.wait_for_room(300, 1000, stop), done.set())).start()
    assert not done.wait(0.3)
    stream.unqueued(600)
    assert done.wait(2)
    assert stream.inflight_bytes == 600
    stop.set()
    assert not stream.wait_for_room(900, 1000, stop)  # stopped while it would have to wait


class AbandonedSocket:
    """Sends the first `count` datagrams, then gives up (a shutdown deadline passed)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def send_batch(self, datagrams: list[bytes], keep_waiting: Any) -> tuple[int, list[int]]:
        return min(self.count, len(datagrams)), []


def test_an_abandoned_send_commits_nothing_past_what_went_out():
    h = handle()
    entries = batch(h, [entry(1), entry(2), entry(3)])
    end = batch(h, [], last=Pos("end"))  # the drained end, queued right after
    run([entries, end], AbandonedSocket(2))
    assert entries.stream.committed == Pos("c2")  # not the end: entry 3 never went out
