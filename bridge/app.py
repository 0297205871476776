"""The bridge's lifecycle: start-up, the main loop, reload, graceful shutdown.

Start-up order matters for exactly-once delivery: journal socket, state file, the journal
writer, the resume checkpoint (a marker journald must store before positions are read back from
the journal), and only then the engines, each on its own (sources/engine.py): it connects,
reads its positions back and starts its readers. READY=1 follows once one engine is attached;
an engine that is down holds back neither the others nor READY=1, and /readyz names it.
Shutdown: STOPPING=1, stop the readers, let the writer send everything they read, save the
positions, exit 0 -- all within `_SHUTDOWN_SECONDS`, well inside the unit's TimeoutStopSec. A
second SIGTERM or SIGINT abandons the drain: positions of what was written are saved, and the
rest is read again at the next start.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry

from bridge import __version__
from bridge.config import EX_CONFIG, KUBERNETES_SOURCE, Config, ConfigError, load_config
from bridge.core.queue import PendingQueue
from bridge.core.state import DEFAULT_ENGINE, State, StateError, StateStore
from bridge.service.http import StatusServer
from bridge.service.notify import Notifier
from bridge.sinks.journald.readback import JournalPositions
from bridge.sinks.journald.socket import JournalSocket
from bridge.sinks.journald.writer import JournalWriter
from bridge.sources.engine import Engine
from bridge.sources.filters import ContainerFilter, own_container_id
from bridge.sources.kubernetes.enable import kubernetes_source
from bridge.sources.kubernetes.source import KubernetesSource
from bridge.telemetry import Telemetry

log = logging.getLogger(__name__)

# The unit's TimeoutStopSec is 30 s: stopping the readers, draining the queue and saving the
# positions must fit well inside it, or systemd's SIGKILL loses the save.
_READERS_STOP_SECONDS = 3.0
_SHUTDOWN_DRAIN_SECONDS = 15.0
_STATUS_EVERY = 5.0
# Positions move only through the writer: a save when it did nothing since the last one is
# skipped (listing every container each time was most of an idle bridge's CPU), but not for
# longer than this, for what changes beside it (containers attached or removed).
_FULL_SAVE_EVERY = 30.0
# The writer beats at least every quarter second, and while it waits on journald; this long
# without a beat means it is wedged (readiness says so; the watchdog gets no ping).
_WRITER_STALL_SECONDS = 10.0
_WAIT_MAX_SECONDS = 30.0  # the longest pause between attempts to reach the journal socket
# Sections whose changes need a restart: reload keeps their running values, all of them.
# An engine's host, TLS and source are its connection and its readers: changed live, a reader
# would have to hand its position from one source to another; a restart does that exactly.
_RESTART_SECTIONS = ("docker", "engines", "journal", "state", "metrics", "kubernetes")


def _needs_restart(config: Config, section: str) -> object:
    """The part of a section that a reload cannot apply: all of it, but an engine's own
    `filter`, which applies at once like [filter]."""
    value = getattr(config, section)
    if section in ("docker", "kubernetes"):
        return value.model_copy(update={"filter": None})
    if section == "engines":
        return tuple(e.model_copy(update={"filter": None}) for e in value)
    return value


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
        self._state: State | None = None
        self.engines: list[Engine | KubernetesSource] = []
        self.http: StatusServer | None = None
        self._positions_synced = False
        self._failed = False

    # --- entry point ----------------------------------------------------------------------

    def run(self, early_stop: Sequence[int] = ()) -> int:
        """Runs until a stop signal; `early_stop`: signals received before this was called."""
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        if early_stop:
            self._stop.set()
        try:
            log.info("journald-bridge %s starting", __version__)
            if not self._serve_status():
                return EX_CONFIG  # nothing started yet: nothing to stop
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

    def _serve_status(self) -> bool:
        """Binds and starts the status endpoint; False, after one error line, when it cannot.

        A taken port, a name that does not resolve or a certificate that does not load is the
        operator's to fix: a restart meets the same error, so the bridge exits EX_CONFIG, which
        the unit's RestartPreventExitStatus= names, like a bad config file.
        """
        cfg = self.config.metrics
        if not cfg.enabled:
            return True
        try:
            self.http = StatusServer.from_config(cfg, self.registry, self.readiness)
        except (OSError, ValueError) as exc:
            # socket.gaierror and ssl.SSLError are OSErrors; ValueError: the password file,
            # read at validation, cannot be read now.
            reason = getattr(exc, "strerror", None) or exc
            log.error("metrics: cannot serve %s: %s", cfg.url, reason)
            return False
        self.http.start()
        log.info("metrics on %s", cfg.url)
        return True

    def _startup(self) -> bool:
        cfg = self.config
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
        self._state = state
        self.writer.start()
        self._sync_journal()
        self.engines = [
            Engine(
                engine,
                lambda: self.config,
                self.queue,
                self.telemetry,
                state.points(engine.name, time.time_ns()),
                functools.partial(self._filter_for, engine.name),
                self._readback,
                # no [docker] section at all: off while its socket does not exist
                optional=engine.name == DEFAULT_ENGINE and "docker" not in cfg.model_fields_set,
            )
            for engine in cfg.all_engines
        ]
        pods = kubernetes_source(
            cfg.kubernetes,
            lambda: self.config,
            self.queue,
            self.telemetry,
            state.points(KUBERNETES_SOURCE, time.time_ns()),
            functools.partial(self._filter_for, KUBERNETES_SOURCE),
            self._readback,
        )
        if pods is not None:
            self.engines.append(pods)
        if not self.engines:
            log.error("nothing to read: no engine, and [kubernetes] found no pod logs here")
            self._failed = True
            return False
        for engine in self.engines:
            engine.start()
        # READY=1 once one engine is attached: the others follow on their own.
        while not any(e.started.is_set() and e.up for e in self.engines):
            if self._stop.wait(0.05):
                return False
        self.notifier.ready(self._status())
        return True

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
            except OSError as exc:
                if not reported:
                    log.warning("waiting for %s: %s", what, exc)
                    reported = True
            self._stop.wait(backoff)
            backoff = min(backoff * 2, _WAIT_MAX_SECONDS)
        return False

    def _sync_journal(self) -> None:
        """Sends the resume checkpoint and waits until journald stored it: from then on, every
        entry an earlier run sent can be read back."""
        cfg = self.config.journal
        if not cfg.resume_from_journal:
            return
        try:
            positions = JournalPositions(cfg.namespace)
        except OSError as exc:
            log.warning(
                "cannot open the journal to read resume points back (%s); using the state file", exc
            )
            return
        try:
            if not positions.sync(
                lambda d: self.journal.send(d, lambda: not self._stop.is_set()),
                cfg.sync_timeout_seconds,
            ):
                log.warning(
                    "journald did not store the resume checkpoint in time; positions may be older"
                )
            self._positions_synced = True
        finally:
            positions.close()

    def _readback(self, engine: str) -> JournalPositions | None:
        """An engine's positions as the journal holds them; None without read-back."""
        if not self._positions_synced:
            return None
        try:
            return JournalPositions(self.config.journal.namespace, engine=engine)
        except OSError as exc:
            log.warning("engine %s: cannot open the journal to read back (%s)", engine, exc)
            return None

    # --- running --------------------------------------------------------------------------

    def _main_loop(self) -> None:
        next_save = next_status = time.monotonic()
        saved_passes, next_full_save = -1, next_save
        while not self._stop.wait(0.2):
            if self._reload.is_set():
                self._reload.clear()
                self._do_reload()
            now = time.monotonic()
            if now >= next_save:
                next_save = now + self.config.state.flush_interval_seconds
                passes = self.writer.passes  # read before the positions: a later pass saves again
                if passes != saved_passes or now >= next_full_save:
                    saved_passes, next_full_save = passes, now + _FULL_SAVE_EVERY
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
                if _needs_restart(new, section) != _needs_restart(self.config, section):
                    log.warning("reload: changes to [%s] take effect at the next restart", section)
                    kept[section] = getattr(self.config, section)
            new = new.model_copy(update=kept)
            self.config = new
            for engine in self.engines:
                engine.reconfigure(new, self._filter_for(engine.name))
            log.info("configuration reloaded from %s", self._config_path)
        self.notifier.ready(self._status())

    def _filter_for(self, engine: str) -> ContainerFilter:
        return ContainerFilter(self.config.filter_for(engine), own_container_id())

    def _save(self) -> None:
        state = self._state
        if state is None:
            return
        for engine in self.engines:
            engine.checkpoint()
        try:
            self.store.save(state)
        except OSError as exc:
            log.error("cannot save positions to %s: %s", self.store.path, exc)

    def _status(self) -> str:
        attached = sum(e.attached for e in self.engines)
        down = [e.name for e in self.engines if not e.up]
        status = f"{attached} containers attached, {self.writer.lines_forwarded} lines forwarded"
        return status + (f"; engines down: {', '.join(down)}" if down else "")

    def readiness(self) -> str | None:
        if not self.writer.alive:
            return "the journal writer has stopped"
        stalled = time.monotonic() - self.writer.last_beat
        if stalled > _WRITER_STALL_SECONDS:
            return f"the journal writer has not moved for {stalled:.0f} s"
        if not self.journal.writable():
            return f"journal socket {self.config.journal.socket} is not accepting entries"
        if not self.engines:
            return "starting"
        down = [(e.name, e.down_reason()) for e in self.engines]
        if any(reason for _, reason in down):
            return "engines down: " + "; ".join(f"{n} ({r})" for n, r in down if r)
        return None

    # --- shutdown -------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping: writing what was read, saving positions")
        stopping = [
            threading.Thread(target=e.stop, args=(_READERS_STOP_SECONDS,), daemon=True)
            for e in self.engines
        ]
        for thread in stopping:
            thread.start()
        for thread in stopping:  # each engine within the time, all of them at once
            thread.join(_READERS_STOP_SECONDS + 1)
        if not self.writer.drain_and_stop(_SHUTDOWN_DRAIN_SECONDS):
            log.warning(
                "journald did not take every line in time; they will be read again at start"
            )
        self._save()
        if self.http is not None:
            self.http.stop()
        log.info("stopped; %d lines forwarded", self.writer.lines_forwarded)
