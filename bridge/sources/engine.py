"""One engine: its client, its discovery, its log files, connected without holding up the others.

Each engine starts on a thread of its own. It waits for the engine to answer (with backoff),
asks what it is (`/version`: Docker or Podman) and, for a remote engine, the host it runs on
(`/info` Name, the CONTAINER_ENGINE_HOST field), watches its log files where they are to be
read, reads positions back from the journal and attaches to every container. From then on its
Supervisor follows events and reconnects by itself.

Invariants: one engine down never delays another, nor the bridge's READY=1 once some engine
answers; `down_reason()` says why an engine is not forwarding (for /readyz); a bad answer or a
TLS failure is one log line naming the engine, repeated only when the reason changes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

import docker
import docker.errors
import docker.tls
import docker.utils

from bridge.config import Config, EngineConfig
from bridge.core.queue import PendingQueue
from bridge.core.state import ResumePoints
from bridge.sources.context import EngineContext
from bridge.sources.discovery import Supervisor
from bridge.sources.engine_api import ENGINE_ERRORS, EngineKind, engine_client, engine_kind
from bridge.sources.filters import ContainerFilter
from bridge.sources.handles import Readback
from bridge.sources.inner_journal.attach import InnerJournals
from bridge.sources.logfiles.source import LogFileSource
from bridge.sources.select import SourceSelector
from bridge.telemetry import Telemetry

log = logging.getLogger(__name__)

_FIRST_BACKOFF = 0.2
_SOCKET = "/var/run/docker.sock"


class EngineReadback(Readback, Protocol):
    """The journal's word on an engine's positions (the sink's read-back), closed after use."""

    def close(self) -> None: ...


class Engine:
    def __init__(
        self,
        engine: EngineConfig,
        config: Callable[[], Config],
        queue: PendingQueue,
        telemetry: Telemetry,
        points: ResumePoints,
        container_filter: Callable[[], ContainerFilter],
        readback: Callable[[str], EngineReadback | None],
        *,
        optional: bool = False,
    ) -> None:
        """`optional`: the default engine, not configured explicitly. While its socket does not
        exist and it has never been up, it is off (one info line), not down: a Kubernetes node
        has no dockerd. Once it was up, losing it is reported as for any engine."""
        self.config = engine
        self.optional = optional
        self._absent = False  # optional, and its unix socket does not exist (yet)
        self.name = engine.name
        self._bridge_config = config
        self._queue = queue
        self._telemetry = telemetry
        self._points = points
        self._filter = container_filter
        self._readback = readback
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.supervisor: Supervisor | None = None
        self.files: LogFileSource | None = None
        self.inner: InnerJournals | None = None
        self.kind: EngineKind | None = None
        self._api: docker.APIClient | None = None
        self._attached = False  # every container listed at start-up has been considered
        self.started = threading.Event()  # set once attached (or given up at a stop)
        self._error = "not connected yet"
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-start", daemon=True)
        telemetry.engine_configured(self.name)

    # --- what the bridge asks -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def up(self) -> bool:
        """Forwarding: connected, and every container listed at start-up considered (until
        then a container that starts and is removed at once could be missed by a client that
        took /readyz at its word)."""
        supervisor = self.supervisor
        return supervisor is not None and self._attached and supervisor.connected

    def down_reason(self) -> str | None:
        """None while forwarding; else why not, in a few words."""
        if self.up:
            return None
        if self.optional and self._absent and self.supervisor is None:
            return None  # never up, no socket: off (once up, a lost dockerd is an outage)
        if self.supervisor is None:
            return self._error
        return "reconnecting" if self._attached else "attaching"

    @property
    def attached(self) -> int:
        supervisor = self.supervisor
        return supervisor.attached if supervisor is not None else 0

    def checkpoint(self) -> None:
        """Puts what the engine's containers committed into its resume points, for the next
        save; nothing before it attached (the saved ones stand: a table still being filled
        would leave out containers not reached yet)."""
        supervisor = self.supervisor
        if supervisor is not None and self._attached:
            self._points.replace(supervisor.snapshot())

    def reconfigure(self, config: Config, container_filter: ContainerFilter) -> None:
        supervisor = self.supervisor
        if supervisor is not None:
            supervisor.reconfigure(config, container_filter)

    def stop(self, timeout: float) -> None:
        self._stop.set()
        with self._lock:  # after this, _run starts no supervisor
            supervisor, files, inner = self.supervisor, self.files, self.inner
        if inner is not None:
            inner.close(timeout)  # no new inner readers while the readers stop
        if supervisor is not None:
            supervisor.stop(timeout)
        if files is not None:
            files.stop()
        self._thread.join(timeout)  # then nothing uses the client any more
        if self._api is not None:
            self._api.close()

    # --- starting -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._connect_and_attach()
        except Exception as exc:  # a bug here must end this engine, not the bridge
            log.exception("engine %s: cannot start: %s", self.name, exc)
            self._error = f"failed to start: {type(exc).__name__}"
        finally:
            self.started.set()

    def _connect_and_attach(self) -> None:
        api = engine_client(self.config)
        self._api = api
        if self._retry("connect", lambda: self._connect(api)) is None:
            return
        supervisor = self._supervisor(api)
        if supervisor is None:
            return
        readback = self._readback(self.name)
        try:
            if self._retry("attach", lambda: supervisor.start(readback)) is None:
                return
        finally:
            if readback is not None:
                readback.close()
        self._attached = True
        log.info("engine %s (%s, %s) is up", self.name, self.kind, self.config.host or "local")

    def _connect(self, api: docker.APIClient) -> None:
        host = self.config.effective_host
        absent = host.startswith("unix://") and not os.path.exists(host[len("unix://") :])
        if self.optional and absent and not self._absent:
            log.info(
                "engine %s: off, no socket at %s (it comes up if one appears)", self.name, host
            )
        self._absent = absent
        if absent:
            # Checked first because docker-py leaks the socket of a failed unix connect.
            raise FileNotFoundError(f"{host[7:]}: no such socket (is the engine running?)")
        api.ping()
        self.kind = engine_kind(api.version())

    def _supervisor(self, api: docker.APIClient) -> Supervisor | None:
        cfg = self._bridge_config()
        host = "" if self.config.local else self._host_name(api)
        files = self._log_files(api)
        inner = self._inner_journals(cfg)
        with self._lock:
            if self._stop.is_set():
                if files is not None:
                    files.stop()
                if inner is not None:
                    inner.close(1.0)
                return None
            self.files, self.inner = files, inner
            ctx = EngineContext(
                name=self.name,
                host=host,
                kind=self.kind or "docker",
                engine=self.config,
                api=api,
                queue=self._queue,
                telemetry=self._telemetry,
                points=self._points,
                config=self._bridge_config,
            )
            self.supervisor = Supervisor(
                ctx,
                self._filter(),
                SourceSelector(ctx, files),
                files.on_disk if files is not None else lambda cid: None,
                inner,
            )
            return self.supervisor

    def _inner_journals(self, cfg: Config) -> InnerJournals | None:
        """Containers' own journals, on a local engine (their pids are this host's)."""
        if not cfg.inner_journal.enabled or not self.config.local:
            return None
        inner = InnerJournals(
            self._queue,
            self._telemetry,
            self._inner_found,
            max_workers=cfg.inner_journal.max_workers,
        )
        inner.start()
        return inner

    def _inner_found(self, container_id: str, pid: int) -> None:
        supervisor = self.supervisor
        if supervisor is not None:
            supervisor.inner_journal_found(container_id, pid)

    def _host_name(self, api: docker.APIClient) -> str:
        try:
            name = api.info().get("Name")
        except ENGINE_ERRORS as exc:
            log.warning("engine %s: cannot ask its host name (%s)", self.name, exc)
            return ""
        # The remote engine's word: a field value, so bounded and printable.
        return "".join(c for c in str(name or "")[:255] if c.isprintable())

    def _log_files(self, api: docker.APIClient) -> LogFileSource | None:
        """The engine's log files, watched from now on; None where they are not to be read."""
        if self.config.source == "api" or not self.config.local or self.kind is None:
            return None
        try:
            files = LogFileSource.for_engine(
                self.kind,
                api.info(),
                self._telemetry,
                self._log_appeared,
                max_held_total=self._bridge_config().forward.max_held_log_bytes,
            )
        except (*ENGINE_ERRORS, KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning(
                "engine %s: cannot tell where its log files are (%s); reading through the API",
                self.name,
                exc,
            )
            return None
        files.start()
        return files

    def _log_appeared(self, container_id: str) -> None:
        supervisor = self.supervisor
        if supervisor is not None:  # before, the start-up listing finds it
            supervisor.submit(container_id, "start")

    def _retry(self, what: str, attempt: Callable[[], Any]) -> Any:
        """`attempt()`'s result, retried with backoff; None once a stop is requested."""
        backoff = _FIRST_BACKOFF
        while not self._stop.is_set():
            try:
                result = attempt()
                return True if result is None else result
            except ENGINE_ERRORS as exc:
                reason = _one_line(exc)
                if reason != self._error and not (self.optional and self._absent):
                    log.warning("engine %s: cannot %s: %s", self.name, what, reason)
                self._error = reason
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.config.reconnect_max_seconds)
        return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."
