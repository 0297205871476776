"""What every log reader shares, whatever it reads from: its life (on a thread of its own, or
as steps a read loop runs), the partial-line joiner, and how batches reach the queue.

Invariants every reader keeps:
- Records are queued in the order the engine stored the lines, per container.
- Each batch carries where the joiner holds a line back (`Batch.held`), so the persisted
  position never passes a line that was read but not yet written.
- When the log ends for good (the container stopped and was read to its end, or was removed),
  an unfinished line is the container's last output: it is flushed, then an EndOfStream is
  queued so that the writer releases what the transforms hold. A reader stopped for shutdown
  queues neither: the rest is read again at the next start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping

from bridge.core.container import ContainerHandle
from bridge.core.cursor import CursorFilter, Position
from bridge.core.partial import PartialJoiner
from bridge.core.queue import Batch, EndOfStream, PendingQueue
from bridge.core.record import Record, footprint
from bridge.sources.engine_api import ContainerGone
from bridge.telemetry import Telemetry

log = logging.getLogger(__name__)


def failed(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """A reader thread's unexpected exception: one log line (the traceback only at debug)."""
    logger.error(
        "%s: %s: %s", what, type(exc).__name__, exc, exc_info=logger.isEnabledFor(logging.DEBUG)
    )


class ReaderThread:
    """One container's reader; subclasses implement `_run` for their source."""

    source = ""  # the `source` metric label: "api" or "files"

    def __init__(
        self,
        handle: ContainerHandle,
        queue: PendingQueue,
        telemetry: Telemetry,
        max_line_bytes: int,
    ) -> None:
        self._handle = handle
        self._queue = queue
        self._telemetry = telemetry
        self._joiner = PartialJoiner(max_line_bytes, id_prefix=handle.info.short_id)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._wake = False
        self._finished = False
        self._start_claimed = False
        self._reported: set[str] = set()  # problems already logged for this container
        self._held: Mapping[int, Position] = {}  # the joiner's holds, as last queued
        self._steps_seen = 0  # clock steps back the cursor filters have reported
        self._announce = True  # wake the writer at each put (a read loop wakes it per pass)
        self._thread = threading.Thread(
            target=self._main, name=f"logs-{handle.info.short_id}", daemon=True
        )

    @property
    def name(self) -> str:
        return self._handle.info.name

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    @property
    def finished(self) -> bool:
        with self._lock:
            return self._finished

    @property
    def attached(self) -> bool:
        return self.started and not self.finished

    def start(self) -> None:
        """Starts the thread once; a second call, even a concurrent one, does nothing (two
        concurrent Thread.start calls both run the thread, and threading's own bookkeeping
        then fails with a KeyError outside any handler)."""
        with self._lock:
            if self._start_claimed:
                return
            self._start_claimed = True
        try:
            self._begin()
        except BaseException:
            with self._lock:
                self._start_claimed = False  # not started: a later call may try again
            raise

    def _begin(self) -> None:
        """Starts reading, once: by default on a thread of its own."""
        self._thread.start()

    def wake(self) -> bool:
        """Asks a reader that may be finishing to look at the container again.

        False when it already finished (the caller starts a new reader).
        """
        with self._lock:
            if self._finished:
                return False
            self._wake = True
            return True

    def container_stopped(self) -> None:
        """The engine said the container stopped; by default the source itself tells."""

    def stop(self) -> None:
        """Stops reading; what was read is already queued."""
        self._stop.set()

    def join(self, timeout: float) -> None:
        if self.started:
            self._thread.join(timeout)

    def _run(self) -> None:
        raise NotImplementedError

    def _steps(self) -> Iterator[float]:
        """The reading, for a reader that waits between steps (see `_wait`): yields how long
        it may wait at most before going on. By default `_run`, which waits by itself."""
        self._run()
        yield from ()

    def _wait(self, seconds: float) -> None:
        """On the reader's own thread, between two of its steps."""

    def _main(self) -> None:
        for seconds in self._life():
            self._wait(seconds)

    def _life(self) -> Iterator[float]:
        """The reader's life around its steps, whichever thread runs them."""
        self._telemetry.container_attached(self._handle.info.engine, self.source)
        try:
            yield from self._steps()
            if self._handle.removed:  # stopped because it is gone: nothing more will come
                self._last_output(self._handle.finished_at)
        except ContainerGone:
            log.info("container %s: removed; stopped reading", self.name)
            self._last_output(self._handle.finished_at)
        except Exception as exc:  # a bug must cost one container, never the bridge
            failed(log, f"container {self.name}: reader failed", exc)
        finally:
            with self._lock:
                self._finished = True
            self._telemetry.container_detached(self._handle.info.engine, self.source)

    def _put(self, records: list[Record]) -> None:
        """Queues records, and with them where the joiner holds a line back (queued even
        without records when that changed, so that the persisted position stops before it)."""
        held = self._joiner.holds()
        if not records and held == self._held:
            return
        self._held = held
        self._telemetry.partial_lines_merged(self._joiner.merged)
        self._joiner.merged = 0
        self._queue.put(
            Batch(self._handle, records, footprint(records), held), announce=self._announce
        )

    def _last_output(self, finished_at: str) -> None:
        """The stream ended for good: an unfinished line is the container's last output."""
        records = self._joiner.flush()
        if records:
            self._put(records)
        self._queue.put(EndOfStream(self._handle, finished_at), announce=self._announce)

    def _finish(self, finished_at: str) -> bool:
        """The stopped container was read to its end. True when this reader is done."""
        self._last_output(finished_at)
        with self._lock:
            if self._wake:  # a start event came in meanwhile: look again
                self._wake = False
                return False
            self._finished = True
            return True

    def _malformed(self, reason: str) -> None:
        handle = self._handle
        labels = None if handle.removed else handle.metric_labels
        self._telemetry.lines_dropped("malformed", container=labels)
        if "malformed" not in self._reported:
            self._reported.add("malformed")
            log.error(
                "container %s: dropped a log line that cannot be read (%s)", self.name, reason
            )

    def _clock_stepped(self, cursor_filter: CursorFilter) -> None:
        """The engine's clock stepped back within a stream: its lines were admitted as the
        step's window (core/cursor.py), never dropped. Counted, and logged once per step."""
        steps = cursor_filter.steps - self._steps_seen
        self._steps_seen = cursor_filter.steps
        self._telemetry.clock_steps(self.source, steps)
        log.warning(
            "container %s: its log's timestamps stepped back by %.3f s%s (the engine's wall "
            "clock was set back); its lines go on in order, none dropped",
            self.name,
            cursor_filter.last_step_ns / 1e9,
            f" ({steps} steps)" if steps > 1 else "",
        )

    def _rotation_gap(self) -> None:
        if "gap" not in self._reported:
            self._reported.add("gap")
            self._telemetry.rotation_gap()
            log.warning(
                "container %s: the engine's log rotation removed lines before the bridge read "
                "them (the number is unknown: they are gone from the engine's files)",
                self.name,
            )
