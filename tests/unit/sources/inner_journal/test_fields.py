from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.fields import is_protected
from bridge.sources.inner_journal.fields import (
    DROP_REASONS,
    MAX_INNER_FIELD_BYTES,
    MAX_INNER_FIELDS,
    REALTIME_FIELD,
    inner_name,
    map_entry,
)

VALID = re.compile(rb"^[A-Z][A-Z0-9_]{0,63}$")
ALLOWED = {b"SYSLOG_IDENTIFIER", b"SYSLOG_FACILITY", b"SYSLOG_PID", b"ERRNO", b"MESSAGE_ID", b"TID"}
NEVER = {  # the host fields an inner field must never set (readers trust them, or we read them back)
    b"UNIT",
    b"USER_UNIT",
    b"CONTAINER_ID_FULL",
    b"CONTAINER_STREAM",
    b"SYSLOG_TIMESTAMP",
    b"JOURNALD_BRIDGE_INNER_CURSOR",
    b"CONTAINER_NAME",
    b"MESSAGE",
    b"PRIORITY",
}


def names(mapped) -> list[bytes]:
    return [name for name, _ in mapped.fields]


def test_a_logger_entry() -> None:
    mapped = map_entry(
        [
            ("_UID", b"0"),
            ("_BOOT_ID", b"23c38030e34c43a2966f07e9586574dd"),
            ("PRIORITY", b"5"),
            ("_TRANSPORT", b"syslog"),
            ("SYSLOG_FACILITY", b"1"),
            ("SYSLOG_IDENTIFIER", b"innerapp"),
            ("SYSLOG_TIMESTAMP", b"Dec  2 08:16:05 "),
            ("MESSAGE", b"hello"),
            ("_PID", b"45"),
            ("_COMM", b"logger"),
            ("_SYSTEMD_UNIT", b"nginx.service"),
            ("CODE_FILE", b"x.c"),
        ],
        realtime_us=1796199365145659,
    )
    assert mapped.message == b"hello"
    assert mapped.priority == 5
    assert dict(mapped.fields) == {
        b"SYSLOG_FACILITY": b"1",
        b"SYSLOG_IDENTIFIER": b"innerapp",
        b"CODE_FILE": b"x.c",
        REALTIME_FIELD: b"1796199365145659",
        b"INNER_SYSTEMD_UNIT": b"nginx.service",
        b"INNER_PID": b"45",
        b"INNER_COMM": b"logger",
        b"INNER_BOOT_ID": b"23c38030e34c43a2966f07e9586574dd",
        b"INNER_TRANSPORT": b"syslog",
        b"INNER_UID": b"0",
        b"INNER_SYSLOG_TIMESTAMP": b"Dec  2 08:16:05 ",
    }
    assert mapped.dropped == {}


@pytest.mark.parametrize(
    ("name", "renamed"),
    [
        ("_SYSTEMD_UNIT", "INNER_SYSTEMD_UNIT"),
        ("_PID", "INNER_PID"),
        ("_COMM", "INNER_COMM"),
        ("UNIT", "INNER_UNIT"),
        ("USER_UNIT", "INNER_USER_UNIT"),
        ("OBJECT_SYSTEMD_UNIT", "INNER_OBJECT_SYSTEMD_UNIT"),
        ("COREDUMP_UNIT", "INNER_COREDUMP_UNIT"),
        ("CONTAINER_ID_FULL", "INNER_CONTAINER_ID_FULL"),
        ("CONTAINER_STREAM", "INNER_CONTAINER_STREAM"),
        ("SYSLOG_TIMESTAMP", "INNER_SYSLOG_TIMESTAMP"),
        ("JOURNALD_BRIDGE_CURSOR", "INNER_JOURNALD_BRIDGE_CURSOR"),
        ("JOURNALD_BRIDGE_INNER_CURSOR", "INNER_JOURNALD_BRIDGE_INNER_CURSOR"),
        ("__CURSOR", "INNER_CURSOR"),
        ("lower.case", "INNER_LOWER_CASE"),
        ("A" * 80, "INNER_" + "A" * 58),
        ("...", None),
    ],
)
def test_renames(name: str, renamed: str | None) -> None:
    assert inner_name(name) == renamed


def test_untrusted_fields_cannot_forge_the_trusted_ones() -> None:
    mapped = map_entry(
        [
            ("MESSAGE", b"x"),
            ("SYSTEMD_UNIT", b"nginx.service"),  # any process in the container can send these
            ("PID", b"1"),
            ("COMM", b"sshd"),
            ("AUDIT_SESSION", b"1"),
            ("REALTIME_TIMESTAMP", b"0"),
            ("__REALTIME_TIMESTAMP", b"0"),  # a forged file: still not ours to overwrite
            ("APP_FIELD", b"kept"),
        ],
        realtime_us=7,
    )
    assert dict(mapped.fields) == {REALTIME_FIELD: b"7", b"INNER_APP_FIELD": b"kept"}
    assert mapped.dropped == {"reserved": 6}


