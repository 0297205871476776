"""What the bridge holds per container, shared by its reader and the journal writer.

The handle carries the container's transform chain but does not know what it is: `ChainLike` is
what the writer calls (bridge/transforms' `TransformChain` satisfies it), so core imports no
transform.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bridge.core.cursor import Cursor, Position, position_before
from bridge.core.fields import ContainerInfo
from bridge.core.inner import InnerPositionLike, InnerStream
from bridge.core.record import Record


class RateLimitLike(Protocol):
    """A container's rate limit, as its other streams (the inner journal) apply it too."""

    @property
    def lines_per_second(self) -> float: ...
    @property
    def burst(self) -> int: ...
    @property
    def interval(self) -> float: ...


class ChainLike(Protocol):
    """One container's transforms, as the writer runs them (bridge/transforms/chain.py)."""

    @property
    def rate_limit(self) -> RateLimitLike | None: ...
    @property
    def held_bytes(self) -> int: ...
    def process(self, records: list[Record], now: float) -> list[Record]: ...
    def tick(self, now: float, *, final: bool = False) -> list[Record]: ...
    def next_deadline(self) -> float | None: ...
    def take_merged_count(self) -> int: ...
    def held_first(self) -> dict[int, Position]: ...


_MAX_LABEL_VALUE = 128


@dataclass(eq=False)
class ContainerHandle:
    """One container. The reader advances `read_cursor`; the writer advances `committed`.

    `committed` is what reached the journal: it is what gets persisted, and it only moves
    forward, through `commit`, in the writer thread. `read_cursor` is how far the reader got,
    and is where a reopened log stream continues (what was read is already queued for the
    writer). `reader_holds` and `chain_holds` are, per stream, the first position of a record
    read but held back (pieces of a long line in the reader, an open multiline record in the
    transforms); the writer sets both after committing what came before them, so the persisted
    cursor never passes a held line.
    """

    info: ContainerInfo
    fields: bytes
    start: Cursor
    backlog_tail: int | None = None  # first open only: Docker's tail=N
    committed: dict[int, Position] = field(default_factory=dict)
    read_cursor: Cursor | None = None
    finished_at: str = ""
    removed: bool = False
    # Run by the writer thread only; the inner reader reads its `rate_limit`, a fixed setting.
    chain: ChainLike | None = None
    # Set at reload (None: no transforms any more); the writer swaps it in. False: no change.
    next_chain: ChainLike | Literal[False] | None = False
    reader_holds: Mapping[int, Position] = field(default_factory=dict)
    chain_holds: Mapping[int, Position] = field(default_factory=dict)
    # The container's own journal (systemd inside), once followed: its position lives there,
    # apart from the per-stream cursor (see core/inner.py).
    inner: InnerStream | None = None

    @classmethod
    def create(
        cls,
        info: ContainerInfo,
        fields: bytes,
        start: Cursor,
        backlog_tail: int | None = None,
    ) -> ContainerHandle:
        """A handle whose entries carry `fields` (pre-encoded, see fields.container_fields)."""
        return cls(info, fields, start, backlog_tail, dict(start.streams))

    def inner_stream(self, start: InnerPositionLike | None = None) -> InnerStream:
        """The container's inner-journal stream, created at `start` on first use (a later
        `start` is moot: the stream already knows how far it got)."""
        if self.inner is None:
            self.inner = InnerStream(start)
        return self.inner

    def refresh_fields(self, info: ContainerInfo, fields: bytes) -> None:
        # Replacing two attributes; a Batch copies `fields` when its reader makes it, so its
        # entries carry the fields the container had when they were read, never a mix.
        self.fields = fields
        self.info = info

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def metric_labels(self) -> tuple[str, str, str]:
        # The compose label is the container's to set: cut, like any label value we export.
        service = self.info.compose_service
        return self.info.engine, self.info.name, service[:_MAX_LABEL_VALUE]

    def commit(self, stream: int, position: Position) -> bool:
        """Moves one stream's committed position forward; refuses (False) to move it back."""
        current = self.committed.get(stream)
        if current is not None and position < current:
            return False
        self.committed[stream] = position
        return True

    def committed_cursor(self) -> Cursor:
        """What to persist: the committed positions, held back to before any held record."""
        streams = dict(self.committed)
        # A pin read from the state file stays until the stream's held line is written again.
        pinned = {s for s in self.start.pinned if streams.get(s) == self.start.streams.get(s)}
        for holds in (self.reader_holds, self.chain_holds):
            for stream, first in holds.items():
                before = position_before(first)
                if stream not in streams or before < streams[stream]:
                    streams[stream] = before
                pinned.add(stream)
        return Cursor(self.start.floor_ns, streams, frozenset(pinned))
