"""The containers the bridge knows, and what happens to one when the engine says something.

Each forwarded container has a handle (positions, fields, transforms) and at most one reader
(the thread that reads its log). Containers the filters leave out are remembered until a
reload; containers a reload excluded keep their handle, parked, so that included again they go
on where they were. Every method here concerns one container and may call the engine; the
caller runs them off the events thread (sources/keyed.py), one container at a time.

This table is the one place that decides that a container has a reader: whoever asks (an
event's task, the start-up or reload listing, the periodic listing), the decision to make, wake
or start a container's reader is taken under one lock, and a reader's start is claimed under it
too, so two callers never start the same reader, nor two readers for one container.

Invariants: a handle leaves the table only when its container is removed or excluded; a
removed container's handle is marked `removed` before its reader is told, so the reader knows
to write what it holds instead of leaving it to a next start; an end of stream is always queued
after a removal, so the writer releases what the transforms hold.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import docker
import docker.errors

from bridge.config import Config
from bridge.core.container import ContainerHandle
from bridge.core.fields import ContainerInfo
from bridge.core.queue import EndOfStream
from bridge.core.state import ContainerState
from bridge.core.timestamps import parse_general
from bridge.sources.context import EngineContext
from bridge.sources.engine_api import (
    ENGINE_ERRORS,
    RUNNING,
    ContainerGone,
    ContainerStatus,
    container_status,
    is_gone,
)
from bridge.sources.filters import ContainerFilter
from bridge.sources.handles import HandleFactory, Readback
from bridge.sources.inner_journal.attach import InnerJournals

log = logging.getLogger(__name__)


class Reader(Protocol):
    """One container's log reader, whatever it reads from (sources/api, logfiles)."""

    @property
    def name(self) -> str: ...
    @property
    def started(self) -> bool: ...
    @property
    def finished(self) -> bool: ...
    @property
    def attached(self) -> bool:
        """Whether it reads the container's log now: started, not finished, and reading
        something (what the status's and the log's count of attached containers counts)."""
        ...

    def start(self) -> None: ...
    def wake(self) -> bool: ...
    def container_stopped(self) -> None: ...
    def stop(self) -> None: ...
    def join(self, timeout: float) -> None: ...


class ReaderFactory(Protocol):
    def __call__(self, handle: ContainerHandle, status: ContainerStatus | None) -> Reader: ...


# Metadata for a container the engine no longer knows (removed before it was asked), from
# what the log-file source saved when the container's log appeared; None when there is none.
OnDisk = Callable[[str], dict[str, Any] | None]