def test_pass_through_fields_once_each_and_priority_checked() -> None:
    mapped = map_entry(
        [
            ("MESSAGE", b"first"),
            ("MESSAGE", b"second"),
            ("PRIORITY", b"9"),
            ("SYSLOG_IDENTIFIER", b"a"),
            ("SYSLOG_IDENTIFIER", b"b"),
            ("code_line", b"1"),  # not the allow-listed CODE_LINE: renamed
        ],
        realtime_us=1,
    )
    assert mapped.message == b"first"
    assert mapped.priority is None
    assert dict(mapped.fields)[b"INNER_PRIORITY"] == b"9"
    assert dict(mapped.fields)[b"INNER_CODE_LINE"] == b"1"
    assert names(mapped).count(b"SYSLOG_IDENTIFIER") == 1
    assert mapped.dropped == {"duplicate": 2}


def test_repeated_renamed_fields_keep_every_value() -> None:
    mapped = map_entry([("TAG", b"a"), ("TAG", b"b")], realtime_us=1)
    assert [v for n, v in mapped.fields if n == b"INNER_TAG"] == [b"a", b"b"]


def test_caps_keep_the_allow_listed_and_the_who_first() -> None:
    pairs = [(f"APP_{i:03}", b"v") for i in range(100)]
    pairs += [("_PID", b"45"), ("SYSLOG_IDENTIFIER", b"app"), ("_SYSTEMD_UNIT", b"u.service")]
    mapped = map_entry(pairs, realtime_us=1)
    assert len(mapped.fields) == MAX_INNER_FIELDS + 1
    assert names(mapped)[:4] == [
        REALTIME_FIELD,
        b"SYSLOG_IDENTIFIER",
        b"INNER_SYSTEMD_UNIT",
        b"INNER_PID",
    ]
    assert mapped.dropped == {"count": 103 - MAX_INNER_FIELDS}


def test_byte_cap_leaves_out_whole_fields_and_keeps_smaller_ones() -> None:
    big = b"x" * (MAX_INNER_FIELD_BYTES - 100)
    mapped = map_entry([("A", big), ("B", big), ("C", b"small")], realtime_us=1)
    assert names(mapped) == [REALTIME_FIELD, b"INNER_A", b"INNER_C"]
    assert mapped.dropped == {"bytes": 1}


def test_message_is_cut_at_the_cap() -> None:
    mapped = map_entry([("MESSAGE", b"x" * 100)], realtime_us=1, max_message_bytes=10)
    assert mapped.message == b"x" * 10
    assert mapped.dropped == {"truncated": 1}
    assert map_entry([], realtime_us=1).message == b""


field_names = st.one_of(
    st.sampled_from(
        [
            "MESSAGE",
            "PRIORITY",
            "SYSLOG_IDENTIFIER",
            "SYSLOG_PID",
            "CODE_FILE",
            "_PID",
            "_SYSTEMD_UNIT",
            "UNIT",
            "OBJECT_PID",
            "COREDUMP_UNIT",
            "CONTAINER_ID_FULL",
            "CONTAINER_STREAM",
            "SYSLOG_TIMESTAMP",
            "JOURNALD_BRIDGE_CURSOR",
            "JOURNALD_BRIDGE_INNER_CURSOR",
            "SYSTEMD_UNIT",
            "_MACHINE_ID",
            "INNER_PID",
        ]
    ),
    st.text(max_size=80),
    st.from_regex(r"_?[A-Z][A-Z0-9_]{0,70}", fullmatch=True),
)
# mostly small values, some big enough that a dozen of them reach the byte cap
values = st.one_of(st.binary(max_size=64), st.builds(lambda n: b"v" * n, st.integers(20000, 40000)))


@given(st.lists(st.tuples(field_names, values), max_size=120), st.integers(0, 2**63 - 1))
def test_every_field_is_kept_valid_or_counted(pairs, realtime) -> None:
    mapped = map_entry(pairs, realtime_us=realtime, max_message_bytes=30000)
    out = names(mapped)
    assert out[0] == REALTIME_FIELD
    for name in out:
        assert VALID.match(name), name
        assert name not in NEVER
        assert name in ALLOWED or name.startswith(b"CODE_") or name.startswith(b"INNER_")
        # INNER_* is the bridge's own namespace for these (protected from labels and JSON keys)
        assert name in ALLOWED or name.startswith(b"INNER_") or not is_protected(name.decode())
    assert len(out) <= MAX_INNER_FIELDS + 1
    assert (
        sum(len(n) + len(v) for n, v in mapped.fields if n != REALTIME_FIELD)
        <= MAX_INNER_FIELD_BYTES
    )
    assert len(mapped.message) <= 30000
    assert set(mapped.dropped) <= set(DROP_REASONS)
    first_message = any(n == "MESSAGE" for n, _ in pairs)
    valid_priority = next((v for n, v in pairs if n == "PRIORITY"), None) in {
        str(i).encode() for i in range(8)
    }
    accounted = (
        len(out)
        - 1
        + sum(c for r, c in mapped.dropped.items() if r != "truncated")
        + first_message
        + valid_priority
    )
    assert accounted == len(pairs)
