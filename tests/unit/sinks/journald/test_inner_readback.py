"""Reading an inner journal's position back from a real journal file (sd-journal's own matching).

The host journal is written by systemd-journal-remote (tests/unit/sources/inner_journal/
journals.py), which keeps every field as given, `_UID` included: enough to play the bridge and
a forger side by side.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from systemd import journal

from bridge.sinks.journald.inner_readback import (
    JOURNAL_STOP_ID,
    InnerJournalPositions,
    entry_inner_position,
    last_inner_position,
)
from bridge.sources.inner_journal.position import ResumeFilter, resume_position
from tests.unit.sources.inner_journal.journals import entry, needs_journal_remote, write

CID = "c" * 64
OTHER = "d" * 64
MACHINE = "e" * 32
BRIDGE_UID = "4242"


def cursor(i: int) -> str:
    return f"s={'1' * 32};i={i:x};b={'2' * 32};m={i:x};t={i:x};x={i:x}"


def host(i: int, container: str = CID, uid: str = BRIDGE_UID, **extra: str) -> dict[str, Any]:
    fields: dict[str, Any] = entry(
        i,
        CONTAINER_ID_FULL=container,
        CONTAINER_STREAM="journal",
        JOURNALD_BRIDGE_INNER_CURSOR=cursor(i),
        INNER_MACHINE_ID=MACHINE,
        _UID=uid,
    )
    fields.update(extra)
    return fields


@pytest.fixture
def opened(tmp_path: Path):
    readers: list[journal.Reader] = []

    def open_(entries: list[dict[str, Any]]) -> journal.Reader:
        path = write(tmp_path / f"host{len(readers)}.journal", entries)
        reader = journal.Reader(files=[str(path)])
        readers.append(reader)
        return reader

    yield open_
    for reader in readers:
        reader.close()


@needs_journal_remote
def test_the_last_forwarded_entry_of_the_container_is_the_position(opened):
    reader = opened(
        [
            host(1),
            host(2),
            host(3, container=OTHER),
            host(4, CONTAINER_STREAM="stdout"),  # not an inner entry
            host(5, uid="1000"),  # a forger: another uid
            entry(6, CONTAINER_ID_FULL=CID, CONTAINER_STREAM="journal", _UID=BRIDGE_UID),
        ]
    )
    assert last_inner_position(reader, CID, BRIDGE_UID) == {
        "cursor": cursor(2),
        "machine_id": MACHINE,
    }
    assert last_inner_position(reader, OTHER, BRIDGE_UID) == {
        "cursor": cursor(3),
        "machine_id": MACHINE,
    }
    assert last_inner_position(reader, "f" * 64, BRIDGE_UID) is None


@needs_journal_remote
def test_only_the_bridges_uid_counts(opened):
    reader = opened([host(1, uid="1000")])
    assert InnerJournalPositions(reader=reader, uid=4242).position(CID) is None
    assert InnerJournalPositions(reader=reader, uid=1000).position(CID) == {
        "cursor": cursor(1),
        "machine_id": MACHINE,
    }


@needs_journal_remote
def test_a_container_the_journal_does_not_know_costs_no_lookup(opened):
    reader = opened([host(1)])
    assert InnerJournalPositions(reader=reader, uid=4242, known=set()).position(CID) is None
    assert InnerJournalPositions(reader=reader, uid=4242, known={CID}).position(CID) is not None


def test_a_journal_that_cannot_be_read_leaves_it_to_the_state_file(caplog):
    class Broken:
        def flush_matches(self) -> None:
            pass

        def add_match(self, **_: str) -> None:
            pass

        def seek_tail(self) -> None:
            raise OSError(74, "Bad message")

    positions = InnerJournalPositions(reader=Broken(), uid=0)  # type: ignore[arg-type]
    assert positions.position(CID) is None
    assert "cannot read its inner journal's position back" in caplog.text


def test_unusable_fields_give_no_position():
    assert entry_inner_position({}) is None
    assert entry_inner_position({"JOURNALD_BRIDGE_INNER_CURSOR": b"\xff"}) is None
    assert entry_inner_position({"JOURNALD_BRIDGE_INNER_CURSOR": "x" * 600}) is None
    assert entry_inner_position(
        {"JOURNALD_BRIDGE_INNER_CURSOR": "c", "INNER_MACHINE_ID": "not-an-id"}
    ) == {"cursor": "c"}


@needs_journal_remote
def test_the_inner_journalds_stop_message_forwarded_last_is_a_drained_end(opened):
    """A crash after a container stop, before the state file was saved: the host journal
    alone says its journal was forwarded to its end, so a tmpfs journal that starts empty at
    the next start is no gap."""
    stop = {"MESSAGE": "Journal stopped", "MESSAGE_ID": JOURNAL_STOP_ID}
    reader = opened(
        [
            host(1),
            host(2, INNER_TRANSPORT="driver", **stop),
            host(3, container=OTHER, INNER_TRANSPORT="journal", **stop),  # forged from inside
        ]
    )
    stopped = last_inner_position(reader, CID, BRIDGE_UID)
    assert stopped == {"cursor": cursor(2), "machine_id": MACHINE, "drained": True}
    forged = last_inner_position(reader, OTHER, BRIDGE_UID)
    assert forged is not None and "drained" not in forged

    restarted = f"s={'9' * 32};i=1;b={'2' * 32};m=10;t=10;x=1"  # a new journal, same boot
    for read_back, gap in ((stopped, None), (forged, "reset")):
        resumed = ResumeFilter(resume_position(None, read_back))
        assert resumed.admit(restarted)
        assert (resumed.gap.kind if resumed.gap else None) == gap


def test_a_stop_message_id_in_any_form_counts_only_from_journald_itself():
    base = {"JOURNALD_BRIDGE_INNER_CURSOR": "c", "INNER_TRANSPORT": b"driver"}
    for message_id in (JOURNAL_STOP_ID, JOURNAL_STOP_ID.encode(), uuid.UUID(JOURNAL_STOP_ID)):
        assert entry_inner_position({**base, "MESSAGE_ID": message_id}) == {
            "cursor": "c",
            "drained": True,
        }
    assert entry_inner_position({**base, "MESSAGE_ID": "0" * 32}) == {"cursor": "c"}
    assert entry_inner_position({**base, "MESSAGE_ID": [b"\xff"]}) == {"cursor": "c"}
    assert entry_inner_position(
        {**base, "MESSAGE_ID": JOURNAL_STOP_ID, "INNER_TRANSPORT": "stdout"}
    ) == {"cursor": "c"}
