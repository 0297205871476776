"""Reading resume points back from the journal itself.

The journal is the one record of what really arrived: a position saved to disk after a send can
be older than the journal (the bridge was killed between the two), never newer than what was
sent. Before reading it back, the bridge sends a marker entry and waits until journald has
stored it: journald reads its socket in order, so every entry an earlier run sent is stored by
then.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from systemd import journal

from bridge.cursor import Position
from bridge.native import encode_fields, parse_cursor_field
from bridge.timestamps import parse_general

log = logging.getLogger(__name__)

_STREAM_NAMES = {1: "stdout", 2: "stderr"}
_STREAMS_BY_NAME = {name: stream for stream, name in _STREAM_NAMES.items()}
_LOOK_BACK = 16  # entries without a position skipped before giving up
_WALK_BACK = 200  # entries walked back from a container's last one, looking for both streams


class JournalPositions:
    def __init__(self, namespace: str = "") -> None:
        self._reader = journal.Reader(namespace=namespace or None)

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

        One indexed lookup per container (each costs milliseconds on a large journal): walk back
        from its last entry until both streams are seen, and only for a stream not seen within a
        short walk ask the journal for that stream alone.
        """
        reader = self._reader
        reader.flush_matches()
        reader.add_match(CONTAINER_ID_FULL=container_id)
        reader.seek_tail()
        found: dict[int, Position] = {}
        looked = set()
        for _ in range(_WALK_BACK):
            entry = reader.get_previous()
            if not entry:
                return found  # every entry of the container was seen
            stream = _STREAMS_BY_NAME.get(str(entry.get("CONTAINER_STREAM", "")))
            if stream is None or stream in looked:
                continue
            position = entry_position(entry)
            if position is not None:
                found[stream] = position
                looked.add(stream)
                if len(looked) == len(_STREAM_NAMES):
                    return found
        for stream, name in _STREAM_NAMES.items():
            if stream not in looked:
                position = self._last_of_stream(container_id, name)
                if position is not None:
                    found[stream] = position
        return found

    def _last_of_stream(self, container_id: str, stream_name: str) -> Position | None:
        reader = self._reader
        reader.flush_matches()
        reader.add_match(CONTAINER_ID_FULL=container_id, CONTAINER_STREAM=stream_name)
        reader.seek_tail()
        for _ in range(_LOOK_BACK):
            entry = reader.get_previous()
            if not entry:
                return None
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
