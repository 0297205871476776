"""The engine's log files as a source: the watcher's catch, kept until a reader claims it.

The watcher (watch.py) opens each container's log file the moment it appears, which for a
`--rm` container that lives a millisecond is long before the Engine API says anything. Its
descriptor waits here until discovery has decided about the container: a reader claims it, or,
unclaimed (a container left out by the filters), it is closed after `_UNCLAIMED_SECONDS`.
The metadata saved beside it (config.v2.json, hostconfig.json) answers for a container the
engine has already forgotten.

Invariants: at most `_MAX_WAITING` descriptors wait (the oldest unclaimed one is closed past
that); a descriptor is closed exactly once, by whoever holds it last (here, or the reader's
file set); the first file a container's reader has not claimed is the one kept, since newer
ones are reached from it by name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from bridge.core.fields import ContainerInfo
from bridge.service.telemetry import Telemetry
from bridge.sources.logfiles.files import LogFileSet
from bridge.sources.logfiles.jsonfile import JSON_FILE
from bridge.sources.logfiles.lines import FileFormat
from bridge.sources.logfiles.local import LOCAL
from bridge.sources.logfiles.watch import LogFileWatcher, OpenedLog

log = logging.getLogger(__name__)

FORMATS: dict[str, FileFormat] = {"json-file": JSON_FILE, "local": LOCAL}
_UNCLAIMED_SECONDS = 120.0
_MAX_WAITING = 4096


class LogFileSource:
    """Implements the watcher's LogFileEvents; `on_start(cid)` is told of each new log."""

    def __init__(self, root: str, telemetry: Telemetry, on_start: Callable[[str], None]) -> None:
        self.root = root
        self._telemetry = telemetry
        self._on_start = on_start
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[float, OpenedLog]] = {}
        self._claimed: set[str] = set()  # containers whose reader follows their files by name
        self._watcher = LogFileWatcher(root, self)

    def start(self) -> None:
        self._watcher.start()

    def stop(self) -> None:
        self._watcher.stop()
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for _, opened in waiting.values():
            _close(opened.fd)

    # --- for discovery and the readers ----------------------------------------------------

    def open(self, info: ContainerInfo) -> LogFileSet | None:
        """The container's log files, positioned at their start; None when they cannot be
        read here (another log driver, no such file, no permission): the reason is logged."""
        fmt = FORMATS.get(info.log_driver)
        if fmt is None:
            log.info("container %s: log driver %s has no file to read", info.name, info.log_driver)
            return None
        path = self.path(info)
        with self._lock:
            entry = self._waiting.pop(info.id, None)
            self._claimed.add(info.id)
        fd = entry[1].fd if entry is not None else None
        try:
            files = LogFileSet(path, fmt, fd=fd)
        except OSError as exc:
            if fd is not None:
                _close(fd)
            with self._lock:
                self._claimed.discard(info.id)
            log.info("container %s: cannot read %s (%s)", info.name, path, exc.strerror or exc)
            return None
        return files

    def released(self, container_id: str) -> None:
        """The container's reader is done with its files (it ended, or the container is gone)."""
        with self._lock:
            self._claimed.discard(container_id)

    def path(self, info: ContainerInfo) -> str:
        directory = os.path.join(self.root, "containers", info.id)
        if info.log_driver == "local":
            return os.path.join(directory, "local-logs", "container.log")
        return os.path.join(directory, f"{info.id}-json.log")

    def follow(self, container_id: str) -> Callable[[Callable[[], None]], bool]:
        return lambda on_change: self._watcher.follow(container_id, on_change)

    def on_disk(self, container_id: str) -> dict[str, Any] | None:
        """An inspect-like answer from the files saved when the log appeared, or None."""
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
                _close(log_file.fd)  # reached by name from the first
                return
            self._waiting[cid] = (now, log_file)
            expired = self._expired(now)
        for fd in expired:
            _close(fd)
        if log_file.created:  # it started just now: attach before the Engine API says so
            self._on_start(cid)

    def on_open_error(self, container_id: str, path: str, reason: str) -> None:
        log.warning("container %s: cannot open %s (%s)", container_id[:12], path, reason)

    def on_missed(self, container_id: str) -> None:
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

    def _expired(self, now: float) -> list[int]:
        """Descriptors nobody claimed in time, or past the cap (oldest first); under the lock."""
        expired = [
            cid for cid, (since, _) in self._waiting.items() if now - since > _UNCLAIMED_SECONDS
        ]
        over = len(self._waiting) - len(expired) - _MAX_WAITING
        if over > 0:
            expired += [cid for cid in self._waiting if cid not in expired][:over]
        return [self._waiting.pop(cid)[1].fd for cid in expired]


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
