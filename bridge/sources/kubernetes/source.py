"""The Kubernetes source: one reader per container instance's log under the pods directory.

Sits beside the engines in the bridge (app.py) and answers what they answer (`up`,
`down_reason`, `attached`, `checkpoint`, `reconfigure`, `stop`); its state-file and journal
key is the engine name "kubernetes". It adds only what is Kubernetes' own to the log-file
tailer: the path list (watch.py, paths.py), the CRI format (formats/k8sfile.py, shared with
Podman) and the kubelet's rotation (rotation/kubelet.py); a log's reader is the tailer's
FileReader, and its handle, cursor, joiner, transforms and rate limits are every source's.

Invariants:
- Every `N.log` the watcher opens is kept: the first one of a log starts its reader (on the
  worker thread: CRI lookups never hold the watcher), later ones wait in the log's
  Replacements, in creation order, until the reader's KubeletFiles takes them.
- A log's metadata is looked up once, at first sight, and kept until its reader is done.
- A log ends when the runtime says its container is not running (or does not know it), or when
  its file is deleted (the kubelet removed the container); the reader then reads every held
  file to its end. Without CRI, the writer's close of `N.log` tells.
- A container left out by the filters has its descriptors closed at once.
- The CRI socket down is a /readyz reason, never a stop: lines flow with the path's fields.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.config import Config, KubernetesConfig
from bridge.core.container import ContainerHandle
from bridge.core.fields import ContainerInfo
from bridge.core.queue import PendingQueue
from bridge.core.state import ContainerState, ResumePoints
from bridge.core.timestamps import NS_PER_SECOND
from bridge.sources.engine_api import ContainerStatus
from bridge.sources.filters import ContainerFilter
from bridge.sources.handles import HandleFactory, Readback
from bridge.sources.kubernetes import cri_api_pb2 as pb
from bridge.sources.kubernetes.cri import CriClient, CriError
from bridge.sources.kubernetes.metadata import ENGINE, PodMetadata
from bridge.sources.kubernetes.paths import PodLog, parse_key
from bridge.sources.kubernetes.watch import PodLogWatcher
from bridge.sources.logfiles.formats.k8sfile import K8S_FILE
from bridge.sources.logfiles.reader import FileReader
from bridge.sources.logfiles.rotation.identity import FileId
from bridge.sources.logfiles.rotation.kubelet import KubeletFiles, WriterClosed
from bridge.sources.logfiles.rotation.replaced import Replacements
from bridge.sources.logfiles.safe_open import close_quietly
from bridge.telemetry import Telemetry

log = logging.getLogger(__name__)

_RUNNING = (pb.CONTAINER_CREATED, pb.CONTAINER_RUNNING)
_HEALTH_SECONDS = 2.0
# How often CRI is asked which containers exited (the kubelet's PLEG relists every second).
_RELIST_SECONDS = 1.0


@dataclass(eq=False)
class _Log:
    key: str
    pod_log: PodLog
    first_fd: int
    replacements: Replacements
    writer_closed: WriterClosed = field(default_factory=WriterClosed)
    reader: FileReader | None = None
    handle: ContainerHandle | None = None
    skipped: bool = False
    closed: bool = False  # the runtime closed N.log: the container exited
    exited: bool = False  # CRI listed the container as exited (its reader was told)
    deleted: bool = False  # N.log was deleted: the kubelet removed the container


class KubernetesSource:
    def __init__(
        self,
        cfg: KubernetesConfig,
        config: Callable[[], Config],
        queue_: PendingQueue,
        telemetry: Telemetry,
        points: ResumePoints,
        container_filter: Callable[[], ContainerFilter],
        readback: Callable[[str], Readback | None],
        cri_socket: str,
    ) -> None:
        self.name = ENGINE
        self._cfg = cfg
        self._config = config
        self._queue = queue_
        self._telemetry = telemetry
        self._points = points
        self._filter = container_filter()
        self._readback = readback
        self._cri = CriClient(cri_socket)
        self._socket = cri_socket
        self._health = (0.0, "")  # (when, why CRI did not answer: "" it did), for /readyz
        self.metadata = PodMetadata(self._cri, cfg.node_name or socket.gethostname())
        self._factory = HandleFactory(config(), points, telemetry)
        self._lock = threading.Lock()
        self._logs: dict[str, _Log] = {}
        self._finished: dict[str, ContainerHandle] = {}  # read to the end, files still there
        self._work: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._journal: Readback | None = None  # the read-back, for the logs there at start
        self._watcher = PodLogWatcher(cfg.pods_dir, self)
        self._worker = threading.Thread(target=self._work_loop, name="kubernetes", daemon=True)
        self._attached = False
        self._stopping = False
        self.started = threading.Event()
        telemetry.engine_configured(ENGINE)

    # --- what the bridge asks (as of an Engine) -------------------------------------------

    def start(self) -> None:
        self._journal = self._readback(ENGINE)
        self._worker.start()
        self._watcher.start()  # hands over every log already there (queued for the worker)
        self._work.put("")  # the start-up logs are done once the worker gets here
        pods, cri = self._cfg.pods_dir, self._socket
        log.info("kubernetes: reading pod logs under %s (CRI socket %s)", pods, cri)

    @property
    def up(self) -> bool:
        return self._watcher.watched_root()

    def down_reason(self) -> str | None:
        if not self.up:
            return f"cannot watch {self._cfg.pods_dir}"
        error = self._cri_health()
        if error:
            return f"CRI socket {self._socket} does not answer ({error}); path fields only"
        return None

    def _cri_health(self) -> str:
        """Why CRI did not answer its last Version call ("" if it did), asked at most every
        `_HEALTH_SECONDS` (readiness probes come often)."""
        when, error = self._health
        now = time.monotonic()
        if now - when >= _HEALTH_SECONDS:
            try:
                self._cri.version()
                error = ""
            except CriError as exc:
                error = str(exc)[:120]
            self._health = (now, error)
        return error

    @property
    def attached(self) -> int:
        with self._lock:
            return sum(1 for e in self._logs.values() if e.reader is not None)

    def checkpoint(self) -> None:
        if not self._attached:
            return  # the saved positions stand until every log there at start was reached
        with self._lock:
            handles = [e.handle for e in self._logs.values() if e.handle is not None]
            handles += self._finished.values()
        self._points.replace(
            {
                h.id: ContainerState(h.committed_cursor(), h.finished_at)
                for h in handles
                if not h.removed
            }
        )

    def reconfigure(self, config: Config, container_filter: ContainerFilter) -> None:
        """New fields and transforms for every log; the new filter decides for logs first
        seen from now on (one already read is not dropped mid-way)."""
        self._filter = container_filter
        self._factory.apply_config(config)
        with self._lock:
            handles = [e.handle for e in self._logs.values() if e.handle is not None]
        for handle in handles:
            try:
                self._factory.refresh(handle, handle.info)
                handle.next_chain = self._factory.chain(handle)
            except Exception as exc:  # one pod's annotations must not stop the reload
                log.exception("pod log %s: reload failed: %s", handle.info.name, exc)

    def stop(self, timeout: float) -> None:
        self._stopping = True
        self._work.put(None)
        self._watcher.stop()
        with self._lock:
            entries = list(self._logs.values())
        for e in entries:
            if e.reader is not None:
                e.reader.stop()
        deadline = time.monotonic() + timeout
        for e in entries:
            if e.reader is not None:
                e.reader.join(max(0.0, deadline - time.monotonic()))
        self._worker.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for e in self._logs.values():
                if e.reader is None and not e.skipped:  # (a skipped log's are closed)
                    close_quietly(e.first_fd)
                    e.replacements.close()
        self._cri.close()

    # --- PodLogEvents (the watcher's thread) ----------------------------------------------

    def on_open(self, key: str, fd: int, created: bool) -> None:
        pod_log = parse_key(key)
        if pod_log is None:
            close_quietly(fd)
            return
        with self._lock:
            entry = self._logs.get(key)
            if entry is not None:
                entry.replacements.offer(fd)  # a newer file of the log: after the first
                return
            if key in self._finished:
                close_quietly(fd)  # read to its end already (a rescan found it again)
                return
            self._logs[key] = _Log(key, pod_log, fd, self._replacements(key))
        self._work.put(key)

    def on_closed(self, key: str) -> None:
        with self._lock:
            entry = self._logs.get(key)
            if entry is None:
                return
            entry.closed = True
            reader = entry.reader
        if reader is not None:
            reader.container_stopped()

    def on_writer_closed(self, key: str, file: FileId) -> None:
        with self._lock:
            entry = self._logs.get(key)
        if entry is not None:
            entry.writer_closed.add(file)

    def on_deleted(self, key: str) -> None:
        """N.log is gone: the kubelet removed the container (its rotation renames N.log, and
        never deletes it)."""
        with self._lock:
            self._finished.pop(key, None)
            entry = self._logs.get(key)
            if entry is not None and entry.skipped:
                del self._logs[key]  # left out by the filters: nothing to read
                entry = None
            reader = None
            if entry is not None:
                entry.deleted = True
                if entry.handle is not None:
                    entry.handle.removed = True  # read what the descriptors hold, then end
                reader = entry.reader
            gone = key not in self._logs
        if gone:
            self.metadata.forget(key)
            self._watcher.released(key)
        if reader is not None:
            reader.container_stopped()

    def on_missed(self, key: str) -> None:
        with self._lock:
            entry = self._logs.get(key)
        if entry is not None:
            entry.replacements.missed()
        else:
            self._telemetry.rotation_gap()
            log.warning("pod log %s: a file was rotated away before it could be opened", key)

    # --- the worker: metadata, filters, a reader per log ----------------------------------

    def _work_loop(self) -> None:
        while True:
            try:
                key = self._work.get(timeout=_RELIST_SECONDS)
            except queue.Empty:
                self._relist()
                continue
            if key is None:
                return
            if key == "":
                self._attached = True
                self._telemetry.engine_connected(ENGINE, self.up)
                if self._journal is not None:
                    journal, self._journal = self._journal, None
                    close = getattr(journal, "close", None)
                    if close is not None:
                        close()
                self.started.set()
                continue
            try:
                self._attach(key)
            except Exception as exc:  # a bug must cost one log, never the source
                log.exception("pod log %s: cannot attach: %s", key, exc)

    def _relist(self) -> None:
        """Tells the readers of containers that exited: one ListContainers for all of them
        (containerd keeps an exited container's log open, so no close event says it)."""
        with self._lock:
            live = {
                e.handle.id: e
                for e in self._logs.values()
                if e.reader is not None and e.handle is not None and not e.exited
            }
        if not live:
            return
        exited = pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_EXITED))
        try:
            found = self._cri.call(
                "ListContainers", pb.ListContainersRequest(filter=exited), pb.ListContainersResponse
            ).containers
        except CriError:
            return  # /readyz says it; the writer's close or the file's deletion tells meanwhile
        for c in found:
            entry = live.get(c.id)
            if entry is not None and entry.reader is not None:
                entry.exited = True
                entry.reader.container_stopped()

    def _attach(self, key: str) -> None:
        with self._lock:
            entry = self._logs.get(key)
        if entry is None or self._stopping:
            return
        info = self.metadata.info(entry.pod_log)
        reason = self._skip_reason(entry.pod_log, info)
        if reason is not None:
            log.info("pod log %s: not forwarded (%s)", key, reason)
            with self._lock:
                entry.skipped = True
            close_quietly(entry.first_fd)
            entry.replacements.close()
            return
        handle = self._factory.build(info, self._journal)
        path = os.path.join(self._cfg.pods_dir, key)
        try:
            files = KubeletFiles(
                path,
                K8S_FILE,
                fd=entry.first_fd,
                replacements=entry.replacements,
                rotated=True,
                closed=entry.writer_closed,
            )
        except OSError as exc:
            log.warning("pod log %s: cannot read (%s)", key, exc.strerror or exc)
            close_quietly(entry.first_fd)
            entry.replacements.close()
            return

        log.debug(
            "pod log %s: files %s, cursor %s",
            key,
            [os.path.basename(f.name) for f in files.files()],
            handle.read_cursor or handle.start,
        )

        def follow(on_change: Callable[[], None]) -> bool:
            # while the runtime may still write a renamed file: poll instead of an event
            return not files.waiting_for_close and self._watcher.follow(key, on_change)

        status = self._status(entry, handle)
        reader = FileReader(
            None,
            handle,
            files,
            self._queue,
            self._telemetry,
            self._config().forward.max_line_bytes,
            follow,
            lambda: self._reader_done(key),
            status=status,
            status_of=lambda: self._status(entry, handle),
        )
        with self._lock:
            entry.handle = handle
            entry.reader = reader
            if entry.deleted:
                handle.removed = True
        reader.start()

    def _skip_reason(self, pod_log: PodLog, info: ContainerInfo) -> str | None:
        ns = pod_log.namespace
        cfg = self._cfg
        if cfg.namespaces and not any(fnmatch.fnmatchcase(ns, p) for p in cfg.namespaces):
            return f"namespace {ns} is not in [kubernetes] namespaces"
        if any(fnmatch.fnmatchcase(ns, p) for p in cfg.exclude_namespaces):
            return f"namespace {ns} is excluded"
        return self._filter.reason_to_skip(info)

    def _status(self, entry: _Log, handle: ContainerHandle) -> ContainerStatus | None:
        """Whether the log's container still runs; None when nobody can say now."""
        if entry.deleted:
            return ContainerStatus(running=False)
        try:
            status = self.metadata.status(handle.id)
        except CriError as exc:
            if exc.not_found:
                return ContainerStatus(running=False)
            return ContainerStatus(running=False) if entry.closed else None
        if status is None:  # no CRI, or a log CRI could not name: the writer's close tells
            return ContainerStatus(running=False) if entry.closed else None
        finished = ""
        if status.finished_at > 0:
            finished = _rfc3339(status.finished_at)
        return ContainerStatus(running=status.state in _RUNNING, finished_at=finished)

    def _reader_done(self, key: str) -> None:
        if self._stopping:
            return  # kept for the last checkpoint; the rest is read at the next start
        with self._lock:
            entry = self._logs.pop(key, None)
            if entry is None or entry.handle is None:
                return
            entry.replacements.close()
            if not entry.deleted:
                # Read to its end; its position stays in the state file while its files are
                # there, and the watcher hands none of them over again.
                self._finished[key] = entry.handle
        if entry.deleted:
            self.metadata.forget(key)
            self._watcher.released(key)

    def _replacements(self, key: str) -> Replacements:
        return Replacements(live=lambda: self._watcher.watched(key), settle=self._watcher.sync)


def _rfc3339(ns: int) -> str:
    sec, frac = divmod(ns, NS_PER_SECOND)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"
