"""Discovery: which containers have a reader, from the container list and the events stream.

At start-up: subscribe to events first, then list every container (so that none starts
unseen in between), decide each one's resume cursor, start readers. Then follow events:
`create` inspects, `start` wakes or starts a reader, `die` tells it the container stopped,
`rename` refreshes the fields, `destroy` forgets the container and its resume point. Each event
becomes a task for its container on a small pool (sources/keyed.py): the events thread never
waits on one container. When the events stream ends (dockerd restarted), reconnect with backoff
and list again; readers recover on their own. Every `resync_seconds` the list is read again
as a safety net for events dockerd dropped.

The periodic listing decides nothing itself: what it finds becomes a task on the container's
own queue, behind the events already received, and the table (containers.py) decides there
whether the container still needs a reader. A listing that attached a container has not proved
an event missed: under load events arrive seconds late. So such a container is only reported as
missed ("attached by the periodic listing") at the next listing, if its `start` event has not
come meanwhile.

One supervisor per engine (sources/engine.py): nothing here waits on another engine. Podman's
Docker-compatible API names removal `remove` and filters `event=die` on the server only from
4.4, so a Podman engine's events are filtered here (ACTIONS maps its names onto Docker's).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bridge.config import Config
from bridge.core.state import ContainerState
from bridge.sources.containers import (
    ContainerTable,
    OnDisk,
    Reader,
    ReaderFactory,
)
from bridge.sources.context import EngineContext
from bridge.sources.engine_api import ENGINE_ERRORS
from bridge.sources.event_metadata import EventMetadata
from bridge.sources.filters import ContainerFilter
from bridge.sources.handles import Readback
from bridge.sources.inner_journal.attach import InnerJournals
from bridge.sources.keyed import KeyedExecutor

log = logging.getLogger(__name__)

EVENTS = ("create", "start", "die", "destroy", "rename")
ACTIONS = {action: action for action in EVENTS} | {"remove": "destroy", "died": "die"}
_EVENT_IN_FLIGHT_SECONDS = 5  # a container younger than this may be unseen only for now
_EVENT_WORKERS = 4
_MAX_PENDING_EVENTS = 10_000  # past this, the periodic listing catches up instead


class Supervisor:
    def __init__(
        self,
        ctx: EngineContext,
        container_filter: ContainerFilter,
        new_reader: ReaderFactory,
        on_disk: OnDisk = lambda cid: None,
        inner: InnerJournals | None = None,
    ) -> None:
        self._ctx = ctx
        self._api = ctx.api
        self._telemetry = ctx.telemetry
        self._engine = ctx.engine
        self._event_metadata = EventMetadata(ctx.config, ctx.name)
        self.name = ctx.name
        self.containers = ContainerTable(
            ctx,
            container_filter,
            new_reader,
            on_disk,
            inner,
            self._event_metadata.inspect_like,
        )
        self._stop = threading.Event()
        self._events: Any = None
        self._work = KeyedExecutor(_EVENT_WORKERS, _MAX_PENDING_EVENTS, f"{self.name}-container")
        self._thread = threading.Thread(
            target=self._follow_events, name=f"{self.name}-events", daemon=True
        )
        self._resync_thread = threading.Thread(
            target=self._resync_loop, name=f"{self.name}-resync", daemon=True
        )
        self.connected = False
        self._unconfirmed_lock = threading.Lock()
        self._unconfirmed: set[str] = set()  # attached by the listing, no start event since

    def reconfigure(self, config: Config, container_filter: ContainerFilter) -> None:
        """Applies a reloaded config: fields, transforms and filters, without losing a line.

        Containers the new filters exclude are let go (their readers stop; what they read is
        written); containers they now include are attached.
        """
        self.containers.apply_config(config, container_filter)
        try:
            self.attach_all(None)
        except ENGINE_ERRORS as exc:
            log.warning(
                "reload: cannot list containers now (%s); new ones attach as they start", exc
            )

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, journal: Readback | None) -> None:
        """Attaches to every container; raises if dockerd cannot be reached."""
        self._subscribe()
        try:
            self.attach_all(journal)
        except BaseException:
            # Not connected until the retry's subscription: /readyz must not say "up" meanwhile.
            self._close_events()
            self.connected = False
            self._telemetry.engine_connected(self.name, False)
            raise
        self._thread.start()
        self._resync_thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._close_events()
        self._work.shutdown(wait=False)
        readers = self.containers.readers()
        for reader in readers:
            reader.stop()
        deadline = time.monotonic() + timeout
        for reader in readers:
            reader.join(max(0.0, deadline - time.monotonic()))

    def snapshot(self) -> dict[str, ContainerState]:
        return self.containers.snapshot()

    @property
    def attached(self) -> int:
        return self.containers.attached

    def submit(self, cid: str, action: str) -> None:
        """Handles an engine event (or a log file's appearance, as `start`) for one container,
        off the caller's thread, in order with the container's other events."""
        table = self.containers
        handlers: dict[str, Callable[[str], object]] = {
            "create": table.prepare,
            "start": functools.partial(table.consider, started=True),
            "die": table.stopped,
            "rename": table.rename,
            "destroy": table.forget,
        }
        handler = handlers.get(action)
        if handler is None:
            return
        task = functools.partial(handler, cid)
        if not self._work.submit(cid, task):
            log.warning("container %s: too many events queued; left to the listing", cid[:12])

    def inner_journal_found(self, cid: str, pid: int) -> None:
        """The inner-journal watch found a journal in a container (called on its thread)."""
        task = functools.partial(self.containers.inner_found, cid, pid)
        if not self._work.submit(cid, task):
            log.warning("container %s: too many events queued; its journal waits", cid[:12])

    # --- discovery ------------------------------------------------------------------------

    def _subscribe(self) -> None:
        filters: dict[str, list[str]] = {"type": ["container"]}
        if self._ctx.kind == "docker":
            filters["event"] = list(EVENTS)
        self._events = self._api.events(decode=True, filters=filters)
        self.connected = True
        self._telemetry.engine_connected(self.name, True)

    def attach_all(self, journal: Readback | None) -> None:
        """Lists every container and attaches those to forward; `journal` at start-up."""
        listed = self._api.containers(all=True)
        present = {c["Id"] for c in listed}
        if journal is not None:  # start-up: prune resume points of removed containers
            for cid in self._ctx.points.prune(present):
                log.info(
                    "container %s was removed while the bridge was down; resume point pruned",
                    cid[:12],
                )
        started = time.monotonic()
        ids = [c["Id"] for c in listed]
        # Inspecting is I/O-bound: a few at a time, while this thread reads the journal back.
        # Readers start once every position is known, so that they do not compete with that.
        table = self.containers
        readers: list[Reader] = []
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="inspect") as pool:
            for cid, data in zip(ids, pool.map(table.inspect, ids), strict=True):
                if self._stop.is_set():
                    return
                if data is None:
                    continue
                try:
                    reader = table.consider(cid, journal, inspected=data)
                except Exception as exc:  # one container's data must not stop the others
                    log.exception("container %s: cannot attach: %s", cid[:12], exc)
                    continue
                if reader is not None:
                    readers.append(reader)
        for reader in readers:
            table.start_reader(reader)
        log.info(
            "%s: attached to %d containers in %.2f s",
            self.name,
            table.attached,
            time.monotonic() - started,
        )

    # --- events ---------------------------------------------------------------------------

    def _follow_events(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if self._events is None:
                    self._subscribe()
                    self._telemetry.engine_reconnect(self.name)
                    log.warning("%s: reconnected; listing containers again", self.name)
                    self.attach_all(None)
                    backoff = 0.5
                for event in self._events:
                    self._on_event(event)
                if not self._stop.is_set():
                    log.warning(
                        "%s: events stream ended (engine restarted?); reconnecting", self.name
                    )
            except ENGINE_ERRORS as exc:
                if self._stop.is_set():
                    return
                log.warning("%s unreachable (%s); retrying in %.1f s", self.name, exc, backoff)
            except Exception as exc:  # a bug here must not end discovery
                log.exception("%s events: unexpected error (%s); reconnecting", self.name, exc)
            self._close_events()
            self.connected = False
            self._telemetry.engine_connected(self.name, False)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self._engine.reconnect_max_seconds)

    def _on_event(self, event: dict[str, Any]) -> None:
        if not isinstance(event, dict):
            return  # an engine's answer we do not understand: the listing catches up
        raw = str(event.get("Action") or event.get("status") or "")
        action = ACTIONS.get(raw)
        actor = event.get("Actor")
        cid = str((actor if isinstance(actor, dict) else {}).get("ID") or event.get("id") or "")
        self._telemetry.engine_event(self.name, action or "other")
        if cid and action == "start" and self._unconfirmed:
            with self._unconfirmed_lock:
                late = cid in self._unconfirmed
                self._unconfirmed.discard(cid)
            if late:
                log.debug("container %s: its start event came after the listing", cid[:12])
        if cid and action in ("create", "start", "rename") and isinstance(actor, dict):
            self._event_metadata.remember(cid, actor.get("Attributes"))
        if cid and action:
            self.submit(cid, action)
        if cid and action == "destroy":  # forgotten after the tasks before it: its start task
            self._work.submit(cid, functools.partial(self._event_metadata.forget, cid))

    def _close_events(self) -> None:
        events, self._events = self._events, None
        if events is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may raise anything
                events.close()

    # --- the safety net -------------------------------------------------------------------

    def _resync_loop(self) -> None:
        while not self._stop.wait(self._engine.resync_seconds):
            if self._events is None:
                continue  # reconnecting: that lists every container anyway
            try:
                self.resync()
            except ENGINE_ERRORS as exc:
                log.debug("periodic container listing failed: %s", exc)
            except Exception as exc:  # a bug here must not end the safety net
                log.exception("periodic container listing failed: %s", exc)

    def resync(self) -> None:
        """Attaches what the events stream missed: containers never seen, and running ones
        whose reader has finished (a missed start after a stop) or never started. Returns
        once each container's task has run (or after `resync_seconds`)."""
        self._report_missed()
        settled = time.time() - _EVENT_IN_FLIGHT_SECONDS
        table = self.containers
        done = threading.Semaphore(0)
        queued = 0
        for container in self._api.containers(all=True):
            cid = str(container.get("Id", ""))
            running = container.get("State") == "running"
            created = float(container.get("Created", 0) or 0)
            if not cid or not table.needs_reader(cid, running, created, settled):
                continue
            task = functools.partial(self._resync_one, cid, running, created, settled, done)
            if self._work.submit(cid, task):
                queued += 1
        deadline = time.monotonic() + self._engine.resync_seconds
        while queued and time.monotonic() < deadline and not self._stop.is_set():
            if done.acquire(timeout=0.5):  # short waits: a stop drops the queued tasks
                queued -= 1

    def _resync_one(
        self, cid: str, running: bool, created: float, settled: float, done: threading.Semaphore
    ) -> None:
        """On the container's queue, after the events received before it."""
        try:
            if not self.containers.needs_reader(cid, running, created, settled):
                return  # an event's task got there first
            if self.containers.consider(cid) is not None:
                with self._unconfirmed_lock:
                    self._unconfirmed.add(cid)
        finally:
            done.release()

    def _report_missed(self) -> None:
        """The containers the last listing attached whose start event has not come since."""
        with self._unconfirmed_lock:
            missed, self._unconfirmed = self._unconfirmed, set()
        for cid in sorted(missed):
            self._telemetry.container_resynced()
            log.warning(
                "container %s: attached by the periodic listing (a %s event was missed)",
                cid[:12],
                self.name,
            )
