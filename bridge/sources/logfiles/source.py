"""An engine's log files as a source: the watcher's catch, kept until a reader claims it.

One source per engine, with one watcher (watch.py, one inotify instance), one read loop
(readloop.py: the thread that runs every reader of its files) and the engine's
layout (layout.py: Docker's `containers/`, Podman's `overlay-containers/`). The watcher opens
each container's log file the moment it appears, which for a `--rm` container that lives a
millisecond is long before the engine's API says anything. Its descriptor waits here until
discovery has decided about the container: a reader claims it, or, unclaimed (a container left
out by the filters), it is closed after `_UNCLAIMED_SECONDS`. The metadata saved beside it
(Docker's config.v2.json, hostconfig.json) answers for a container the engine has already
forgotten; Podman keeps none on disk (`on_disk` is None).

Invariants: at most `_MAX_WAITING` containers' descriptors wait (the oldest unclaimed are closed
past that); a descriptor is closed exactly once, by whoever holds it last (here, the
container's Replacements, or the reader's file set). Every file after a container's first
goes to its Replacements (rotation/replaced.py, bounded), before and after the claim, and its
file set reads them in order: Podman's replaced files keep no name, and dockerd deletes a
rotated file two rotations later, within milliseconds under a fast writer.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.core.fields import ContainerInfo
from bridge.sources.logfiles.layout import DOCKER, Layout, for_engine
from bridge.sources.logfiles.opener import Opener
from bridge.sources.logfiles.readloop import ReadLoop
from bridge.sources.logfiles.rotation import FileSet
from bridge.sources.logfiles.rotation.numbered import NumberedFiles
from bridge.sources.logfiles.rotation.replaced import (
    MAX_BYTES,
    MAX_FILES,
    HeldBudget,
    ReplacedFiles,
    Replacements,
)
from bridge.sources.logfiles.safe_open import OpenFailed, close_quietly, open_regular
from bridge.sources.logfiles.watch import LogFileWatcher, OpenedLog
from bridge.telemetry import Telemetry

__all__ = ["LogFileSource"]

log = logging.getLogger(__name__)

_UNCLAIMED_SECONDS = 120.0
HELD_TOTAL_BYTES = 1 << 30
_MAX_WAITING = 4096


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A container's first file, opened by the watcher, until a reader claims it."""

    since: float  # time.monotonic() when it began to wait
    log: OpenedLog
    replacements: Replacements | None  # Podman: the files after it

    def close(self) -> None:
        close_quietly(self.log.fd)
        if self.replacements is not None:
            self.replacements.close()


