"""How a worker reads, and what a follower counts: the follower's two small records. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.sources.inner_journal.fields import DEFAULT_MAX_MESSAGE_BYTES


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a worker reads: directory polls, heartbeats, caps (see `worker` and `fields`)."""

    poll_seconds: float = 1.0
    heartbeat_seconds: float = 1.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_files: int = 128
    memory_limit_bytes: int = 512 << 20


DEFAULT_OPTIONS = WorkerOptions()


@dataclass
class FollowerStats:
    """Counters for the metrics; only the iterating thread writes them.

    `problems` counts what the worker reported, by kind: "file" (a journal name refused by
    containment: a symlink, not a regular file, not readable), "bad" (a file sd-journal cannot
    open: corrupt, truncated), "entry" (an entry that could not be read, skipped), "next"
    (reading failed mid-journal; the reader was rebuilt), "max_files" (more files than
    `WorkerOptions.max_files`; the oldest were left out), "names" (directories with more names
    than a scan looks at). File problems are counted as their counts rise (`fileset.Reports`).
    """

    entries: int = 0
    starts: int = 0
    restarts: int = 0  # starts after a failure
    exits: int = 0  # the worker ended on its own (a crash, a kill from outside)
    stalls: int = 0
    turns: int = 0  # workers stopped to let other containers' run (the budget was full)
    protocol_errors: int = 0
    gaps: int = 0
    lost: int = 0  # entries the gaps say were lost, where the journal knows the number
    problems: dict[str, int] = field(default_factory=dict)  # worker reports, by kind
    fields_dropped: dict[str, int] = field(default_factory=dict)  # by reason
