"""Where a container's inner journal was read up to, and where to go on from. No I/O.

A position is the inner journal's cursor of the last entry consumed (`s=<seqnum id>;i=<seqnum>;
b=<boot id>;m=<monotonic>;t=<realtime>;x=<xor hash>`, all hex), the machine id of the journal
directory it came from, and whether the journal was read to its end after the container exited
(`drained`: then a journal that starts empty at the next start, on tmpfs, has lost nothing).
After a crash, the host journal says `drained` too when the last entry forwarded was the inner
journald's own "Journal stopped" (sinks/journald/inner_readback.py).

Resuming (`resume`): seek to the cursor; if the entry there is exactly the cursor's
(`test_cursor`), everything after it is new. Otherwise the entry is gone (vacuumed, rotated
away, a tmpfs journal that started empty, a new machine-id directory, a copy made by journald's
flush to /var): read from the head and admit what `ResumeFilter` says comes after the cursor.
Its order is sd-journal's own (`compare_with_location`): by seqnum within one seqnum id, else
by monotonic time within one boot, else by realtime, then xor hash; an entry that compares equal
is the cursor's entry itself (journald's flush copies entries with a new seqnum id, keeping
boot, times and hash), so neither it nor anything before it is repeated.

Gaps: the first admitted entry says what was lost. Same seqnum id: `seqnum - saved - 1`
entries ("vacuumed"). Another seqnum id with no copy of the cursor's entry seen: the journal the
cursor was in is gone ("reset", count unknown), unless it had been drained.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal, Protocol

log = logging.getLogger(__name__)

MAX_CURSOR_LENGTH = 512
_ID128 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class CursorParts:
    """The fields of a journal cursor, parsed."""

    seqnum_id: str
    seqnum: int
    boot_id: str
    monotonic_us: int
    realtime_us: int
    xor_hash: int


# Exactly what sd_journal_get_cursor writes: "s=%s;i=%llx;b=%s;m=%llx;t=%llx;x=%llx".
_CURSOR = re.compile(
    r"s=([0-9a-f]{32});i=([0-9a-f]{1,16});b=([0-9a-f]{32});"
    r"m=([0-9a-f]{1,16});t=([0-9a-f]{1,16});x=([0-9a-f]{1,16})"
)


def parse_cursor(cursor: str) -> CursorParts:
    """Raises ValueError unless `cursor` is a cursor as sd_journal_get_cursor writes it."""
    match = _CURSOR.fullmatch(cursor) if len(cursor) <= MAX_CURSOR_LENGTH else None
    if match is None:
        raise ValueError(f"not a journal cursor: {cursor[:80]!r}")
    s, i, b, m, t, x = match.groups()
    return CursorParts(s, int(i, 16), b, int(m, 16), int(t, 16), int(x, 16))


def is_cursor(cursor: str) -> bool:
    return len(cursor) <= MAX_CURSOR_LENGTH and _CURSOR.fullmatch(cursor) is not None


def compare(entry: CursorParts, saved: CursorParts) -> int:
    """sd-journal's order of two entries (<0, 0, >0), as `compare_with_location` has it."""
    if entry.seqnum_id == saved.seqnum_id and entry.seqnum != saved.seqnum:
        return -1 if entry.seqnum < saved.seqnum else 1
    if entry.boot_id == saved.boot_id and entry.monotonic_us != saved.monotonic_us:
        return -1 if entry.monotonic_us < saved.monotonic_us else 1
    if entry.realtime_us != saved.realtime_us:
        return -1 if entry.realtime_us < saved.realtime_us else 1
    if entry.xor_hash != saved.xor_hash:
        return -1 if entry.xor_hash < saved.xor_hash else 1
    return 0


@dataclass(frozen=True, slots=True)
class InnerPosition:
    """How far one container's inner journal was consumed; see the module docstring."""

    cursor: str
    machine_id: str = ""
    drained: bool = False

    def __post_init__(self) -> None:
        if not is_cursor(self.cursor):  # a position always holds a valid cursor
            raise ValueError(f"not a journal cursor: {self.cursor[:80]!r}")
        if self.machine_id and not _ID128.fullmatch(self.machine_id):
            raise ValueError("machine_id must be 32 hex digits")

    @property
    def parts(self) -> CursorParts:
        return parse_cursor(self.cursor)

    @property
    def boot_id(self) -> str:
        return self.parts.boot_id

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"cursor": self.cursor}
        if self.machine_id:
            data["machine_id"] = self.machine_id
        if self.drained:
            data["drained"] = True
        return data

    @classmethod
    def from_json(cls, data: object) -> InnerPosition:
        """Raises ValueError for anything but a well-formed position."""
        if not isinstance(data, dict):
            raise ValueError("inner position must be an object")
        cursor, machine_id = data.get("cursor"), data.get("machine_id", "")
        drained = data.get("drained", False)
        if not isinstance(cursor, str) or not isinstance(machine_id, str):
            raise ValueError("inner position: cursor and machine_id must be strings")
        if not isinstance(drained, bool):
            raise ValueError("inner position: drained must be a boolean")
        return cls(cursor, machine_id, drained)


