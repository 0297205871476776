"""The inner journals of one engine's containers: which are watched, and their readers.

Discovery calls in when a container runs (`running`), when the watch has found a journal in it
(`found`, on discovery's own pool: the watch thread hands over at once), when it is let go
(`stop`) and when it is removed (`forget`). A container has at most one live inner reader; a
new process (a restart) gets a new reader, which waits for the old one and goes on after it.

A container opts out with the label `journald-bridge.inner_journal=false`; the operator turns
the whole source off with `[inner_journal] enabled = false` (then nothing is watched at all).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from bridge.core.container import ContainerHandle
from bridge.core.queue import PendingQueue
from bridge.sources.inner_journal import budget
from bridge.sources.inner_journal.reader import InnerJournalReader
from bridge.sources.inner_journal.watch import InnerJournalWatch
from bridge.telemetry import Telemetry

log = logging.getLogger(__name__)

OPT_OUT_LABEL = "journald-bridge.inner_journal"


class InnerJournals:
    def __init__(
        self,
        queue: PendingQueue,
        telemetry: Telemetry,
        found: Callable[[str, int], None],
        *,
        max_workers: int = budget.DEFAULT_SLOTS,
    ) -> None:
        """`found(container_id, pid)` is called on the watch thread: it must hand over.
        `max_workers` bounds the worker processes of all engines together (`budget`)."""
        self._queue = queue
        self._telemetry = telemetry
        self._budget = budget.shared(telemetry, max_workers)
        self._watch = InnerJournalWatch(found, telemetry)
        self._lock = threading.Lock()
        self._readers: dict[str, InnerJournalReader] = {}

    def start(self) -> None:
        self._watch.start()

    def close(self, timeout: float) -> None:
        self._watch.stop()
        self._watch.join(timeout)

    def readers(self) -> list[InnerJournalReader]:
        with self._lock:
            return list(self._readers.values())

    def running(self, handle: ContainerHandle, pid: int) -> None:
        """The container runs as `pid`: look for a journal in it, unless it opted out."""
        if pid <= 0:
            return
        if handle.info.labels.get(OPT_OUT_LABEL, "").strip().lower() in ("false", "0", "no"):
            return
        with self._lock:
            reader = self._readers.get(handle.id)
            if reader is not None and reader.wake():
                return  # followed already
        self._watch.watch(handle.id, pid)

    def found(self, handle: ContainerHandle, pid: int) -> None:
        """The watch found a journal in the container: start following it."""
        floor_us = handle.start.floor_ns // 1000 if handle.inner is None else 0
        with self._lock:
            old = self._readers.get(handle.id)
            if old is not None and old.wake():
                return
            reader = InnerJournalReader(
                handle,
                self._queue,
                self._telemetry,
                pid,
                floor_realtime_us=floor_us,
                budget=self._budget,
            )
            self._readers[handle.id] = reader
        log.info("container %s: following its own journal", handle.info.name)
        try:
            reader.start()
        except RuntimeError as exc:  # the tasks limit: the next start of the container retries
            log.error("container %s: cannot follow its journal (%s)", handle.info.name, exc)

    def stop(self, container_id: str) -> None:
        """Let go (a reload's filters): the position stays on the handle."""
        self._watch.forget(container_id)
        with self._lock:
            reader = self._readers.pop(container_id, None)
        if reader is not None:
            reader.stop()

    def forget(self, container_id: str) -> None:
        """Removed: the reader writes the container's last entries (bounded), then ends."""
        self.stop(container_id)
