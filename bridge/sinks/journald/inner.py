"""Inner-journal entries as journald datagrams, and what the writer commits for them. Pure.

An inner entry (core/inner.py) goes to the host journal with its own MESSAGE, PRIORITY and
fields (mapped and capped by sources/inner_journal/fields.py, already encoded), the container's
fields, `CONTAINER_STREAM=journal`, and its inner cursor in `JOURNALD_BRIDGE_INNER_CURSOR`: the
field the read-back (inner_readback.py) resumes from. No inner field and no label can set that
field: inner fields other than the allow-list are renamed under `INNER_`, and `JOURNALD_BRIDGE_*`
is protected for labels, environment and JSON keys (core/fields.py).

Invariant of `commit_inner`: a batch's position moves only as far as its entries were dealt
with (sent, or refused by journald for good), in order; the batch's `last` (which may lie past
its last entry: rate-limited entries, the drained end) only once every entry was.
"""

from __future__ import annotations

from bridge.core.inner import InnerEntryLike, InnerPositionLike
from bridge.core.queue import InnerBatch

INNER_CURSOR_FIELD = "JOURNALD_BRIDGE_INNER_CURSOR"
JOURNAL_STREAM = "journal"  # CONTAINER_STREAM of inner entries

_PRIORITY = {p: b"PRIORITY=%d\n" % p for p in range(8)}
_STREAM = b"CONTAINER_STREAM=journal\n"
_CURSOR = INNER_CURSOR_FIELD.encode() + b"="


def encode_inner(entry: InnerEntryLike, container_fields: bytes) -> bytes:
    """One journal entry for an inner entry; `container_fields` as InnerBatch.fields has them.

    An entry without a PRIORITY stays without one, as it was in the container's journal.
    """
    message = entry.message
    priority = entry.priority
    return b"".join(
        (
            b"MESSAGE\n" + len(message).to_bytes(8, "little") if b"\n" in message else b"MESSAGE=",
            message,
            b"\n",
            _PRIORITY[priority] if priority is not None else b"",
            _STREAM,
            container_fields,
            entry.native_fields,
            _CURSOR,
            entry.position.cursor.encode("ascii"),
            b"\n",
        )
    )


def encode_batch(batch: InnerBatch) -> list[bytes]:
    fields = batch.fields
    return [encode_inner(entry, fields) for entry in batch.entries]


def commit_inner(
    batch: InnerBatch, sent: int, refused: set[int]
) -> tuple[int, int, InnerEntryLike | None]:
    """Commits how far `sent` of the batch's datagrams reach; returns the entries and message
    bytes journald took (refused ones left out) and the last entry it took."""
    entries = batch.entries
    position: InnerPositionLike | None
    if sent >= len(entries):
        position = batch.last if batch.last is not None else _last_position(entries)
    else:
        position = entries[sent - 1].position if sent > 0 else None
    if position is not None:
        batch.stream.commit(position)
    taken = entries if sent >= len(entries) else entries[:sent]
    if refused:
        taken = [entry for index, entry in enumerate(taken) if index not in refused]
    return len(taken), sum(len(entry.message) for entry in taken), taken[-1] if taken else None


def _last_position(entries: list[InnerEntryLike]) -> InnerPositionLike | None:
    return entries[-1].position if entries else None
