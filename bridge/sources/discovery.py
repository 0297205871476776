"""Discovery: which containers have a reader, from the container list and the events stream.

At start-up: subscribe to events first, then list every container (so that none starts
unseen in between), decide each one's resume cursor, start readers. Then follow events:
`start` wakes or starts a reader, `rename` refreshes the fields, `destroy` forgets the
container and its resume point. When the events stream ends (dockerd restarted), reconnect with
backoff and list again; readers recover on their own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors

from bridge.config import Config
from bridge.core.container import ContainerHandle
from bridge.core.fields import ContainerInfo
from bridge.core.queue import EndOfStream, PendingQueue
from bridge.core.state import ContainerState, State
from bridge.core.timestamps import parse_general
from bridge.handles import HandleFactory, Readback
from bridge.service.telemetry import Telemetry
from bridge.sources.docker_api.reader import TRANSIENT_ERRORS, LogReader, is_gone
from bridge.sources.filters import ContainerFilter

log = logging.getLogger(__name__)

EVENTS = ("create", "start", "die", "destroy", "rename")
_EVENT_IN_FLIGHT_SECONDS = 5  # a container younger than this may be unseen only for now


class Supervisor:
    def __init__(
        self,
        config: Config,
        api: docker.APIClient,
        queue: PendingQueue,
        telemetry: Telemetry,
        state: State,
        container_filter: ContainerFilter,
    ) -> None:
        self._api = api
        self._queue = queue
        self._telemetry = telemetry
        self.state = state
        self._filter = container_filter
        self._handles: dict[str, ContainerHandle] = {}
        self._readers: dict[str, LogReader] = {}
        self._skipped: set[str] = set()  # containers the filters leave out, until reload
        # Containers a reload excluded, with their positions: included again, they go on
        # from there instead of from their first line.
        self._parked: dict[str, ContainerHandle] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._events: Any = None
        self._thread = threading.Thread(
            target=self._follow_events, name="docker-events", daemon=True
        )
        self._resync_thread = threading.Thread(
            target=self._resync_loop, name="docker-resync", daemon=True
        )
        self.docker_connected = False
        self._config = config
        self._handle_factory = HandleFactory(config, state, telemetry)

    def reconfigure(self, config: Config, container_filter: ContainerFilter) -> None:
        """Applies a reloaded config: fields, transforms and filters, without losing a line.

        Containers the new filters exclude are let go (their readers stop; what they read is
        written); containers they now include are attached.
        """
        self.apply_config(config)
        self._filter = container_filter
        with self._lock:
            handles = list(self._handles.values())
            self._skipped.clear()
        for handle in handles:
            try:
                if self._skip_reason(handle.info) is not None:
                    log.info("container %s: no longer forwarded after reload", handle.info.name)
                    self._exclude(handle.id)
                else:
                    self._handle_factory.refresh(handle, handle.info)
                    handle.next_chain = self._handle_factory.chain(handle)
            except Exception as exc:  # one container's labels must not stop the reload
                log.exception("container %s: reload failed: %s", handle.info.name, exc)
        try:
            self._attach_all(None)
        except (*TRANSIENT_ERRORS, docker.errors.APIError) as exc:
            log.warning(
                "reload: cannot list containers now (%s); new ones attach as they start", exc
            )

    def apply_config(self, config: Config) -> None:
        self._config = config
        self._handle_factory.apply_config(config)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, journal: Readback | None) -> None:
        """Attaches to every container; raises if dockerd cannot be reached."""
        self._subscribe()
        self._attach_all(journal)
        self._thread.start()
        self._resync_thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._close_events()
        with self._lock:
            readers = list(self._readers.values())
        for reader in readers:
            reader.stop()
        deadline = time.monotonic() + timeout
        for reader in readers:
            reader.join(max(0.0, deadline - time.monotonic()))

    def snapshot(self) -> dict[str, ContainerState]:
        """Every known container's committed position, for the state file."""
        with self._lock:
            handles = [*self._handles.values(), *self._parked.values()]
        return {
            h.id: ContainerState(h.committed_cursor(), h.finished_at)
            for h in handles
            if not h.removed
        }

    @property
    def attached(self) -> int:
        with self._lock:
            return sum(1 for r in self._readers.values() if not r.finished)

    # --- discovery ------------------------------------------------------------------------

    def _subscribe(self) -> None:
        self._events = self._api.events(
            decode=True, filters={"type": ["container"], "event": list(EVENTS)}
        )
        self.docker_connected = True
        self._telemetry.docker_connected(True)

    def _attach_all(self, journal: Readback | None) -> None:
        listed = self._api.containers(all=True)
        present = {c["Id"] for c in listed}
        if journal is not None:  # start-up: prune resume points of removed containers
            for cid in set(self.state.containers) - present:
                del self.state.containers[cid]
                log.info(
                    "container %s was removed while the bridge was down; resume point pruned",
                    cid[:12],
                )
        started = time.monotonic()
        ids = [c["Id"] for c in listed]
        # Inspecting is I/O-bound: a few at a time, while this thread reads the journal back.
        # Readers start once every position is known, so that they do not compete with that.
        readers: list[LogReader] = []
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="inspect") as pool:
            for cid, data in zip(ids, pool.map(self._inspect, ids), strict=True):
                if self._stop.is_set():
                    return
                if data is None:
                    continue
                try:
                    reader = self._consider(cid, journal, inspected=data)
                except Exception as exc:  # one container's data must not stop the others
                    log.exception("container %s: cannot attach: %s", cid[:12], exc)
                    continue
                if reader is not None:
                    readers.append(reader)
        for reader in readers:
            self._start_reader(reader)
        log.info(
            "attached to %d containers in %.2f s", len(self._readers), time.monotonic() - started
        )

    def _consider(
        self,
        cid: str,
        journal: Readback | None = None,
        *,
        started: bool = False,
        inspected: dict[str, Any] | None = None,
    ) -> LogReader | None:
        """Starts or wakes the reader of one container if it is to be forwarded.

        With `inspected` (the start-up listing) a new reader is returned, not started.

        `started`: a start event just came in. The reader then opens the log stream at once,
        without asking dockerd first: with --rm, a short-lived container's logs are removed
        within a few tens of milliseconds of its start event.
        """
        with self._lock:
            handle = self._handles.get(cid)
        state: dict[str, Any] | None = None
        if handle is None or not started:
            handle, state = self._prepare(cid, journal, inspected)
            if handle is None:
                return None
        if (
            state is not None
            and not state.get("Running")
            and handle.finished_at
            and handle.finished_at == state.get("FinishedAt")
        ):
            return None  # stopped, and read to its end before: nothing new to read
        with self._lock:
            reader = self._readers.get(cid)
            if reader is not None and not reader.started:
                # registered, but its thread never ran (a failed start, or an attempt cut
                # short by a transient error): start that one instead of waking it
                if inspected is not None:
                    return reader
                self._start_reader(reader)
                return None
            if reader is not None and reader.wake():
                return None
            handle.finished_at = ""
            reader = LogReader(
                self._api,
                handle,
                self._queue,
                self._telemetry,
                self._config.forward.max_line_bytes,
                self._config.docker.reconnect_max_seconds,
                state_hint={"Running": True} if started else state,
            )
            self._readers[cid] = reader
        if inspected is not None:
            return reader
        self._start_reader(reader)
        return None

    def _start_reader(self, reader: LogReader) -> None:
        """Starts a registered reader; one that cannot start now is retried by the resync."""
        if reader.started:
            return
        try:
            reader.start()
        except RuntimeError as exc:  # "can't start new thread": the tasks limit, for now
            log.error(
                "container %s: cannot start its reader (%s); retrying later", reader.name, exc
            )

    def _inspect(self, cid: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = self._api.inspect_container(cid)
            return data
        except docker.errors.APIError as exc:
            if not is_gone(exc):
                log.warning("container %s: cannot inspect (%s); skipped for now", cid[:12], exc)
            return None

    def _prepare(
        self,
        cid: str,
        journal: Readback | None = None,
        inspected: dict[str, Any] | None = None,
    ) -> tuple[ContainerHandle | None, dict[str, Any] | None]:
        """Inspects a container; registers a handle for it when it is to be forwarded."""
        data = inspected if inspected is not None else self._inspect(cid)
        if data is None:
            return None, None
        try:
            info = ContainerInfo.from_inspect(data, _created_ns(data))
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
            self._handle_factory.refresh(parked, info)
            parked.next_chain = self._handle_factory.chain(parked)
            with self._lock:
                handle = self._handles.setdefault(cid, parked)
        elif handle is None:  # built outside the lock: it may read the journal back
            built = self._handle_factory.build(info, journal)
            with self._lock:
                handle = self._handles.setdefault(cid, built)
        return handle, data.get("State") or {}

    def _skip_reason(self, info: ContainerInfo) -> str | None:
        driver = info.log_driver
        if driver == "none":
            return "log driver none keeps no logs"
        if driver == "journald" and self._config.forward.skip_journald_driver:
            return "its log driver already writes to the journal"
        return self._filter.reason_to_skip(info)

    # --- events ---------------------------------------------------------------------------

    def _follow_events(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if self._events is None:
                    self._subscribe()
                    self._telemetry.docker_reconnect()
                    log.warning("reconnected to dockerd; listing containers again")
                    self._attach_all(None)
                    backoff = 0.5
                for event in self._events:
                    self._on_event(event)
                if not self._stop.is_set():
                    log.warning("Docker events stream ended (dockerd restarted?); reconnecting")
            except (*TRANSIENT_ERRORS, docker.errors.APIError) as exc:
                if self._stop.is_set():
                    return
                log.warning("Docker unreachable (%s); retrying in %.1f s", exc, backoff)
            except Exception as exc:  # a bug here must not end discovery
                log.exception("Docker events: unexpected error (%s); reconnecting", exc)
            self._close_events()
            self.docker_connected = False
            self._telemetry.docker_connected(False)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self._config.docker.reconnect_max_seconds)

    def _resync_loop(self) -> None:
        while not self._stop.wait(self._config.docker.resync_seconds):
            if self._events is None:
                continue  # reconnecting: that lists every container anyway
            try:
                self._resync()
            except (*TRANSIENT_ERRORS, docker.errors.APIError) as exc:
                log.debug("periodic container listing failed: %s", exc)
            except Exception as exc:  # a bug here must not end the safety net
                log.exception("periodic container listing failed: %s", exc)

    def _resync(self) -> None:
        """Attaches what the events stream missed: containers never seen, and running ones
        whose reader has finished (a missed start after a stop)."""
        settled = time.time() - _EVENT_IN_FLIGHT_SECONDS
        for container in self._api.containers(all=True):
            cid = str(container.get("Id", ""))
            with self._lock:
                handled = cid in self._handles
                known = handled or cid in self._skipped
                reader = self._readers.get(cid)
            if not cid or (not known and container.get("Created", 0) > settled):
                continue  # a create event may be on its way still
            running = container.get("State") == "running"
            was_started = reader is not None and reader.started
            unread = reader is None or reader.finished or not was_started
            if known and not (handled and running and unread):
                continue
            self._consider(cid)
            with self._lock:
                current = self._readers.get(cid)
            if (
                current is not None
                and current.started
                and (current is not reader or not was_started)
            ):
                self._telemetry.container_resynced()
                log.warning(
                    "container %s: attached by the periodic listing (a Docker event was missed)",
                    cid[:12],
                )

    def _close_events(self) -> None:
        events, self._events = self._events, None
        if events is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may raise anything
                events.close()

    def _on_event(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        actor = event.get("Actor") or {}
        cid = str(actor.get("ID") or event.get("id") or "")
        self._telemetry.docker_event(action if action in EVENTS else "other")
        if not cid:
            return
        try:
            if action == "create":
                self._prepare(cid)
            elif action == "start":
                self._consider(cid, started=True)
            elif action == "rename":
                self._rename(cid)
            elif action == "destroy":
                self._forget(cid)
        except Exception as exc:  # one container's event must not stop discovery
            log.exception("container %s: handling %s failed: %s", cid[:12], action, exc)

    def _rename(self, cid: str) -> None:
        with self._lock:
            handle = self._handles.get(cid)
        if handle is None:
            return
        data = self._api.inspect_container(cid)
        info = ContainerInfo.from_inspect(data, handle.info.created_ns)
        old = handle.info.name
        self._handle_factory.refresh(handle, info)
        log.info("container %s renamed to %s", old, info.name)

    def _exclude(self, cid: str) -> None:
        """A reload's filters leave the container out: stop reading, keep its position."""
        with self._lock:
            handle = self._handles.pop(cid, None)
            reader = self._readers.pop(cid, None)
            if handle is not None:
                self._parked[cid] = handle
        if reader is not None:
            reader.stop()
        if handle is not None:  # write what its transforms hold: it was forwarded up to here
            self._queue.put(EndOfStream(handle, handle.finished_at))

    def _forget(self, cid: str) -> None:
        """The container was removed: its last output is written, then it is forgotten."""
        with self._lock:
            handle = self._handles.pop(cid, None) or self._parked.pop(cid, None)
            reader = self._readers.pop(cid, None)
            self._skipped.discard(cid)
            self.state.containers.pop(cid, None)
        if handle is None:
            return
        handle.removed = True
        if reader is not None:
            reader.stop()  # a running reader queues what it holds, then ends the stream too
        self._queue.put(EndOfStream(handle, handle.finished_at))


def _created_ns(data: dict[str, Any]) -> int:
    created = data.get("Created")
    if not created:
        return 0
    try:
        return parse_general(str(created).encode())
    except ValueError:
        return 0
