"""Every metric the bridge exports, owned here and fed by named events.

Business code calls `telemetry.lines_forwarded(...)`, never a counter: the names, labels and
units live in this one module, on a registry that is passed in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

from bridge import __version__

_STREAMS = {1: "stdout", 2: "stderr"}
SOURCES = ("api", "files", "inner_journal")  # where a container's lines are read from
# What went wrong reading an inner journal: its root could not be opened ("open"); the worker
# stalled, sent garbage or ended ("stall", "protocol", "exit"); what the worker reported: a file
# refused by containment ("file"), one sd-journal cannot open ("bad"), an unreadable entry
# ("entry"), a read that failed mid-journal ("next"), too many files ("max_files"), too many
# names in a journal directory ("names").
INNER_JOURNAL_ERRORS = (
    *("open", "stall", "protocol", "exit"),
    *("file", "bad", "entry", "next", "max_files", "names"),
)
INNER_JOURNAL_GAPS = ("vacuumed", "reset")
TRANSFORM_STEPS = ("multiline", "json", "priority", "rate_limit")
FIELD_CAPS = ("count", "bytes")
DROP_REASONS = ("rate_limited", "too_large", "malformed", "journal_error", "container_removed")
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Telemetry:
    def __init__(self, registry: CollectorRegistry, *, per_container: bool = False) -> None:
        self.registry = registry
        self._per_container = per_container
        ns = "journald_bridge"
        self._lines = Counter(
            f"{ns}_lines_forwarded", "Lines written to the journal.", ["stream"], registry=registry
        )
        self._bytes = Counter(
            f"{ns}_bytes_forwarded",
            "Message bytes written to the journal.",
            ["stream"],
            registry=registry,
        )
        self._dropped = Counter(
            f"{ns}_lines_dropped", "Lines not written, by reason.", ["reason"], registry=registry
        )
        self._attached = Gauge(
            f"{ns}_containers_attached",
            "Containers whose logs are being read, by engine and source.",
            ["engine", "source"],
            registry=registry,
        )
        self._attach = Counter(
            f"{ns}_container_attach",
            "Log readers started, by engine and source.",
            ["engine", "source"],
            registry=registry,
        )
        self._detach = Counter(
            f"{ns}_container_detach",
            "Log readers ended, by engine and source.",
            ["engine", "source"],
            registry=registry,
        )
        self._resync = Counter(
            f"{ns}_container_resync",
            "Containers attached by the periodic listing: their Docker event was missed.",
            registry=registry,
        )
        self._events = Counter(
            f"{ns}_docker_events", "Docker events received.", ["action"], registry=registry
        )
        self._reconnects = Counter(
            f"{ns}_docker_reconnects", "Reconnections to dockerd.", registry=registry
        )
        self._docker_up = Gauge(
            f"{ns}_docker_up",
            "1 while the docker engine's events stream is connected (alias of engine_up).",
            registry=registry,
        )
        self._engine_up = Gauge(
            f"{ns}_engine_up",
            "1 while the engine's events stream is connected, by engine.",
            ["engine"],
            registry=registry,
        )
        self._engine_events = Counter(
            f"{ns}_engine_events",
            "Container events received, by engine and action.",
            ["engine", "action"],
            registry=registry,
        )
        self._engine_reconnects = Counter(
            f"{ns}_engine_reconnects",
            "Reconnections to an engine, by engine.",
            ["engine"],
            registry=registry,
        )
        self._send_errors = Counter(
            f"{ns}_journal_send_errors", "Failed sends to journald.", ["errno"], registry=registry
        )
        self._backpressure = Counter(
            f"{ns}_journal_backpressure_seconds",
            "Time spent waiting on a full journald socket.",
            registry=registry,
        )
        self._memfd = Counter(
            f"{ns}_journal_memfd_sends", "Entries sent through a sealed memfd.", registry=registry
        )
        self._journal_up = Gauge(
            f"{ns}_journal_up", "1 while the journal socket accepts entries.", registry=registry
        )
        self._lag = Histogram(
            f"{ns}_delivery_lag_seconds",
            "Journal send time minus Docker's timestamp of the line.",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self._merged = Counter(
            f"{ns}_partial_lines_merged",
            "16 KiB pieces merged into longer lines.",
            registry=registry,
        )
        self._multiline = Counter(
            f"{ns}_multiline_records", "Multi-line records assembled.", registry=registry
        )
        self._stream_errors = Counter(
            f"{ns}_stream_errors", "Log streams that broke, by kind.", ["kind"], registry=registry
        )
        self._rotation_gaps = Counter(
            f"{ns}_rotation_gaps",
            "Resumes that found their position rotated out of Docker's files.",
            registry=registry,
        )
        self._held_files_dropped = Counter(
            f"{ns}_held_log_files_dropped",
            "Rotated log files closed unread because held files reached their byte budget.",
            registry=registry,
        )
        self._clock_steps = Counter(
            f"{ns}_clock_steps",
            "Steps back of a stream's timestamps (the engine's wall clock was set back), by "
            "source; the lines are forwarded, none dropped.",
            ["source"],
            registry=registry,
        )
        for source in ("api", "files"):
            self._clock_steps.labels(source)
        self._transform_errors = Counter(
            f"{ns}_transform_errors",
            "Bad per-container transform settings (labels), by option.",
            ["kind"],
            registry=registry,
        )
        self._transform_failures = Counter(
            f"{ns}_transform_failures",
            "Lines a transform step failed on, forwarded as they were, by step.",
            ["step"],
            registry=registry,
        )
        self._fields_dropped = Counter(
            f"{ns}_fields_dropped",
            "Fields left out of entries by the per-entry caps, by cap.",
            ["reason"],
            registry=registry,
        )
        self._regressions = Counter(
            f"{ns}_position_regressions",
            "Commits refused because they would move a resume position backwards.",
            registry=registry,
        )
        self._writer_errors = Counter(
            f"{ns}_writer_errors",
            "Passes of the journal writer that failed on an unexpected error.",
            registry=registry,
        )
        self._pending = Gauge(
            f"{ns}_pending_bytes",
            "Bytes read from Docker, not yet in the journal.",
            registry=registry,
        )
        self._inner_gaps = Counter(
            f"{ns}_inner_journal_gaps",
            "Inner journals found to have lost entries before they were read, by kind.",
            ["kind"],
            registry=registry,
        )
        self._inner_lost = Counter(
            f"{ns}_inner_journal_lost_entries",
            "Entries those gaps lost, where the inner journal can tell (vacuumed).",
            registry=registry,
        )
        self._inner_errors = Counter(
            f"{ns}_inner_journal_errors",
            "Problems reading inner journals, by kind.",
            ["kind"],
            registry=registry,
        )
        self._inner_workers = Gauge(
            f"{ns}_inner_journal_workers",
            "Inner-journal reader processes, by state: running, or waiting for a slot of the "
            "[inner_journal] max_workers budget.",
            ["state"],
            registry=registry,
        )
        self._inner_waits = Counter(
            f"{ns}_inner_journal_worker_waits",
            "Times an inner journal had to wait for a reader process slot (the budget was full).",
            registry=registry,
        )
        Info(f"{ns}_build", "journald-bridge build.", registry=registry).info(
            {"version": __version__}
        )
        ProcessCollector(registry=registry)
        self._pc_lines = self._pc_bytes = self._pc_dropped = None
        if per_container:
            labels = ["engine", "container_name", "compose_service"]
            self._pc_lines = Counter(
                f"{ns}_container_lines_forwarded",
                "Lines written, per container.",
                labels,
                registry=registry,
            )
            self._pc_bytes = Counter(
                f"{ns}_container_bytes_forwarded",
                "Bytes written, per container.",
                labels,
                registry=registry,
            )
            self._pc_dropped = Counter(
                f"{ns}_container_lines_dropped",
                "Lines dropped, per container.",
                [*labels, "reason"],
                registry=registry,
            )
        # Resolved once: labels() per batch was a measurable part of the writer's time.
        self._stream_counters = {
            number: (self._lines.labels(name), self._bytes.labels(name))
            for number, name in _STREAMS.items()
        }
        # CONTAINER_STREAM=journal: the entries of a container's own journal
        self._journal_counters = (self._lines.labels("journal"), self._bytes.labels("journal"))
        for kind in INNER_JOURNAL_GAPS:
            self._inner_gaps.labels(kind)
        for kind in INNER_JOURNAL_ERRORS:
            self._inner_errors.labels(kind)
        self.inner_journal_workers(0, 0)
        for reason in DROP_REASONS:
            self._dropped.labels(reason)
        # Alerts see the first error only when the series exists before it.
        for errno_name in ("EAGAIN", "ENOENT", "ECONNREFUSED", "ENOBUFS", "EMSGSIZE", "EPIPE"):
            self._send_errors.labels(errno_name)
        for step in TRANSFORM_STEPS:
            self._transform_failures.labels(step)
        for cap in FIELD_CAPS:
            self._fields_dropped.labels(cap)

    # --- the pipeline ---------------------------------------------------------------------

    @property
    def per_container(self) -> bool:
        """Whether per-container series are kept (opt-in): else labels need not be made."""
        return self._pc_lines is not None

    def lines_forwarded(
        self, stream: int, lines: int, nbytes: int, container: tuple[str, str, str] | None = None
    ) -> None:
        lines_total, bytes_total = self._stream_counters.get(stream, self._stream_counters[1])
        lines_total.inc(lines)
        bytes_total.inc(nbytes)
        if self._pc_lines is not None and self._pc_bytes is not None and container is not None:
            self._pc_lines.labels(*container).inc(lines)
            self._pc_bytes.labels(*container).inc(nbytes)

    def delivery_lag(self, seconds: float) -> None:
        self._lag.observe(max(seconds, 0.0))

    def lines_dropped(
        self, reason: str, lines: int = 1, container: tuple[str, str, str] | None = None
    ) -> None:
        self._dropped.labels(reason).inc(lines)
        if self._pc_dropped is not None and container is not None:
            self._pc_dropped.labels(*container, reason).inc(lines)

    def partial_lines_merged(self, pieces: int) -> None:
        if pieces:
            self._merged.inc(pieces)

    def multiline_records(self, count: int) -> None:
        if count:
            self._multiline.inc(count)

    def transform_error(self, kind: str) -> None:
        self._transform_errors.labels(kind).inc()

    def line_failed(self, step: str) -> None:
        """A transform step raised on one line, which went on as it was (TransformEvents)."""
        self._transform_failures.labels(step if step in TRANSFORM_STEPS else "other").inc()

    def fields_dropped(self, reason: str, count: int) -> None:
        """A cap on an entry's fields left `count` out (TransformEvents)."""
        if count:
            self._fields_dropped.labels(reason if reason in FIELD_CAPS else "other").inc(count)

    def position_regression(self) -> None:
        self._regressions.inc()

    def writer_error(self) -> None:
        self._writer_errors.inc()

    def track_pending_bytes(self, read: Callable[[], float]) -> None:
        """The pending gauge reads the queue at scrape time (the writer may be stuck in a send)."""
        self._pending.set_function(read)

    # --- containers -----------------------------------------------------------------------

    def container_attached(self, engine: str, source: str) -> None:
        self._attach.labels(engine, source).inc()
        self._attached.labels(engine, source).inc()

    def container_resynced(self) -> None:
        self._resync.inc()

    def container_detached(self, engine: str, source: str) -> None:
        self._detach.labels(engine, source).inc()
        self._attached.labels(engine, source).dec()

    def container_removed(self, container: tuple[str, str, str]) -> None:
        """Drops the container's own series (removed, or renamed), so churn never grows the
        series count."""
        for metric in (self._pc_lines, self._pc_bytes):
            if metric is not None:
                with contextlib.suppress(KeyError):
                    metric.remove(*container)
        if self._pc_dropped is not None:
            for reason in DROP_REASONS:
                with contextlib.suppress(KeyError):
                    self._pc_dropped.remove(*container, reason)

    def stream_error(self, kind: str) -> None:
        self._stream_errors.labels(kind).inc()

    def rotation_gap(self) -> None:
        self._rotation_gaps.inc()

    def held_file_dropped(self) -> None:
        self._held_files_dropped.inc()

    def clock_steps(self, source: str, steps: int) -> None:
        self._clock_steps.labels(source).inc(steps)

    # --- inner journals (sources/inner_journal) ------------------------------------------

    def inner_entries_forwarded(
        self, lines: int, nbytes: int, container: tuple[str, str, str] | None = None
    ) -> None:
        """Inner entries written: `lines_forwarded{stream="journal"}` and the per-container
        series."""
        lines_total, bytes_total = self._journal_counters
        lines_total.inc(lines)
        bytes_total.inc(nbytes)
        if self._pc_lines is not None and self._pc_bytes is not None and container is not None:
            self._pc_lines.labels(*container).inc(lines)
            self._pc_bytes.labels(*container).inc(nbytes)

    def inner_journal_gap(self, kind: str, lost: int | None) -> None:
        self._inner_gaps.labels(kind if kind in INNER_JOURNAL_GAPS else "other").inc()
        if lost:
            self._inner_lost.inc(lost)

    def inner_journal_workers(self, running: int, waiting: int) -> None:
        self._inner_workers.labels("running").set(running)
        self._inner_workers.labels("waiting").set(waiting)

    def inner_journal_worker_waited(self) -> None:
        self._inner_waits.inc()

    def inner_journal_error(self, kind: str, count: int = 1) -> None:
        if count:
            self._inner_errors.labels(kind if kind in INNER_JOURNAL_ERRORS else "other").inc(count)

    # --- engines --------------------------------------------------------------------------
    # The docker_* series are the `docker` engine's, kept as aliases for one release.

    def engine_configured(self, engine: str) -> None:
        """Creates the engine's series (down) so that an engine never seen up is visible."""
        self._engine_up.labels(engine).set(0)
        self._engine_reconnects.labels(engine)
        for source in SOURCES:
            self._attached.labels(engine, source)
            self._attach.labels(engine, source)
            self._detach.labels(engine, source)

    def engine_event(self, engine: str, action: str) -> None:
        self._engine_events.labels(engine, action).inc()
        if engine == "docker":
            self._events.labels(action).inc()

    def engine_connected(self, engine: str, up: bool) -> None:
        self._engine_up.labels(engine).set(1 if up else 0)
        if engine == "docker":
            self._docker_up.set(1 if up else 0)

    def engine_reconnect(self, engine: str) -> None:
        self._engine_reconnects.labels(engine).inc()
        if engine == "docker":
            self._reconnects.inc()

    # --- journald (sinks.journald.socket.JournalEvents) ------------------------------------

    def journal_send_error(self, errno_name: str) -> None:
        self._send_errors.labels(errno_name).inc()

    def journal_backpressure(self, seconds: float) -> None:
        self._backpressure.inc(seconds)

    def journal_memfd_send(self) -> None:
        self._memfd.inc()

    def journal_available(self, up: bool) -> None:
        self._journal_up.set(1 if up else 0)
