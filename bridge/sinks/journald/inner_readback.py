"""Reading an inner journal's position back from the host journal.

The state file can lag behind the journal (a crash between a send and the next save): the last
inner entry the host journal holds for a container says how far its inner journal was really
forwarded. Each forwarded inner entry carries its inner cursor in `JOURNALD_BRIDGE_INNER_CURSOR`
(inner.py), so the position is that field of the container's last entry with
`CONTAINER_STREAM=journal`.

Invariants:
- Only the bridge's own entries count: every lookup matches `_UID` (journald sets it from the
  sender's credentials), as readback.py does for stdout and stderr. Inside a container, no
  inner field can produce `JOURNALD_BRIDGE_INNER_CURSOR`, `CONTAINER_STREAM` or
  `CONTAINER_ID_FULL` (they are renamed under `INNER_`), and no label or JSON key can either
  (core/fields.py protects `CONTAINER_*` and `JOURNALD_BRIDGE_*`).
- Read after `JournalPositions.sync` (the marker is stored once everything sent before it is):
  then nothing the previous run sent is missing from what this reads.
- A position read back is `drained` when its entry is the inner journald's "Journal stopped"
  (`MESSAGE_ID` SD_MESSAGE_JOURNAL_STOP with the trusted `_TRANSPORT=driver`, forwarded as
  `INNER_TRANSPORT`): journald writes nothing after it, so that journal was forwarded to its
  end, as the worker's drained end says while the bridge runs. Without it, a crash after a
  container stop (before the state file was saved) left a tmpfs journal that starts empty at
  the next start looking like a lost one (a "reset" gap). No process in the container can
  write `_TRANSPORT=driver`; the one case it misleads is a journal whose journald restarted
  and whose every file was then removed before the bridge came back (a gap not counted).
- What it returns is the position's JSON (`InnerPosition.to_json` form); the source side parses
  it (`InnerPosition.from_json`, `reader.resume_position`): sinks do not import sources.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Collection

from systemd import journal

from bridge.sinks.journald.inner import INNER_CURSOR_FIELD, JOURNAL_STREAM

log = logging.getLogger(__name__)

_LOOK_BACK = 16  # entries without a usable cursor skipped before giving up (none are expected)
_MAX_CURSOR = 512
_ID128 = re.compile(r"[0-9a-f]{32}")
JOURNAL_STOP_ID = "d93fb3c9c24d451a97cea615ce59c00b"  # sd-messages.h SD_MESSAGE_JOURNAL_STOP


class InnerJournalPositions:
    """Where each container's inner journal got to, as the host journal says."""

    def __init__(
        self,
        namespace: str = "",
        reader: journal.Reader | None = None,
        uid: int | None = None,
        known: Collection[str] | None = None,
    ) -> None:
        """`known`: the CONTAINER_ID_FULL values the journal holds, when the caller has them
        (readback.py reads them once); a container not among them costs no lookup."""
        self._own = reader is None
        self._reader = reader if reader is not None else journal.Reader(namespace=namespace or None)
        self._uid = str(os.geteuid() if uid is None else uid)
        self._known = known

    def close(self) -> None:
        if self._own:
            self._reader.close()

    def position(self, container_id: str, engine: str = "") -> dict[str, object] | None:
        """The JSON of the last forwarded inner entry's position; None when there is none (or
        the journal cannot be read: the state file's position then applies)."""
        if self._known is not None and container_id not in self._known:
            return None
        try:
            return last_inner_position(self._reader, container_id, self._uid, engine)
        except OSError as exc:
            log.warning(
                "container %s: cannot read its inner journal's position back (%s)",
                container_id[:12],
                exc,
            )
            return None


def last_inner_position(
    reader: journal.Reader, container_id: str, uid: str, engine: str = ""
) -> dict[str, object] | None:
    """The position (JSON) in the last inner entry of `container_id` sent by `uid` (through
    `engine`, when given: every inner entry names its engine)."""
    reader.flush_matches()
    match = {"CONTAINER_ID_FULL": container_id, "CONTAINER_STREAM": JOURNAL_STREAM, "_UID": uid}
    if engine:
        match["CONTAINER_ENGINE"] = engine
    reader.add_match(**match)
    reader.seek_tail()
    for _ in range(_LOOK_BACK):
        entry = reader.get_previous()
        if not entry:
            return None
        position = entry_inner_position(entry)
        if position is not None:
            return position
    return None


def entry_inner_position(entry: dict[str, object]) -> dict[str, object] | None:
    """The inner position a forwarded entry carries, as JSON; None without a usable one."""
    cursor = _text(entry.get(INNER_CURSOR_FIELD))
    if cursor is None or not cursor.isascii() or len(cursor) > _MAX_CURSOR:
        if cursor is not None:
            log.warning("ignoring an inner entry with an unreadable cursor: %.80r", cursor)
        return None
    position: dict[str, object] = {"cursor": cursor}
    machine = _text(entry.get("INNER_MACHINE_ID"))  # the inner _MACHINE_ID: informative only
    if machine is not None and _ID128.fullmatch(machine):
        position["machine_id"] = machine
    if _is_journal_stop(entry):
        position["drained"] = True
    return position


def _is_journal_stop(entry: dict[str, object]) -> bool:
    """Whether the entry is its journald's last ("Journal stopped"; see the module)."""
    raw = entry.get("MESSAGE_ID")  # python-systemd's reader makes it a UUID
    message_id = raw.hex if isinstance(raw, uuid.UUID) else _text(raw)
    return message_id == JOURNAL_STOP_ID and _text(entry.get("INNER_TRANSPORT")) == "driver"


def _text(value: object) -> str | None:
    """A field's value as python-systemd gives it (str, bytes, or a list when repeated)."""
    if isinstance(value, list):
        value = value[-1] if value else None
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None
