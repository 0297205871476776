"""Reading resume points back from the journal itself.

The journal is the one record of what really arrived: a position saved to disk after a send can
be older than the journal (the bridge was killed between the two), never newer than what was
sent. Before reading it back, the bridge sends a marker entry and waits until journald has
stored it: journald reads its socket in order, so every entry an earlier run sent is stored by
then.

Only the bridge's own entries count: any local user can send an entry with CONTAINER_ID_FULL
and SYSLOG_TIMESTAMP fields, so every lookup also matches `_UID`, which journald sets from the
sender's credentials and no client can forge. The uid is this process's own; under systemd's
DynamicUser it stays the same as long as the state directory exists. Should it change (a new
install), the journal's old entries no longer match and the state file's positions apply.

One reader per engine: an entry counts for the engine its CONTAINER_ENGINE names, and entries
written before there were engines (no CONTAINER_ENGINE) are the default engine's.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
from collections.abc import Callable

from systemd import journal

from bridge.core.cursor import Position
from bridge.core.state import DEFAULT_ENGINE
from bridge.core.timestamps import parse_general
from bridge.sinks.journald.inner_readback import InnerJournalPositions
from bridge.sinks.journald.native import encode_fields, parse_cursor_field

log = logging.getLogger(__name__)

_STREAM_NAMES = {1: "stdout", 2: "stderr"}
_LOOK_BACK = 16  # entries without a position skipped before giving up


class JournalPositions:
    def __init__(
        self,
        namespace: str = "",
        reader: journal.Reader | None = None,
        uid: int | None = None,
        engine: str = DEFAULT_ENGINE,
    ) -> None:
        self._reader = reader if reader is not None else journal.Reader(namespace=namespace or None)
        self._uid = str(os.geteuid() if uid is None else uid)
        self._engine = engine

    def close(self) -> None:
        self._reader.close()

    def sync(self, send: Callable[[bytes], bool], timeout: float) -> bool:
        """Sends a marker and waits until the journal holds it; False on timeout."""
        token = uuid.uuid4().hex
        sent = send(
            encode_fields(
                [
                    (b"MESSAGE", b"journald-bridge: resume checkpoint"),
                    (b"PRIORITY", b"7"),
                    (b"SYSLOG_IDENTIFIER", b"journald-bridge"),
                    (b"JOURNALD_BRIDGE_SYNC", token.encode()),
                ]
            )
        )
        if not sent:
            return False
        reader = self._reader
        reader.flush_matches()
        reader.add_match(JOURNALD_BRIDGE_SYNC=token)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reader.seek_head()
            if reader.get_next():
                return True
            reader.wait(0.2)
        return False

    def positions(self, container_id: str) -> dict[int, Position]:
        """The last position of each stream of this container found in the journal.

        Each indexed lookup costs milliseconds on a large journal (every journal file is asked),
        so a container the journal has never seen costs none: the set of containers it holds is
        read once, on the first call (after `sync`). Then one lookup per stream: walking back
        from the container's last entry to find the other stream cost more, for a container
        that writes mostly to one of them (10 ms against 5.5 ms with 94 journal files).
        """
        known = self._known_containers
        if known is not None and container_id not in known:
            return {}
        found: dict[int, Position] = {}
        try:
            for stream, name in _STREAM_NAMES.items():
                position = self._last_of_stream(container_id, name)
                if position is not None:
                    found[stream] = position
        except OSError as exc:  # the state file still has a position, if an older one
            log.warning(
                "container %s: cannot read its position back from the journal (%s)",
                container_id[:12],
                exc,
            )
        return found

    def inner_position(self, container_id: str) -> dict[str, object] | None:
        """Where the container's inner journal got to, as the journal says (JSON), or None."""
        inner = InnerJournalPositions(
            reader=self._reader, uid=int(self._uid), known=self._known_containers
        )
        return inner.position(container_id, engine=self._engine)

    @functools.cached_property
    def _known_containers(self) -> set[str] | None:
        """The CONTAINER_ID_FULL values in the journal; None when it cannot say."""
        try:
            return {str(v) for v in self._reader.query_unique("CONTAINER_ID_FULL")}
        except OSError as exc:  # then every container is looked up
            log.warning("cannot list the containers in the journal (%s)", exc)
            return None

    def _last_of_stream(self, container_id: str, stream_name: str) -> Position | None:
        reader = self._reader
        reader.flush_matches()
        match = {"CONTAINER_ID_FULL": container_id, "CONTAINER_STREAM": stream_name}
        if self._engine != DEFAULT_ENGINE:  # the default's older entries have no engine field
            match["CONTAINER_ENGINE"] = self._engine
        reader.add_match(_UID=self._uid, **match)
        reader.seek_tail()
        for _ in range(_LOOK_BACK):
            entry = reader.get_previous()
            if not entry:
                return None
            if entry.get("CONTAINER_ENGINE", DEFAULT_ENGINE) != self._engine:
                continue  # the same container id through another engine
            position = entry_position(entry)
            if position is not None:
                return position
        return None


def entry_position(entry: dict[str, object]) -> Position | None:
    """How far into its stream a journal entry written by the bridge reaches."""
    try:
        cursor = entry.get("JOURNALD_BRIDGE_CURSOR")
        if isinstance(cursor, str | bytes):
            return parse_cursor_field(cursor)
        ts = entry.get("SYSLOG_TIMESTAMP")
        if isinstance(ts, str | bytes):
            return parse_general(ts.encode() if isinstance(ts, str) else ts), 1
    except ValueError as exc:
        log.warning("ignoring a journal entry with an unreadable position: %s", exc)
    return None
