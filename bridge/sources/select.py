"""Which source reads a container: the engine's log file, or the Engine API stream.

The engine's `source`: "api" always streams through the API; "files" always reads the file, and a
container whose file cannot be read is one clear error, counted, with no fallback; "auto" (the
default) reads the file where it can and the API otherwise. Files are only ever read for a
local engine. A first start that asks for the last N lines of a container older than the
bridge (`forward.backlog` = N) goes through the API, which has `tail`; later starts don't.
The choice is logged once per reader and is the `source` label of the attach metrics.
"""

from __future__ import annotations

import logging

from bridge.core.container import ContainerHandle
from bridge.sources.api.reader import ApiReader
from bridge.sources.containers import Reader
from bridge.sources.context import EngineContext
from bridge.sources.engine_api import ContainerStatus
from bridge.sources.logfiles.reader import FileReader
from bridge.sources.logfiles.source import LogFileSource

log = logging.getLogger(__name__)


class SourceSelector:
    """The reader factory discovery calls (sources.containers.ReaderFactory)."""

    def __init__(self, ctx: EngineContext, files: LogFileSource | None) -> None:
        self._api = ctx.api
        self._queue = ctx.queue
        self._telemetry = ctx.telemetry
        self._config = ctx.config  # the running one: a reload may change [forward]
        self._files = files
        self._engine = ctx.engine  # [docker]/[[engines]] need a restart: fixed for the run
        self._podman = ctx.kind == "podman"  # its API is read in windows (api/reader.py)

    def __call__(self, handle: ContainerHandle, status: ContainerStatus | None) -> Reader:
        cfg = self._config()
        mode = self._engine.source
        files = self._files
        name = handle.info.name
        if mode != "api" and files is not None and handle.backlog_tail is None:
            fileset = files.open(handle.info)
            if fileset is not None:
                log.info("container %s: reading its log file %s", name, files.path(handle.info))
                return FileReader(
                    self._api,
                    handle,
                    fileset,
                    self._queue,
                    self._telemetry,
                    cfg.forward.max_line_bytes,
                    files.follow(handle.id),
                    lambda: files.released(handle.id),
                    status=status,
                    loop=files.read_loop,
                )
            if mode == "files":
                self._telemetry.stream_error("file_unreadable")
                log.error(
                    "container %s: source = files, but its log file cannot be read; not forwarded",
                    name,
                )
                return Unreadable(name)
        log.info("container %s: reading its log through the Engine API", name)
        return ApiReader(
            self._api,
            handle,
            self._queue,
            self._telemetry,
            cfg.forward.max_line_bytes,
            self._engine.reconnect_max_seconds,
            status=status,
            podman=self._podman,
        )


class Unreadable:
    """The reader of a container that `source = files` cannot read: it reads nothing, so it
    is never attached (the status and /readyz's count would claim a container that is not
    forwarded), and never finished (the periodic listing must not retry it every time)."""

    attached = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = False
        self.finished = False

    def start(self) -> None:
        self.started = True

    def wake(self) -> bool:
        return True

    def container_stopped(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def join(self, timeout: float) -> None:
        pass
