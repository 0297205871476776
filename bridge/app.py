"""The bridge's lifecycle: start-up, the main loop, reload, graceful shutdown.

Start-up order matters for exactly-once delivery: journal socket, state file, the journal
writer, Docker, then the resume checkpoint (a marker journald must store before positions are
read back from the journal), and only then the readers. READY=1 follows.
Shutdown: STOPPING=1, stop the readers, let the writer send everything they read, save the
positions, exit 0 -- all within `_SHUTDOWN_SECONDS`, well inside the unit's TimeoutStopSec. A
second SIGTERM or SIGINT abandons the drain: positions of what was written are saved, and the
rest is read again at the next start.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

import docker
import docker.utils
from prometheus_client import CollectorRegistry

from bridge import __version__
from bridge.config import Config, ConfigError, load_config
from bridge.core.queue import PendingQueue
from bridge.core.state import State, StateError, StateStore
from bridge.service.http import StatusServer
from bridge.service.notify import Notifier
from bridge.service.telemetry import Telemetry
from bridge.sinks.journald.readback import JournalPositions
from bridge.sinks.journald.socket import JournalSocket
from bridge.sinks.journald.writer import JournalWriter
from bridge.sources.discovery import Supervisor
from bridge.sources.docker_api.reader import TRANSIENT_ERRORS
from bridge.sources.filters import ContainerFilter, own_container_id
from bridge.sources.logfiles.source import LogFileSource
from bridge.sources.select import SourceSelector

log = logging.getLogger(__name__)

# The unit's TimeoutStopSec is 30 s: stopping the readers, draining the queue and saving the
# positions must fit well inside it, or systemd's SIGKILL loses the save.
_READERS_STOP_SECONDS = 3.0
_SHUTDOWN_DRAIN_SECONDS = 15.0
_STATUS_EVERY = 5.0
# The writer beats at least every quarter second, and while it waits on journald; this long
# without a beat means it is wedged (readiness says so; the watchdog gets no ping).
_WRITER_STALL_SECONDS = 10.0
# Sections whose changes need a restart: reload keeps their running values, all of them.
_RESTART_SECTIONS = ("docker", "journal", "state", "metrics")


def docker_client(config: Config) -> docker.APIClient:
    kwargs: dict[str, Any] = docker.utils.kwargs_from_env()
    if config.docker.host:
        kwargs["base_url"] = config.docker.host
    # docker-py keeps a connection pool per request URL (so each reader's stream has its own)
    # and fills a new pool's queue up to max_pool_size, then drains it when the pool is
    # evicted: at 4096 that cost 8 ms of CPU per request and 8 s to attach 500 containers.
    # A few connections per URL is all any URL needs.
    return docker.APIClient(version="1.41", timeout=30, max_pool_size=4, **kwargs)


class Bridge:
    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self._config_path = config_path
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.registry = CollectorRegistry()
        self.telemetry = Telemetry(self.registry, per_container=config.metrics.per_container)
        self.notifier = Notifier()
        self.journal = JournalSocket(
            config.journal.socket, config.journal.send_buffer_bytes, self.telemetry
        )
        self.queue = PendingQueue(config.journal.max_pending_bytes)
        self.writer = JournalWriter(
            self.queue, self.journal, self.telemetry, self.notifier.heartbeat
        )
        self.store = StateStore(config.state.directory)
        self.supervisor: Supervisor | None = None
        self.http: StatusServer | None = None
        self.files: LogFileSource | None = None
        self._failed = False

    # --- entry point ----------------------------------------------------------------------

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        try:
            if self._startup():
                self._main_loop()
            self._shutdown()
            return 1 if self._failed else 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload.set()
        elif self._stop.is_set():
            log.warning("second stop signal: saving positions and exiting now")
            self.writer.abandon()
        else:
            self._stop.set()

    # --- start-up -------------------------------------------------------------------------

    def _startup(self) -> bool:
        cfg = self.config
        log.info("journald-bridge %s starting", __version__)
        if cfg.metrics.enabled:
            self.http = StatusServer.from_config(cfg.metrics, self.registry, self.readiness)
            self.http.start()
            log.info("metrics on %s", cfg.metrics.url)
        if not self._wait_for("journal socket " + cfg.journal.socket, self._connect_journal):
            return False
        try:
            state = self.store.load()
        except StateError as exc:
            log.error("%s", exc)
            self._failed = True
            return False
        if state is None:
            state = State(first_run_ns=time.time_ns())
            self.store.save(state)
            log.info("first run on this host: state kept in %s", self.store.path)
        self.writer.start()
        api = docker_client(cfg)
        if not self._wait_for("dockerd", api.ping):
            return False
        self.files = self._log_files(api)
        positions = self._journal_positions()
        try:
            self.supervisor = Supervisor(
                cfg,
                api,
                self.queue,
                self.telemetry,
                state,
                ContainerFilter(cfg.filter, own_container_id()),
                SourceSelector(api, self.queue, self.telemetry, lambda: self.config, self.files),
                self.files.on_disk if self.files is not None else lambda cid: None,
            )
            if not self._wait_for("dockerd", lambda: self._start_supervisor(positions)):
                return False
        finally:
            if positions is not None:
                positions.close()
        self.notifier.ready(self._status())
        return True

    def _log_files(self, api: docker.APIClient) -> LogFileSource | None:
        """The engine's log files, watched from now on; None where they are not to be read."""
        cfg = self.config.docker
        if cfg.source == "api" or not cfg.local:
            return None
        try:
            root = str(api.info()["DockerRootDir"])
        except (*TRANSIENT_ERRORS, docker.errors.APIError, KeyError, TypeError) as exc:
            log.warning("cannot ask dockerd where its files are (%s); reading through the API", exc)
            return None
        files = LogFileSource(root, self.telemetry, self._log_appeared)
        files.start()
        return files

    def _log_appeared(self, container_id: str) -> None:
        if self.supervisor is not None:  # before, the start-up listing finds it
            self.supervisor.submit(container_id, "start")

    def _start_supervisor(self, positions: JournalPositions | None) -> None:
        assert self.supervisor is not None
        self.supervisor.start(positions)

    def _connect_journal(self) -> None:
        self.journal.connect()

    def _wait_for(self, what: str, attempt: Any) -> bool:
        """Retries `attempt` with backoff until it succeeds or a stop is requested."""
        backoff, reported = 0.2, False
        while not self._stop.is_set():
            try:
                attempt()
                if reported:
                    log.warning("%s is available now", what)
                return True
            except (*TRANSIENT_ERRORS, docker.errors.APIError) as exc:
                if not reported:
                    log.warning("waiting for %s: %s", what, exc)
                    reported = True
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.config.docker.reconnect_max_seconds)
        return False

    def _journal_positions(self) -> JournalPositions | None:
        cfg = self.config.journal
        if not cfg.resume_from_journal:
            return None
        try:
            positions = JournalPositions(cfg.namespace)
        except OSError as exc:
            log.warning(
                "cannot open the journal to read resume points back (%s); using the state file", exc
            )
            return None
        if not positions.sync(
            lambda d: self.journal.send(d, lambda: not self._stop.is_set()),
            cfg.sync_timeout_seconds,
        ):
            log.warning(
                "journald did not store the resume checkpoint in time; positions may be older"
            )
        return positions

    # --- running --------------------------------------------------------------------------

    def _main_loop(self) -> None:
        next_save = next_status = time.monotonic()
        while not self._stop.wait(0.2):
            if self._reload.is_set():
                self._reload.clear()
                self._do_reload()
            now = time.monotonic()
            if now >= next_save:
                next_save = now + self.config.state.flush_interval_seconds
                self._save()
            if now >= next_status:
                next_status = now + _STATUS_EVERY
                self.notifier.status(self._status())

    def _do_reload(self) -> None:
        self.notifier.reloading()
        try:
            new = load_config(self._config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
        else:
            kept: dict[str, Any] = {}
            for section in _RESTART_SECTIONS:
                if getattr(new, section) != getattr(self.config, section):
                    log.warning("reload: changes to [%s] take effect at the next restart", section)
                    kept[section] = getattr(self.config, section)
            new = new.model_copy(update=kept)
            if self.supervisor is not None:
                self.supervisor.reconfigure(new, ContainerFilter(new.filter, own_container_id()))
            self.config = new
            log.info("configuration reloaded from %s", self._config_path)
        self.notifier.ready(self._status())

    def _save(self) -> None:
        if self.supervisor is None:
            return
        state = self.supervisor.state
        state.containers = self.supervisor.snapshot()
        try:
            self.store.save(state)
        except OSError as exc:
            log.error("cannot save positions to %s: %s", self.store.path, exc)

    def _status(self) -> str:
        attached = self.supervisor.attached if self.supervisor is not None else 0
        return f"{attached} containers attached, {self.writer.lines_forwarded} lines forwarded"

    def readiness(self) -> str | None:
        if not self.writer.alive:
            return "the journal writer has stopped"
        stalled = time.monotonic() - self.writer.last_beat
        if stalled > _WRITER_STALL_SECONDS:
            return f"the journal writer has not moved for {stalled:.0f} s"
        if self.supervisor is None or not self.supervisor.docker_connected:
            return "not connected to dockerd"
        if not self.journal.writable():
            return f"journal socket {self.config.journal.socket} is not accepting entries"
        return None

    # --- shutdown -------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping: writing what was read, saving positions")
        if self.supervisor is not None:
            self.supervisor.stop(timeout=_READERS_STOP_SECONDS)
        if self.files is not None:
            self.files.stop()
        if not self.writer.drain_and_stop(_SHUTDOWN_DRAIN_SECONDS):
            log.warning(
                "journald did not take every line in time; they will be read again at start"
            )
        self._save()
        if self.http is not None:
            self.http.stop()
        log.info("stopped; %d lines forwarded", self.writer.lines_forwarded)
