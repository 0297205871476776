"""One ContainerHandle per forwarded container: where its reading starts, what its lines wear.

Where to start is the resume decision: the state file's cursor, merged with what the journal
itself holds (a crash may have left entries newer than the last saved cursor), or, for a
container the bridge has never seen, its first line — except containers that predate the
bridge's first reading of their engine on the host, which get `forward.backlog_lines`. One
factory per engine: positions are the engine's own. What the lines wear is the
field set (tag template, selected labels and env) and the container's transform chain.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Protocol

from bridge.config import Config
from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor, Position
from bridge.core.fields import (
    ContainerInfo,
    MetadataSelection,
    TagTemplate,
    container_fields_counted,
    encode_pairs,
)
from bridge.core.state import ResumePoints
from bridge.core.units import UNIT_FIELD
from bridge.sources.inner_journal.position import resume_position
from bridge.telemetry import Telemetry
from bridge.transforms import TransformChain, build_chain

log = logging.getLogger(__name__)


class Readback(Protocol):
    """Where the journal itself says each stream of a container got to (the sink's read-back)."""

    def positions(self, container_id: str) -> dict[int, Position]: ...
    def inner_position(self, container_id: str) -> dict[str, object] | None: ...


class HandleFactory:
    def __init__(self, config: Config, points: ResumePoints, telemetry: Telemetry) -> None:
        self._points = points
        self._telemetry = telemetry
        # "From now on" (backlog none) means from when this run began, not from when a
        # container's handle is built: at a busy start-up that can be seconds later, and what
        # the container wrote meanwhile would be skipped.
        self._started_ns = time.time_ns()
        self.apply_config(config)

    def apply_config(self, config: Config) -> None:
        fwd = config.forward
        self._config = config
        self._tag = TagTemplate(fwd.tag)
        self._selection = MetadataSelection(
            labels=fwd.labels,
            labels_regex=_compile(fwd.labels_regex),
            env=fwd.env,
            env_regex=_compile(fwd.env_regex),
        )

    def build(self, info: ContainerInfo, journal: Readback | None) -> ContainerHandle:
        """A handle for a container seen now; `journal` only at start-up (read-back)."""
        saved = self._points.saved(info.id)
        cursor = saved.cursor if saved is not None else None
        if journal is not None:
            found = journal.positions(info.id)
            if found:
                cursor = (cursor or Cursor()).merged(Cursor(0, found))
        tail: int | None = None
        if cursor is None:
            # Whether or not the journal could be read back: `backlog` is about containers
            # that were there before the bridge first read their engine on this host.
            predates_first_run = 0 < info.created_ns <= self._points.first_run_ns
            backlog = self._config.forward.backlog_lines
            if not predates_first_run or backlog is None:
                cursor = Cursor()  # from its first line
            elif backlog == 0:
                cursor = Cursor(self._started_ns)
            else:
                cursor, tail = Cursor(), backlog
        if info.unit.refused:  # once per container: a refresh keeps the claim it had
            log.warning(
                "container %s: label %s: %s; forwarded without %s",
                info.name,
                info.unit.label,
                info.unit.refused,
                UNIT_FIELD,
            )
        handle = ContainerHandle.create(info, self._fields(info), cursor, tail)
        handle.chain = self.chain(handle)
        if saved is not None:
            handle.finished_at = saved.finished_at
        # The inner journal's position: the later of the state file's and the journal's. Kept
        # on the handle even if its journal is not followed in this run, so it is saved again.
        inner = resume_position(
            saved.inner if saved is not None else None,
            journal.inner_position(info.id) if journal is not None else None,
        )
        if inner is not None:
            handle.inner_stream(inner)
        return handle

    def refresh(self, handle: ContainerHandle, info: ContainerInfo) -> None:
        """New fields after a rename or a reload; the next batch uses them."""
        handle.refresh_fields(info, self._fields(info))

    def _fields(self, info: ContainerInfo) -> bytes:
        fields, dropped = container_fields_counted(info, self._tag, self._selection)
        for reason, count in dropped.items():
            self._telemetry.fields_dropped(reason, count)
        if dropped:
            log.warning(
                "container %s: %d label and environment fields left out (caps on fields per entry)",
                info.name,
                sum(dropped.values()),
            )
        return encode_pairs(fields)

    def chain(self, handle: ContainerHandle) -> TransformChain | None:
        reported: set[str] = set()

        def report(kind: str, message: str) -> None:
            if kind not in reported:  # once per container and option
                reported.add(kind)
                self._telemetry.transform_error(kind)
                log.error(
                    "container %s: label journald-bridge.%s: %s", handle.info.name, kind, message
                )

        return build_chain(
            self._config.transforms,
            handle.info.labels,
            self._config.forward.max_line_bytes,
            lambda: handle.info.name,
            report,
            self._telemetry,
        )


def _compile(pattern: str) -> re.Pattern[str] | None:
    return re.compile(pattern) if pattern else None
