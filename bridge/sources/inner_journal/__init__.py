"""The inner-journal source: the journal a container keeps of its own (systemd inside).

    containment  open paths inside a container's root only (openat2 RESOLVE_IN_ROOT, or a
                 user-space walk with the same guarantees); find its journal files
    header       whether a file's header is a journal's (pure Python: before any worker)
    fileset      the journal files held open for a container, bounded; problems by kind
    fields       which inner fields pass as they are, which are renamed under INNER_, the caps
    position     the inner cursor as a position; where to resume, and what a gap is
    protocol     the worker's bounded frames and the events they become
    worker       the process that parses the journal (`python -m` it), given the files as fds
    sandbox      what the worker gives up first: capabilities, new privileges, paths, processes
    sdjournal    sd-journal over fds (ctypes), for the confined worker
    options      how a worker reads; what a follower counts
    follower     the bridge's side: one worker per container, restarted when it dies or stalls
    budget       how many workers run at once, across containers and engines; turns
    gather       the rate limit, notices and batches of a container's entries (pure)
    reader       InnerJournalReader, the Reader of one container's journal: follower -> queue
    watch        one thread that finds which running containers have a journal of their own

Only `follower` starts processes; `header`, `fields`, `position`, `protocol` and `gather` are
pure; only `worker` imports `sandbox` and `sdjournal`.
`reader` and `watch` are imported by their module path: the worker process imports this
package and needs none of the queue, the telemetry or the threads they bring.
"""

from bridge.sources.inner_journal.containment import has_inner_journal, opened_root
from bridge.sources.inner_journal.follower import InnerJournalFollower
from bridge.sources.inner_journal.options import FollowerStats, WorkerOptions
from bridge.sources.inner_journal.position import Gap, InnerPosition
from bridge.sources.inner_journal.protocol import InnerEnd, InnerEntry, InnerEvent, InnerGap

__all__ = [
    "FollowerStats",
    "Gap",
    "InnerEnd",
    "InnerEntry",
    "InnerEvent",
    "InnerGap",
    "InnerJournalFollower",
    "InnerPosition",
    "WorkerOptions",
    "has_inner_journal",
    "opened_root",
]