class LogFileSource:
    """Implements the watcher's LogFileEvents; `on_start(cid)` is told of each new log.

    `root`: the engine's DockerRootDir (Docker) or storage root (Podman's graphRoot, which its
    compat `/info` reports as DockerRootDir). `max_held_files`/`max_held_bytes` bound what one
    Podman container's Replacements hold while its reader is behind."""

    def __init__(
        self,
        root: str,
        telemetry: Telemetry,
        on_start: Callable[[str], None],
        *,
        layout: Layout = DOCKER,
        max_held_files: int = MAX_FILES,
        max_held_bytes: int = MAX_BYTES,
        max_held_total: int = HELD_TOTAL_BYTES,
        opener: bool = False,
    ) -> None:
        """`opener`: files are opened by a process of its own (opener.py), not a thread here.
        `max_held_total`: the bytes all containers' held files may take together."""
        self.root = root
        self.layout = layout
        self._telemetry = telemetry
        self._on_start = on_start
        self._max_held = (max_held_files, max_held_bytes)
        self._budget = HeldBudget(max_held_total, on_drop=self._held_file_dropped)
        self._budget_reached = False
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiting] = {}
        self._claimed: set[str] = set()  # containers whose reader follows their files
        self._replacements: dict[str, Replacements] = {}  # claimed containers' (Podman)
        self._watcher = LogFileWatcher(
            root, self, layout=layout, opener=Opener(root, layout) if opener else None
        )
        self.read_loop = ReadLoop()  # runs every reader of this engine's files

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
        return cls(root, telemetry, on_start, layout=layout, opener=True, **bounds)

    def start(self) -> None:
        self.read_loop.start()
        self._watcher.start()

    def stop(self) -> None:
        """After the readers stopped: the loop runs their last steps."""
        self._watcher.stop()
        self.read_loop.stop()
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for entry in waiting.values():
            entry.close()

    # --- for discovery and the readers ----------------------------------------------------

    def open(self, info: ContainerInfo) -> FileSet | None:
        """The container's log files, positioned at their start; None when they cannot be
        read here (another log driver, no such file, no permission): the reason is logged."""
        fmt = self.layout.format(info.log_driver)
        path = self.layout.path(self.root, info.id, info.log_driver)
        if fmt is None or path is None:
            log.info("container %s: log driver %s has no file to read", info.name, info.log_driver)
            return None
        with self._lock:  # one step: a file the watcher opens meanwhile goes to Replacements
            entry = self._waiting.pop(info.id, None)
            self._claimed.add(info.id)
            replacements = entry.replacements if entry is not None else None
            replacements = replacements or self._new_replacements(info.id)
            self._replacements[info.id] = replacements
        fd = entry.log.fd if entry is not None else None
        try:
            if self.layout.replaced:
                return ReplacedFiles(path, fmt, fd=fd, replacements=replacements)
            return NumberedFiles(path, fmt, fd=fd, replacements=replacements)
        except OSError as exc:
            if fd is not None:
                close_quietly(fd)
            self.released(info.id)
            log.info("container %s: cannot read %s (%s)", info.name, path, exc.strerror or exc)
            return None

    def released(self, container_id: str) -> None:
        """The container's reader is done with its files (it ended, or the container is gone)."""
        with self._lock:
            self._claimed.discard(container_id)
            replacements = self._replacements.pop(container_id, None)
        if replacements is not None:
            replacements.close()
            if self.layout.replaced:
                self._keep_current(container_id)

    def _keep_current(self, cid: str) -> None:
        """Podman: a container started again appends to the same ctr.log (conmon opens it
        O_APPEND), and conmon may replace it before a new reader claims it; then no name leads
        to what it appended. So the current file is held as the container's first, like a new
        one (closed unclaimed after `_UNCLAIMED_SECONDS`). Not for a removed container."""
        path = self.layout.path(self.root, cid, self.layout.sub_kind)
        if path is None or not self._watcher.watched(cid):
            return
        try:
            fd, _ = open_regular(path)
        except OpenFailed:
            return
        os.set_blocking(fd, True)
        kept = OpenedLog(cid, fd, path, self.layout.sub_kind, False, None, None)
        now = time.monotonic()
        with self._lock:
            if cid in self._claimed or cid in self._waiting:
                expired = [_Waiting(now, kept, None)]  # a reader, or a newer file, came first
            else:
                self._waiting[cid] = _Waiting(now, kept, self._new_replacements(cid))
                expired = self._expired(now)
        for old in expired:
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
        """A reader's one-shot wake-up (FileReader's `Follow`): at the next change of its
        files (the watcher), or the next write into them (the read loop's own watch)."""

        directory: str | None = None  # found once: a log does not move between directories

        def arm(on_change: Callable[[], None]) -> bool:
            nonlocal directory
            if not self._watcher.follow(container_id, on_change):
                return False
            directory = directory or self._watcher.log_dir(container_id)
            return directory is not None and self.read_loop.watch(directory, on_change)

        return arm

    def on_disk(self, container_id: str) -> dict[str, Any] | None:
        """An inspect-like answer from the files saved when the log appeared, or None (always
        for Podman, whose userdata/config.json holds neither the name nor the labels)."""
        with self._lock:
            entry = self._waiting.get(container_id)
        if entry is None or entry.log.config is None:
            return None
        try:
            config = json.loads(entry.log.config)
            host = json.loads(entry.log.hostconfig) if entry.log.hostconfig else {}
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
                replacements = self._replacements.get(cid) or self._waiting_replacements(cid)
                if replacements is not None:
                    replacements.offer(log_file.fd)
                else:
                    close_quietly(log_file.fd)
                return
            self._waiting[cid] = _Waiting(now, log_file, self._new_replacements(cid))
            expired = self._expired(now)
        for old in expired:
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
            replacements = self._replacements.get(container_id)
            replacements = replacements or self._waiting_replacements(container_id)
        if replacements is not None:
            replacements.missed()  # its reader reports the gap where it comes
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

    def _new_replacements(self, cid: str) -> Replacements:
        return Replacements(
            live=lambda: self._watcher.watched(cid),
            settle=self._watcher.sync,
            max_files=self._max_held[0],
            max_bytes=self._max_held[1],
            budget=self._budget,
        )

    def _held_file_dropped(self) -> None:
        self._telemetry.held_file_dropped()
        if not self._budget_reached:  # one line: the metric counts the rest
            self._budget_reached = True
            log.warning(
                "log files held unread under %s reached %d bytes together: the oldest file of "
                "the container holding the most is closed (forward.max_held_log_bytes)",
                self.root,
                self._budget.max_bytes,
            )

    def _waiting_replacements(self, cid: str) -> Replacements | None:
        entry = self._waiting.get(cid)
        return entry.replacements if entry is not None else None

    def _expired(self, now: float) -> list[_Waiting]:
        """What nobody claimed in time, or past the cap (oldest first), taken out under the
        lock; the caller closes it once the lock is released."""
        expired = [
            cid for cid, entry in self._waiting.items() if now - entry.since > _UNCLAIMED_SECONDS
        ]
        over = len(self._waiting) - len(expired) - _MAX_WAITING
        if over > 0:
            expired += [cid for cid in self._waiting if cid not in expired][:over]
        return [self._waiting.pop(cid) for cid in expired]
