"""The loop that moves lines: the single thread that takes batches off the queue, runs each
container's transforms, writes the entries to journald, and only then commits positions.

An entry carries the container's fields as they were when its lines were read (`Batch.fields`),
not as they are when it is sent: lines queued behind a burst keep the name they were read
under when a rename comes meanwhile. What the transforms hold across batches was read under
the fields of the last batch they took; a batch under other fields releases it first.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from bridge.core.container import ChainLike, ContainerHandle
from bridge.core.cursor import Position, stamp
from bridge.core.queue import EndOfStream, InnerBatch, Item, PendingQueue
from bridge.core.record import Record
from bridge.core.timestamps import NS_PER_SECOND
from bridge.sinks.journald.inner import commit_inner, encode_batch
from bridge.sinks.journald.native import encode_record
from bridge.sinks.journald.socket import JournalSocket
from bridge.telemetry import Telemetry

log = logging.getLogger(__name__)

# Queued bytes taken per send (about a thousand lines): under load, one pass of the loop and
# one sendmmsg run carry the lines of every container that read something meanwhile, while
# the encoded entries held at once stay small next to the queue's budget.
_BYTES_PER_SEND = 512 * 1024
# When a batch comes to an empty queue, the writer waits this long before taking it: the
# batches of the next moments (other containers' lines, a read loop's pass) go out with it, in
# one pass and one send, instead of a wake-up and a pass each. The latency it adds is this;
# under load the queue is never empty and nobody waits.
_GATHER_SECONDS = 0.005
_ERROR_LOG_INTERVAL = 60.0  # an error that repeats every pass is logged once a minute


class JournalWriter:
    """The single thread that writes entries and commits positions.

    Nothing one container sends may stop it: transforms contain their own per-line failures,
    and anything else that escapes a pass is logged and counted, and the loop goes on. Its
    pulse (`last_beat`, the watchdog ping) is what readiness and systemd watch.
    """

    def __init__(
        self,
        queue: PendingQueue,
        sock: JournalSocket,
        telemetry: Telemetry,
        heartbeat: Callable[[], None],
    ) -> None:
        self._queue = queue
        self._sock = sock
        self._telemetry = telemetry
        self._heartbeat = heartbeat
        telemetry.track_pending_bytes(lambda: queue.pending_bytes)
        self._draining = threading.Event()
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self.lines_forwarded = 0
        # Passes that may have moved a position (sent, ended or released something): a save
        # that finds the same count has nothing new to write.
        self.passes = 0
        self.last_beat = time.monotonic()
        self._timed: set[ContainerHandle] = set()  # containers whose transforms hold records
        self._held: dict[ContainerHandle, int] = {}  # bytes held by each one's transforms
        self._held_growth = 0  # change of the above since the queue was last told
        self._series: dict[ContainerHandle, tuple[str, str, str]] = {}  # per-container labels
        # Per container with transforms, the fields of the last batch they took: those of what
        # they hold.
        self._held_fields: dict[ContainerHandle, bytes] = {}
        self._last_error_log = -math.inf

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def drain_and_stop(self, timeout: float) -> bool:
        """Writes everything queued, then stops; gives up after `timeout` (journald gone).
        False when it gave up, or was told to (`abandon`)."""
        self._draining.set()
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.abandon()
            self._thread.join(5)
        return not self._abandon.is_set()

    def abandon(self) -> None:
        """Stops at once: the send in progress gives up; what is not committed is read again."""
        self._abandon.set()

    def _keep_waiting(self) -> bool:
        self._beat()
        return not self._abandon.is_set()

    def _beat(self) -> None:
        self.last_beat = time.monotonic()
        self._heartbeat()

    def _run(self) -> None:
        queue = self._queue
        while not self._abandon.is_set():
            self._beat()
            if queue.wait(self._wait_time()) and not queue.whole:
                time.sleep(_GATHER_SECONDS)
            items = queue.get_many(0, _BYTES_PER_SEND)
            nbytes = sum(item.nbytes for item in items)
            try:
                if self._timed:
                    self._tick()
                if items:
                    self._write(items)
            except Exception as exc:  # a bug must cost these lines, never the writer
                self._failed(exc)
            finally:
                if items or self._timed:
                    self.passes += 1
                growth, self._held_growth = self._held_growth, 0
                queue.release(nbytes - growth)
                for item in items:  # sent or lost to an error: their reader may queue more
                    if isinstance(item, InnerBatch):
                        item.stream.unqueued(item.nbytes)
            if not items and self._draining.is_set() and queue.empty():
                return

    def _failed(self, exc: Exception) -> None:
        self._telemetry.writer_error()
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_INTERVAL:
            self._last_error_log = now
            log.exception("journal writer: a batch failed, continuing: %s", exc)

    def _write(self, items: list[Item]) -> None:
        """Writes the batches of several containers with one send, in queue order."""
        staged: list[tuple[ContainerHandle, list[Record], bytes]] = []
        holds: dict[ContainerHandle, Mapping[int, Position]] = {}
        inner: list[InnerBatch] = []  # another stream: its order against stdout's is free
        for item in items:
            if isinstance(item, InnerBatch):
                inner.append(item)
                continue
            handle = item.handle
            if isinstance(item, EndOfStream):
                self._send_many(staged)  # everything before the end goes first
                self._settle_all(holds)
                staged, holds = [], {}
                self._end(handle, item.finished_at)
                continue
            records, fields = item.records, item.fields
            chain = self._current_chain(handle)
            if chain is not None:
                now = time.monotonic()
                held_fields = self._held_fields.get(handle, fields)
                if held_fields != fields:  # renamed: what they hold goes out as it was read
                    staged.append((handle, chain.tick(now, final=True), held_fields))
                self._held_fields[handle] = fields
                records = chain.process(records, now)
                self._telemetry.multiline_records(chain.take_merged_count())
                if chain.next_deadline() is not None:
                    self._timed.add(handle)
            staged.append((handle, records, fields))
            holds[handle] = item.held
        self._send_many(staged, inner)
        self._settle_all(holds)

    def _end(self, handle: ContainerHandle, finished_at: str) -> None:
        chain = handle.chain
        if chain is not None:  # nothing more will join what the transforms hold
            self._send(handle, chain.tick(time.monotonic(), final=True))
            self._timed.discard(handle)
        handle.finished_at = finished_at
        if handle.removed:
            self._held.pop(handle, None)
            self._held_fields.pop(handle, None)
            labels = self._series.pop(handle, None)
            if labels is not None:
                self._telemetry.container_removed(labels)

    def _current_chain(self, handle: ContainerHandle) -> ChainLike | None:
        """Swaps in transforms set by a reload, first releasing what the old ones hold."""
        new = handle.next_chain
        if new is not False:
            if handle.chain is not None:
                self._send(handle, handle.chain.tick(time.monotonic(), final=True))
            self._held_fields.pop(handle, None)
            handle.chain = new
            handle.next_chain = False
            self._settle(handle)
        return handle.chain

    def _wait_time(self) -> float:
        if not self._timed:
            return 0.25
        now = time.monotonic()
        deadlines = [
            d for h in self._timed if h.chain and (d := h.chain.next_deadline()) is not None
        ]
        return min(0.25, max(0.0, min(deadlines, default=now + 0.25) - now))

    def _tick(self) -> None:
        now = time.monotonic()
        for handle in list(self._timed):
            chain = handle.chain
            if chain is None:
                self._timed.discard(handle)
                continue
            self._send(handle, chain.tick(now))
            self._telemetry.multiline_records(chain.take_merged_count())
            if chain.next_deadline() is None:
                self._timed.discard(handle)

    def _send(self, handle: ContainerHandle, records: list[Record]) -> None:
        """Sends what the container's transforms released."""
        self._send_many([(handle, records, self._held_fields.get(handle, handle.fields))])
        self._settle(handle)

    def _settle_all(self, holds: dict[ContainerHandle, Mapping[int, Position]]) -> None:
        for handle, reader_holds in holds.items():
            handle.reader_holds = reader_holds
            self._settle(handle)

    def _settle(self, handle: ContainerHandle) -> None:
        """After a send: where the container's transforms hold lines back, and how many bytes
        (which stay counted against the queue's budget)."""
        chain = handle.chain
        held = chain.held_bytes if chain is not None else 0
        handle.chain_holds = chain.held_first() if chain is not None and held else {}
        self._held_growth += held - self._held.pop(handle, 0)
        if held:
            self._held[handle] = held

    def _send_many(
        self,
        staged: list[tuple[ContainerHandle, list[Record], bytes]],
        inner: Sequence[InnerBatch] = (),
    ) -> None:
        datagrams: list[bytes] = []
        spans: list[tuple[ContainerHandle, list[Record], int, int]] = []
        for handle, records, fields in staged:
            if records:
                start = len(datagrams)
                datagrams += [encode_record(r, fields) for r in records if r.dropped is None]
                spans.append((handle, records, start, len(datagrams)))
        inner_spans: list[tuple[InnerBatch, int, int]] = []
        for batch in inner:
            start = len(datagrams)
            datagrams += encode_batch(batch)
            inner_spans.append((batch, start, len(datagrams)))
        if not spans and not inner_spans:
            return
        sent, refused = self._sock.send_batch(datagrams, self._keep_waiting)
        # Counted once per send, not per container's batch: a pass of many containers' lines
        # that came one by one then costs a few counter updates, not a few per line.
        forwarded: dict[tuple[int, tuple[str, str, str] | None], list[int]] = {}
        for handle, records, start, end in spans:
            if sent < start:  # abandoned before it: not even its leading dropped lines commit
                continue
            self._account(
                handle,
                records,
                max(0, min(sent, end) - start),
                {i - start for i in refused if start <= i < end},
                forwarded,
            )
        for (stream, labels), (lines, nbytes) in forwarded.items():
            self._telemetry.lines_forwarded(stream, lines, nbytes, labels)
            self.lines_forwarded += lines
        for batch, start, end in inner_spans:
            if sent < start:  # abandoned before it: nothing of it (nor its end) may commit
                continue
            self._account_inner(
                batch,
                max(0, min(sent, end) - start),
                {i - start for i in refused if start <= i < end},
            )

    def _account_inner(self, batch: InnerBatch, sent: int, refused: set[int]) -> None:
        """Commits and counts one container's inner entries once `sent` of them went out."""
        labels = self._container_series(batch.handle)
        if refused:
            log.error(
                "container %s: journald refused %d inner journal entries; skipped them",
                batch.handle.info.name,
                len(refused),
            )
            self._telemetry.lines_dropped("journal_error", len(refused), container=labels)
        lines, nbytes, last = commit_inner(batch, sent, refused)
        if last is not None:
            self._telemetry.delivery_lag(time.time() - last.realtime_us / 1e6)
        if lines:
            self._telemetry.inner_entries_forwarded(lines, nbytes, labels)
            self.lines_forwarded += lines

    def _container_series(self, handle: ContainerHandle) -> tuple[str, str, str] | None:
        """The per-container labels to count under; a rename drops the old name's series,
        and a removed container gets no new ones."""
        if handle.removed or not self._telemetry.per_container:
            return None
        labels = handle.metric_labels
        old = self._series.get(handle)
        if old != labels:
            if old is not None:
                self._telemetry.container_removed(old)
            self._series[handle] = labels
        return labels

    def _account(
        self,
        handle: ContainerHandle,
        records: list[Record],
        sent: int,
        refused: set[int],
        forwarded: dict[tuple[int, tuple[str, str, str] | None], list[int]],
    ) -> None:
        """Commits one container's records once `sent` of its entries went out; counts what
        was dropped, and adds what was forwarded to `forwarded` (per stream and series)."""
        labels = self._container_series(handle)
        if refused:
            log.error(
                "container %s: journald refused %d entries; skipped them",
                handle.info.name,
                len(refused),
            )
            self._telemetry.lines_dropped("journal_error", len(refused), container=labels)
        counts: dict[int, list[int]] = {}
        dropped: dict[str, int] = {}
        last_sent: Record | None = None
        index = 0
        for record in records:
            if record.dropped is not None:
                dropped[record.dropped] = dropped.get(record.dropped, 0) + 1
            else:
                if index >= sent:
                    break  # abandoned at shutdown: not committed, so read again next start
                if index not in refused:
                    count = counts.setdefault(record.stream, [0, 0])
                    count[0] += 1
                    count[1] += len(record.message)
                    last_sent = record
                index += 1
            if not handle.commit(record.stream, record.last):
                self._telemetry.position_regression()
        for reason, lines in dropped.items():
            self._telemetry.lines_dropped(reason, lines, container=labels)
        if last_sent is not None:
            self._telemetry.delivery_lag(time.time() - stamp(last_sent.first) / NS_PER_SECOND)
        for stream, (lines, nbytes) in counts.items():
            total = forwarded.setdefault((stream, labels), [0, 0])
            total[0] += lines
            total[1] += nbytes
