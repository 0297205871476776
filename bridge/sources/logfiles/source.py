"""An engine's log files as a source: the watcher's catch, kept until a reader claims it.

One source per engine, with one watcher (watch.py, one inotify instance) and the engine's
layout (layout.py: Docker's `containers/`, Podman's `overlay-containers/`). The watcher opens
each container's log file the moment it appears, which for a `--rm` container that lives a
millisecond is long before the engine's API says anything. Its descriptor waits here until
discovery has decided about the container: a reader claims it, or, unclaimed (a container left
out by the filters), it is closed after `_UNCLAIMED_SECONDS`. The metadata saved beside it
(Docker's config.v2.json, hostconfig.json) answers for a container the engine has already
forgotten; Podman keeps none on disk (`on_disk` is None).

Invariants: at most `_MAX_WAITING` containers' descriptors wait (the oldest unclaimed are closed
past that); a descriptor is closed exactly once, by whoever holds it last (here, the hand-off,
or the reader's file set). Docker: the first file a container's reader has not claimed is the
one kept, since newer ones are reached from it by name. Podman (`layout.replaced`): replaced
files keep no name, so every file after the first goes to the container's hand-off
(handoff.py, bounded), before and after the claim, and its file set reads them in order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from bridge.core.fields import ContainerInfo
from bridge.sources.logfiles.chain import ChainFileSet
from bridge.sources.logfiles.files import LogFileSet
from bridge.sources.logfiles.handoff import MAX_BYTES, MAX_FILES, HandOff
from bridge.sources.logfiles.handover import open_regular
from bridge.sources.logfiles.layout import DOCKER, FORMATS, Layout, for_engine
from bridge.sources.logfiles.sequence import FileSet
from bridge.sources.logfiles.watch import LogFileWatcher, OpenedLog
from bridge.telemetry import Telemetry

__all__ = ["FORMATS", "LogFileSource"]

log = logging.getLogger(__name__)

_UNCLAIMED_SECONDS = 120.0
_MAX_WAITING = 4096


class LogFileSource:
    """Implements the watcher's LogFileEvents; `on_start(cid)` is told of each new log.

    `root`: the engine's DockerRootDir (Docker) or storage root (Podman's graphRoot, which its
    compat `/info` reports as DockerRootDir). `max_held_files`/`max_held_bytes` bound what one
    Podman container's hand-off holds while its reader is behind."""

    def __init__(
        self,
        root: str,
        telemetry: Telemetry,
        on_start: Callable[[str], None],
        *,
        layout: Layout = DOCKER,
        max_held_files: int = MAX_FILES,
        max_held_bytes: int = MAX_BYTES,
    ) -> None:
        self.root = root
        self.layout = layout
        self._telemetry = telemetry
        self._on_start = on_start
        self._max_held = (max_held_files, max_held_bytes)
        self._lock = threading.Lock()
        # container -> (since, its first file, the files after it: Podman only)
        self._waiting: dict[str, tuple[float, OpenedLog, HandOff | None]] = {}
        self._claimed: set[str] = set()  # containers whose reader follows their files
        self._handoffs: dict[str, HandOff] = {}  # claimed containers' (Podman)
        self._watcher = LogFileWatcher(root, self, layout=layout)

    @classmethod
    def for_engine(
        cls,
        kind: str,
        info: Mapping[str, Any],
        telemetry: Telemetry,
        on_start: Callable[[str], None],
        **bounds: int,
    ) -> LogFileSource:
        """The source of an engine of this kind ("docker", "podman") from its `/info` answer
        (DockerRootDir, and Podman's storage Driver). Raises KeyError, ValueError."""
        root, layout = str(info["DockerRootDir"]), for_engine(kind, info)
        return cls(root, telemetry, on_start, layout=layout, **bounds)

    def start(self) -> None:
        self._watcher.start()

    def stop(self) -> None:
        self._watcher.stop()
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for _, opened, handoff in waiting.values():
            _close(opened.fd)
            if handoff is not None:
                handoff.close()

    # --- for discovery and the readers ----------------------------------------------------

    def open(self, info: ContainerInfo) -> FileSet | None:
        """The container's log files, positioned at their start; None when they cannot be
        read here (another log driver, no such file, no permission): the reason is logged."""
        fmt = self.layout.format(info.log_driver)
        path = self.layout.path(self.root, info.id, info.log_driver)
        if fmt is None or path is None:
            log.info("container %s: log driver %s has no file to read", info.name, info.log_driver)
            return None
        handoff: HandOff | None = None
        with self._lock:  # one step: a file the watcher opens meanwhile goes to the hand-off
            entry = self._waiting.pop(info.id, None)
            self._claimed.add(info.id)
            if self.layout.replaced:
                handoff = entry[2] if entry is not None else None
                handoff = handoff or self._handoff(info.id)
                self._handoffs[info.id] = handoff
        fd = entry[1].fd if entry is not None else None
        try:
            if handoff is not None:
                return ChainFileSet(path, fmt, fd=fd, handoff=handoff)
            return LogFileSet(path, fmt, fd=fd)
        except OSError as exc:
            if fd is not None:
                _close(fd)
            self.released(info.id)
            log.info("container %s: cannot read %s (%s)", info.name, path, exc.strerror or exc)
            return None

    def released(self, container_id: str) -> None:
        """The container's reader is done with its files (it ended, or the container is gone)."""
        with self._lock:
            self._claimed.discard(container_id)
            handoff = self._handoffs.pop(container_id, None)
        if handoff is not None:
            handoff.close()
            self._keep_current(container_id)

    def _keep_current(self, cid: str) -> None:
        """Podman: a container started again appends to the same ctr.log (conmon opens it
        O_APPEND), and conmon may replace it before a new reader claims it; then no name leads
        to what it appended. So the current file is held as the container's first, like a new
        one (closed unclaimed after `_UNCLAIMED_SECONDS`). Not for a removed container."""
        path = self.layout.path(self.root, cid, self.layout.sub_kind)
        if path is None or not self._watcher.watched(cid):
            return
        got = open_regular(path)
        if isinstance(got, str):
            return
        fd = got[0]
        os.set_blocking(fd, True)
        kept = OpenedLog(cid, fd, path, self.layout.sub_kind, False, None, None)
        now = time.monotonic()
        expired: list[tuple[int, HandOff | None]]
        with self._lock:
            if cid in self._claimed or cid in self._waiting:
                expired = [(fd, None)]  # a reader, or a newer file, came first
            else:
                self._waiting[cid] = (now, kept, self._handoff(cid))
                expired = self._expired(now)
        for old_fd, old in expired:
            _close(old_fd)
            if old is not None:
                old.close()

    def path(self, info: ContainerInfo) -> str:
        """Where the container's log is, for the log message ("" for a driver without one)."""
        return self.layout.path(self.root, info.id, info.log_driver) or ""

    def sync(self, timeout: float = 1.0) -> bool:
        """Returns once the watcher has handled what the kernel announced before the call."""
        return self._watcher.sync(timeout)

    def waiting(self, container_id: str) -> bool:
        """Whether a file of the container, opened by the watcher, waits for its reader."""
        with self._lock:
            return container_id in self._waiting

    def follow(self, container_id: str) -> Callable[[Callable[[], None]], bool]:
        return lambda on_change: self._watcher.follow(container_id, on_change)

    def on_disk(self, container_id: str) -> dict[str, Any] | None:
        """An inspect-like answer from the files saved when the log appeared, or None (always
        for Podman, whose userdata/config.json holds neither the name nor the labels)."""
        with self._lock:
            entry = self._waiting.get(container_id)
        if entry is None or entry[1].config is None:
            return None
        try:
            config = json.loads(entry[1].config)
            host = json.loads(entry[1].hostconfig) if entry[1].hostconfig else {}
        except (ValueError, RecursionError):
            return None
        if not isinstance(config, dict) or not isinstance(host, dict):
            return None
        return {
            "Id": config.get("ID", container_id),
            "Name": config.get("Name", ""),
            "Created": config.get("Created", ""),
            "Config": config.get("Config", {}),
            "Image": config.get("Image", ""),
            "State": config.get("State", {}),
            "HostConfig": host,
        }

    # --- LogFileEvents (the watcher's thread) ---------------------------------------------

    def on_open(self, log_file: OpenedLog) -> None:
        cid = log_file.container_id
        now = time.monotonic()
        with self._lock:
            if cid in self._claimed or cid in self._waiting:
                handoff = self._handoffs.get(cid) or self._waiting_handoff(cid)
                if handoff is not None:
                    handoff.offer(log_file.fd)  # Podman: a replaced file has no name
                else:
                    _close(log_file.fd)  # Docker: reached by name from the first
                return
            handoff = self._handoff(cid) if self.layout.replaced else None
            self._waiting[cid] = (now, log_file, handoff)
            expired = self._expired(now)
        for fd, old in expired:
            _close(fd)
            if old is not None:
                old.close()
        if log_file.created:  # it started just now: attach before the Engine API says so
            self._on_start(cid)

    def on_created(self, container_id: str) -> None:
        with self._lock:
            waiting = container_id in self._waiting
        if waiting:  # found by a scan a moment before its creation event: it started just now
            self._on_start(container_id)

    def on_open_error(self, container_id: str, path: str, reason: str) -> None:
        log.warning("container %s: cannot open %s (%s)", container_id[:12], path, reason)

    def on_missed(self, container_id: str) -> None:
        with self._lock:
            handoff = self._handoffs.get(container_id) or self._waiting_handoff(container_id)
        if handoff is not None:
            handoff.missed()  # its reader reports the gap where it comes
            return
        self._telemetry.rotation_gap()
        log.warning(
            "container %s: a log file was rotated away before it could be opened", container_id[:12]
        )

    def on_removed(self, container_id: str) -> None:
        pass  # a waiting descriptor stays: the file is still to be read through it

    def on_overflow(self) -> None:
        log.warning("inotify queue overflowed; rescanning the engine's log directory")

    def on_watch_error(self, errno_name: str) -> None:
        self._telemetry.stream_error(f"inotify_{errno_name}")

    def _handoff(self, cid: str) -> HandOff:
        return HandOff(
            live=lambda: self._watcher.watched(cid),
            settle=self._watcher.sync,
            max_files=self._max_held[0],
            max_bytes=self._max_held[1],
        )

    def _waiting_handoff(self, cid: str) -> HandOff | None:
        entry = self._waiting.get(cid)
        return entry[2] if entry is not None else None

    def _expired(self, now: float) -> list[tuple[int, HandOff | None]]:
        """Descriptors nobody claimed in time, or past the cap (oldest first); under the lock."""
        expired = [
            cid for cid, (since, _, _) in self._waiting.items() if now - since > _UNCLAIMED_SECONDS
        ]
        over = len(self._waiting) - len(expired) - _MAX_WAITING
        if over > 0:
            expired += [cid for cid in self._waiting if cid not in expired][:over]
        return [(entry[1].fd, entry[2]) for entry in map(self._waiting.pop, expired)]


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