class ContainerTable:
    def __init__(
        self,
        ctx: EngineContext,
        container_filter: ContainerFilter,
        new_reader: ReaderFactory,
        on_disk: OnDisk,
        inner: InnerJournals | None = None,
        from_events: OnDisk = lambda cid: None,
    ) -> None:
        self._ctx = ctx
        self._api = ctx.api
        self.inner = inner  # the containers' own journals, where they are followed
        self._queue = ctx.queue
        self._filter = container_filter
        self._new_reader = new_reader
        self._on_disk = on_disk
        self._from_events = from_events  # a last resort: what the engine's events said
        self._factory = HandleFactory(ctx.config(), ctx.points, ctx.telemetry)
        self._lock = threading.Lock()
        self._handles: dict[str, ContainerHandle] = {}
        self._readers: dict[str, Reader] = {}
        self._launching: set[Reader] = set()  # readers whose start a caller has claimed
        self._skipped: set[str] = set()  # containers the filters leave out, until reload
        self._parked: dict[str, ContainerHandle] = {}

    # --- what the rest of the bridge asks -------------------------------------------------

    def snapshot(self) -> dict[str, ContainerState]:
        """Every known container's committed position, for the state file."""
        with self._lock:
            handles = [*self._handles.values(), *self._parked.values()]
        return {
            h.id: ContainerState(
                h.committed_cursor(),
                h.finished_at,
                h.inner.committed_json() if h.inner is not None else None,
            )
            for h in handles
            if not h.removed
        }

    @property
    def attached(self) -> int:
        with self._lock:
            return sum(1 for r in self._readers.values() if r.attached)

    def readers(self) -> list[Reader]:
        """Every reader, inner-journal ones included (to stop and join them all)."""
        with self._lock:
            readers: list[Reader] = list(self._readers.values())
        return readers + (self.inner.readers() if self.inner is not None else [])

    def needs_reader(self, cid: str, running: bool, created: float, settled: float) -> bool:
        """Whether the periodic listing should look at this container: never seen (and old
        enough for its events to have arrived), or running with no live reader."""
        with self._lock:
            handled = cid in self._handles
            known = handled or cid in self._skipped
            reader = self._readers.get(cid)
            launching = reader is not None and reader in self._launching
        if not known:
            return created <= settled
        unread = reader is None or reader.finished or not (reader.started or launching)
        return handled and running and unread

    def handle_of(self, cid: str) -> ContainerHandle | None:
        with self._lock:
            return self._handles.get(cid)

    def reader_of(self, cid: str) -> Reader | None:
        with self._lock:
            return self._readers.get(cid)

    # --- configuration --------------------------------------------------------------------

    def apply_config(self, config: Config, container_filter: ContainerFilter) -> None:
        """A reload: new fields and transforms for every container; those the new filters
        exclude are let go (what they read is written), their positions kept."""
        self._filter = container_filter
        self._factory.apply_config(config)
        with self._lock:
            handles = list(self._handles.values())
            self._skipped.clear()
        for handle in handles:
            try:
                if self._skip_reason(handle.info) is not None:
                    log.info("container %s: no longer forwarded after reload", handle.info.name)
                    self.exclude(handle.id)
                else:
                    self._factory.refresh(handle, handle.info)
                    handle.next_chain = self._factory.chain(handle)
            except Exception as exc:  # one container's labels must not stop the reload
                log.exception("container %s: reload failed: %s", handle.info.name, exc)

    # --- one container --------------------------------------------------------------------

    def consider(
        self,
        cid: str,
        journal: Readback | None = None,
        *,
        started: bool = False,
        inspected: dict[str, Any] | None = None,
    ) -> Reader | None:
        """Starts or wakes the reader of one container if it is to be forwarded.

        With `inspected` (the start-up listing) a new reader is returned, not started; without,
        the reader this call started is returned (None when it only woke one, or did nothing).

        `started`: it just started. A known container's reader then opens its log at once,
        without asking the engine first: a `--rm` container's log is gone tens of
        milliseconds after it exits.
        """
        with self._lock:
            handle = self._handles.get(cid)
        status: ContainerStatus | None = None
        if handle is None or not started:
            handle, status = self.prepare(cid, journal, inspected)
            if handle is None:
                return None
        if (
            status is not None
            and not status.running
            and handle.finished_at
            and handle.finished_at == status.finished_at
        ):
            return None  # stopped, and read to its end before: nothing new to read
        reader = self._attach(cid, handle, status, started=started, listing=inspected is not None)
        self._inner_running(handle, status)  # after the log reader: a --rm container goes fast
        return reader

    def _attach(
        self,
        cid: str,
        handle: ContainerHandle,
        status: ContainerStatus | None,
        *,
        started: bool,
        listing: bool,
    ) -> Reader | None:
        with self._lock:
            reader = self._readers.get(cid)
            if reader is None or not (reader.started or reader in self._launching):
                pass  # none, or registered but its thread never ran: started below
            elif reader.wake():
                return None
            else:
                reader = None  # it finished: a new one reads on from its position
            if reader is None:
                handle.finished_at = ""
                reader = self._new_reader(handle, RUNNING if started else status)
                self._readers[cid] = reader
        if listing:
            return reader
        return reader if self.start_reader(reader) else None

    def _inner_running(self, handle: ContainerHandle, status: ContainerStatus | None) -> None:
        """Looks for the container's own journal while it runs (its pid is in `state`; a start
        event's fast path has none, and asks, after its log reader is on its way)."""
        if self.inner is None:
            return
        if status is None:
            try:
                status = container_status(self._api, handle.id)
            except (ContainerGone, *ENGINE_ERRORS) as exc:
                log.debug("container %s: no pid for its journal (%s)", handle.info.name, exc)
                return
        if status.running and status.pid:
            self.inner.running(handle, status.pid)

    def inner_found(self, cid: str, pid: int) -> None:
        """The watch found a journal in the container (on the container's task queue)."""
        handle = self.handle_of(cid)
        if self.inner is not None and handle is not None and not handle.removed:
            self.inner.found(handle, pid)

    def start_reader(self, reader: Reader) -> bool:
        """Starts a registered reader; True when this call started it. One that cannot start
        now is retried by the periodic listing."""
        with self._lock:  # the claim: of two callers, one starts it and the other returns
            if reader.started or reader in self._launching:
                return False
            self._launching.add(reader)
        try:
            reader.start()
            return True
        except RuntimeError as exc:  # "can't start new thread": the tasks limit, for now
            log.error(
                "container %s: cannot start its reader (%s); retrying later", reader.name, exc
            )
            return False
        finally:
            with self._lock:
                self._launching.discard(reader)

    def inspect(self, cid: str) -> dict[str, Any] | None:
        """The engine's answer, or what was saved from disk for a container already gone."""
        try:
            data: dict[str, Any] = self._api.inspect_container(cid)
            return data
        except docker.errors.APIError as exc:
            if not is_gone(exc):
                log.warning("container %s: cannot inspect (%s); skipped for now", cid[:12], exc)
                return None
        saved = self._on_disk(cid)
        if saved is not None:
            log.info("container %s: already removed; its metadata comes from disk", cid[:12])
            return saved
        saved = self._from_events(cid)
        if saved is not None:
            log.info("container %s: already removed; its metadata comes from its events", cid[:12])
        return saved

    def stopped(self, cid: str) -> None:
        """The container stopped (a `die` event): its reader reads to the end and finishes."""
        reader = self.reader_of(cid)
        if reader is not None:
            reader.container_stopped()

    def rename(self, cid: str) -> None:
        with self._lock:
            handle = self._handles.get(cid)
        if handle is None:
            return
        data = self._api.inspect_container(cid)
        info = self._info(data, handle.info.created_ns)
        old = handle.info.name
        self._factory.refresh(handle, info)
        log.info("container %s renamed to %s", old, info.name)

    def exclude(self, cid: str) -> None:
        """A reload's filters leave the container out: stop reading, keep its position."""
        with self._lock:
            handle = self._handles.pop(cid, None)
            reader = self._readers.pop(cid, None)
            if handle is not None:
                self._parked[cid] = handle
        if reader is not None:
            reader.stop()
        if self.inner is not None:
            self.inner.stop(cid)
        if handle is not None:  # write what its transforms hold: it was forwarded up to here
            self._queue.put(EndOfStream(handle, handle.finished_at))

    def forget(self, cid: str) -> None:
        """The container was removed: its last output is written, then it is forgotten."""
        with self._lock:
            handle = self._handles.pop(cid, None) or self._parked.pop(cid, None)
            reader = self._readers.pop(cid, None)
            self._skipped.discard(cid)
        self._ctx.points.forget(cid)
        if handle is None:
            return
        handle.removed = True
        if self.inner is not None:
            self.inner.forget(cid)
        if reader is not None:
            reader.stop()  # a running reader writes what it holds, then ends the stream too
        self._queue.put(EndOfStream(handle, handle.finished_at))

    def prepare(
        self,
        cid: str,
        journal: Readback | None = None,
        inspected: dict[str, Any] | None = None,
    ) -> tuple[ContainerHandle | None, ContainerStatus | None]:
        """Inspects a container; registers a handle for it when it is to be forwarded."""
        data = inspected if inspected is not None else self.inspect(cid)
        if data is None:
            return None, None
        try:
            info = self._info(data, _created_ns(data))
        except (KeyError, TypeError, ValueError) as exc:
            log.error("container %s: unusable inspect answer (%s); skipped", cid[:12], exc)
            return None, None
        reason = self._skip_reason(info)
        if reason is not None:
            log.debug("container %s (%s): not forwarded: %s", info.name, cid[:12], reason)
            with self._lock:
                self._skipped.add(cid)
            return None, None
        with self._lock:
            handle = self._handles.get(cid)
            parked = self._parked.pop(cid, None)
        if handle is None and parked is not None:  # included again: go on where it was left
            parked.start, parked.read_cursor = parked.committed_cursor(), None
            self._factory.refresh(parked, info)
            parked.next_chain = self._factory.chain(parked)
            with self._lock:
                handle = self._handles.setdefault(cid, parked)
        elif handle is None:  # built outside the lock: it may read the journal back
            built = self._factory.build(info, journal)
            with self._lock:
                handle = self._handles.setdefault(cid, built)
        state = data.get("State")
        return handle, ContainerStatus.of(state if isinstance(state, dict) else {})

    def _info(self, data: dict[str, Any], created_ns: int) -> ContainerInfo:
        return ContainerInfo.from_inspect(
            data, created_ns, engine=self._ctx.name, engine_host=self._ctx.host
        )

    def _skip_reason(self, info: ContainerInfo) -> str | None:
        driver = info.log_driver
        if driver == "none":
            return "log driver none keeps no logs"
        if driver == "journald" and self._ctx.config().forward.skip_journald_driver:
            return "its log driver already writes to the journal"
        return self._filter.reason_to_skip(info)


def _created_ns(data: dict[str, Any]) -> int:
    created = data.get("Created")
    if not created:
        return 0
    try:
        return parse_general(str(created).encode())
    except ValueError:
        return 0