GapKind = Literal["vacuumed", "reset"]


@dataclass(frozen=True, slots=True)
class Gap:
    """Entries after `saved` that were gone before they could be read.

    `lost` is their number when the journal says it (same seqnum id), else None.
    """

    kind: GapKind
    lost: int | None
    saved: InnerPosition
    first_cursor: str


class ResumeFilter:
    """Admits the entries, read from the journal's head, that come after a saved position.

    Without a saved position it admits every entry stamped at or after `floor_realtime_us`.
    `gap` is set (once) by the first admitted entry when entries were lost.
    """

    __slots__ = ("_copy_seen", "_decided", "_floor", "_saved", "_saved_parts", "gap")

    def __init__(self, saved: InnerPosition | None, floor_realtime_us: int = 0) -> None:
        self._saved = saved
        self._saved_parts = saved.parts if saved is not None else None
        self._floor = floor_realtime_us
        self._decided = saved is None
        self._copy_seen = False
        self.gap: Gap | None = None

    def admit(self, cursor: str) -> bool:
        entry = parse_cursor(cursor)
        saved = self._saved_parts
        if saved is None:
            return entry.realtime_us >= self._floor
        order = compare(entry, saved)
        if order <= 0:
            self._copy_seen = self._copy_seen or order == 0
            return False
        if not self._decided:
            self._decided = True
            self.gap = self._gap(entry, saved, cursor)
        return True

    def _gap(self, entry: CursorParts, saved: CursorParts, cursor: str) -> Gap | None:
        assert self._saved is not None
        if entry.seqnum_id == saved.seqnum_id:
            lost = entry.seqnum - saved.seqnum - 1
            return Gap("vacuumed", lost, self._saved, cursor) if lost > 0 else None
        if self._copy_seen or self._saved.drained:
            return None
        return Gap("reset", None, self._saved, cursor)


class SeekableJournal(Protocol):
    """The part of systemd's `_Reader` that `resume` drives (a fake in the tests)."""

    def seek_cursor(self, cursor: str) -> None: ...

    def seek_head(self) -> None: ...

    def _next(self, skip: int = 1) -> int: ...

    def test_cursor(self, cursor: str) -> bool: ...


def resume(
    journal: SeekableJournal, saved: InnerPosition | None, floor_realtime_us: int = 0
) -> ResumeFilter | None:
    """Positions `journal` before the first entry to consider.

    Returns None when the journal sits on the saved entry itself (everything `_next` reads from
    here on is new), else a filter for the entries read from the head.
    """
    if saved is not None:
        journal.seek_cursor(saved.cursor)
        if journal._next(1) and journal.test_cursor(saved.cursor):
            return None
    journal.seek_head()
    return ResumeFilter(saved, floor_realtime_us)


def later(a: InnerPosition | None, b: InnerPosition | None) -> InnerPosition | None:
    """The later of two positions of one container (the state file's, the journal's read-back).

    Both only ever name entries that were sent, so the later one loses and repeats nothing.
    Order is `compare`'s; of two positions of the same entry, a drained one wins (it says the
    journal was read to its end, which the host journal cannot say).
    """
    if a is None or b is None:
        return a if b is None else b
    order = compare(a.parts, b.parts)
    if order == 0:
        return a if a.drained or not b.drained else b
    return a if order > 0 else b


def resume_position(saved: object, journal: object) -> InnerPosition | None:
    """Where a container's inner journal resumes at start-up: the later of the state file's
    position (its `inner` JSON) and the host journal's (inner_readback.py). Either may be
    None; one that cannot be parsed (a damaged state file) is left out with one log line."""
    return later(_parsed(saved, "state file"), _parsed(journal, "journal"))


def _parsed(data: object, where: str) -> InnerPosition | None:
    if data is None:
        return None
    try:
        return InnerPosition.from_json(data)
    except ValueError as exc:
        log.warning("ignoring an unusable inner journal position from the %s: %s", where, exc)
        return None
