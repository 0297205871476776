from __future__ import annotations

from typing import Any

import pytest

from bridge.sinks.journald.readback import JournalPositions, entry_position

SEEN = "a" * 64
UNSEEN = "b" * 64


class FakeReader:
    """The part of systemd.journal.Reader that JournalPositions uses, over a list of entries."""

    def __init__(self, entries: list[dict[str, Any]], *, broken: set[str] | None = None) -> None:
        self.entries = entries
        self.broken = broken or set()  # calls that raise OSError, as python-systemd does
        self.lookups = 0
        self._matches: dict[str, str] = {}
        self._found: list[dict[str, Any]] = []

    def _check(self, call: str) -> None:
        if call in self.broken:
            raise OSError(74, "Bad message")

    def query_unique(self, field: str) -> set[str]:
        self._check("query_unique")
        return {e[field] for e in self.entries if field in e}

    def flush_matches(self) -> None:
        self._matches = {}

    def add_match(self, **matches: str) -> None:
        self._matches.update(matches)

    def seek_tail(self) -> None:
        self._check("seek_tail")
        self.lookups += 1
        self._found = [
            e for e in self.entries if all(e.get(k) == v for k, v in self._matches.items())
        ]

    def get_previous(self) -> dict[str, Any]:
        return self._found.pop() if self._found else {}


BRIDGE_UID = 0


def entry(stream: str, ts: str, cursor: str | None = None, uid: int = BRIDGE_UID) -> dict[str, Any]:
    fields = {
        "CONTAINER_ID_FULL": SEEN,
        "CONTAINER_STREAM": stream,
        "SYSLOG_TIMESTAMP": ts,
        "_UID": str(uid),
    }
    if cursor is not None:
        fields["JOURNALD_BRIDGE_CURSOR"] = cursor
    return fields


ENTRIES = [
    entry("stdout", "2026-11-28T00:00:01.000000001Z"),
    entry("stderr", "2026-11-28T00:00:02.000000002Z"),
    entry("stdout", "2026-11-28T00:00:03.000000003Z", cursor="1795824003000000003:2"),
]
# What any local user can send to the journal socket: the same fields, from another uid.
FORGED = [
    *ENTRIES,
    entry("stdout", "2100-01-01T00:00:00.000000000Z", uid=65534),
    entry("stderr", "2100-01-01T00:00:00.000000000Z", cursor="4102444800000000000:9", uid=1000),
]


def test_entries_from_other_users_never_give_a_position():
    positions = JournalPositions(reader=FakeReader(FORGED), uid=BRIDGE_UID)
    assert positions.positions(SEEN) == {1: (1795824003000000003, 2), 2: (1795824002000000002, 1)}


def test_the_last_entry_of_each_stream_gives_its_position():
    positions = JournalPositions(reader=FakeReader(ENTRIES), uid=BRIDGE_UID)
    found = positions.positions(SEEN)
    assert found == {1: (1795824003000000003, 2), 2: (1795824002000000002, 1)}


def test_a_container_the_journal_never_saw_costs_no_lookup():
    reader = FakeReader(ENTRIES)
    positions = JournalPositions(reader=reader, uid=BRIDGE_UID)
    assert positions.positions(UNSEEN) == {}
    assert reader.lookups == 0


def test_without_the_container_list_every_container_is_looked_up(caplog):
    reader = FakeReader(ENTRIES, broken={"query_unique"})
    positions = JournalPositions(reader=reader, uid=BRIDGE_UID)
    assert positions.positions(UNSEEN) == {}
    assert positions.positions(SEEN)[2] == (1795824002000000002, 1)
    assert reader.lookups == 4
    assert "cannot list the containers in the journal" in caplog.text


def test_a_journal_read_error_leaves_the_state_file_to_decide(caplog):
    positions = JournalPositions(reader=FakeReader(ENTRIES, broken={"seek_tail"}), uid=BRIDGE_UID)
    assert positions.positions(SEEN) == {}
    assert "cannot read its position back from the journal" in caplog.text


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"SYSLOG_TIMESTAMP": "2026-11-28T00:00:01.5Z"}, (1795824001500000000, 1)),
        ({"JOURNALD_BRIDGE_CURSOR": "7:3", "SYSLOG_TIMESTAMP": "x"}, (7, 3)),
        ({"JOURNALD_BRIDGE_CURSOR": "9:1:2:5:1", "SYSLOG_TIMESTAMP": "x"}, (9, 1, 2, 5, 1)),
        ({"JOURNALD_BRIDGE_CURSOR": "9:1:0:5:1"}, None),  # no step: not a position
        ({"JOURNALD_BRIDGE_CURSOR": "9:1:2:5"}, None),
        ({"SYSLOG_TIMESTAMP": "yesterday"}, None),
        ({}, None),
    ],
)
def test_entry_position(fields, expected):
    assert entry_position(fields) == expected
