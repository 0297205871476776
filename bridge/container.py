"""What the bridge holds per container, shared by its reader and the journal writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bridge.cursor import Cursor, Position
from bridge.fields import (
    COMPOSE_SERVICE_LABEL,
    ContainerInfo,
    MetadataSelection,
    TagTemplate,
    container_fields,
    encode_pairs,
)
from bridge.transforms import TransformChain


@dataclass(eq=False)
class ContainerHandle:
    """One container. The reader advances `read_cursor`; the writer advances `committed`.

    `committed` is what reached the journal: it is what gets persisted, and it only moves
    forward in the writer thread. `read_cursor` is how far the reader got, and is where a
    reopened log stream continues (what was read is already queued for the writer).
    """

    info: ContainerInfo
    fields: bytes
    start: Cursor
    backlog_tail: int | None = None  # first open only: Docker's tail=N
    committed: dict[int, Position] = field(default_factory=dict)
    read_cursor: Cursor | None = None
    finished_at: str = ""
    removed: bool = False
    chain: TransformChain | None = None  # used by the writer thread only
    # Set at reload (None: no transforms any more); the writer swaps it in. False: no change.
    next_chain: TransformChain | Literal[False] | None = False

    @classmethod
    def create(
        cls,
        info: ContainerInfo,
        tag: TagTemplate,
        selection: MetadataSelection,
        start: Cursor,
        backlog_tail: int | None = None,
    ) -> ContainerHandle:
        fields = encode_pairs(container_fields(info, tag, selection))
        return cls(info, fields, start, backlog_tail, dict(start.streams))

    def refresh_fields(
        self, info: ContainerInfo, tag: TagTemplate, selection: MetadataSelection
    ) -> None:
        # Replacing two attributes; the writer reads `fields` once per batch, so an entry
        # carries either the old name or the new one, never a mix.
        self.fields = encode_pairs(container_fields(info, tag, selection))
        self.info = info

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def metric_labels(self) -> tuple[str, str]:
        return self.info.name, self.info.labels.get(COMPOSE_SERVICE_LABEL, "")

    def committed_cursor(self) -> Cursor:
        return Cursor(self.start.floor_ns, dict(self.committed))
