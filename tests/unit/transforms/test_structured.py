from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.fields import is_protected
from bridge.core.record import Record
from bridge.transforms.structured import (
    MAX_EXTRA_BYTES,
    MAX_FIELDS,
    MAX_VALUE_BYTES,
    JsonParser,
)

from .support import Events

TS = b"2026-11-28T00:13:57.123456789Z"
PARSER = JsonParser(("msg", "message"), ("level", "severity", "lvl"))


def apply(message: bytes, parser=PARSER) -> Record:
    return parser.apply(Record(1, message, TS, (1, 1), (1, 1)))


def test_message_level_and_fields():
    r = apply(b'{"msg":"disk full","level":"ERROR","user.id":42,"ok":true,"nested":{"a":1}}')
    assert (r.message, r.priority) == (b"disk full", 3)
    assert dict(r.extra_fields) == {b"USER_ID": b"42", b"OK": b"true"}


def test_a_container_cannot_set_trusted_or_fixed_fields():
    r = apply(
        b'{"_PID":"1","CONTAINER_NAME":"evil","MESSAGE":"x","PRIORITY":"0","SYSLOG_IDENTIFIER":"x"}'
    )
    assert r.priority is None and r.extra_fields == ()


def test_syslog_numbers_and_names():
    assert apply(b'{"message":"m","severity":4}').priority == 4
    assert apply(b'{"message":"m","lvl":"warning"}').priority == 4
    assert apply(b'{"message":"m","level":"fatal"}').priority == 2
    assert apply(b'{"message":"m","level":"nonsense"}').priority is None


def test_limits_and_what_they_leave_off_is_counted():
    events = Events()
    data = {f"k{i}": "v" * (MAX_VALUE_BYTES + 10) for i in range(6)}
    data |= {f"n{i}": i for i in range(100)}
    r = apply(json.dumps(data).encode(), JsonParser(("msg",), ("level",), events=events))
    assert len(r.extra_fields) == MAX_FIELDS
    assert sum(len(k) + len(v) for k, v in r.extra_fields) <= MAX_EXTRA_BYTES
    assert [len(v) for _, v in r.extra_fields[:3]] == [MAX_VALUE_BYTES] * 3
    # 3 big values fit in 256 KiB, 3 do not; 3 + 61 small ones make 64; 39 are over the count
    assert events.dropped == [("count", 39), ("bytes", 3)]


def test_a_value_is_cut_on_a_character_boundary():
    r = apply(json.dumps({"k": "a" + "é" * MAX_VALUE_BYTES}).encode())
    ((_, value),) = r.extra_fields
    assert len(value) == MAX_VALUE_BYTES - 1 and value.decode()


def test_lone_surrogates_become_replacement_characters():
    """r1: '\\ud800' killed the writer thread (UnicodeEncodeError)."""
    r = apply(b'{"msg":"a\\ud800b","k":"\\udfff","level":"\\udc80"}')
    assert (r.message, r.extra_fields) == (
        "a\ufffdb".encode(),
        ((b"K", "\ufffd".encode()), (b"LEVEL", "\ufffd".encode())),
    )


def test_deep_nesting_passes_raw_and_is_counted():
    """r1b: RecursionError."""
    events = Events()
    line = b'{"msg":"x","a":' + b"[" * 20000 + b"]" * 20000 + b"}"
    r = apply(line, JsonParser(("msg",), ("level",), events=events))
    assert (r.message, r.extra_fields, events.failed) == (line, (), ["json"])


@pytest.mark.parametrize(
    "key",
    ["object_systemd_unit", "object_pid", "OBJECT_UID", "coredump_unit", "unit", "user_unit",
     "_pid", "container_id_full", "container_stream", "syslog_timestamp", "journald_bridge_x"],
)  # fmt: skip
def test_fields_readers_trust_cannot_be_set(key):
    """r18: OBJECT_* fields are trusted by journalctl -u when _UID=0."""
    r = apply(json.dumps({"msg": "m", key: "ssh.service", "ok": 1}).encode())
    assert r.extra_fields == ((b"OK", b"1"),)


@pytest.mark.parametrize("level", ["\u00b2", "9" * 5000, "\u0663", " 07 "])
def test_odd_levels_never_raise(level):
    r = apply(json.dumps({"msg": "m", "level": level}).encode())
    assert r.priority == (7 if level == " 07 " else None)


def test_a_line_with_many_keys_costs_a_bounded_amount_of_naming():
    events = Events()
    line = b"{" + b",".join(b'"container_%d":1' % i for i in range(70000)) + b"}"
    r = apply(line, JsonParser(("msg",), ("level",), events=events))
    assert r.extra_fields == () and events.dropped == [("count", 70000 - 256)]


def test_prefix():
    r = apply(b'{"msg":"m","user":"bob"}', JsonParser(("msg",), ("level",), "app_"))
    assert dict(r.extra_fields) == {b"APP_USER": b"bob"}


@given(st.binary(max_size=200))
def test_anything_that_is_not_a_json_object_passes_unchanged(data):
    r = apply(data)
    try:
        is_object = isinstance(json.loads(data.lstrip()), dict)
    except ValueError:
        is_object = False
    if not is_object:
        assert (r.message, r.priority, r.extra_fields) == (data, None, ())


ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=20)


@given(
    st.dictionaries(
        st.one_of(st.text(max_size=80), st.sampled_from(["msg", "level", "OBJECT_PID", "unit"])),
        st.one_of(ANY_TEXT, st.integers(), st.floats(), st.booleans(), st.none()),
        max_size=80,
    ),
    st.booleans(),
)
def test_parsed_fields_are_always_valid_utf8_and_never_protected(data, ascii_only):
    r = apply(json.dumps(data, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))
    assert len(r.extra_fields) <= MAX_FIELDS
    if isinstance(data.get("msg"), str):
        r.message.decode()  # text from JSON is valid UTF-8; without a message key, the raw line
    for name, value in r.extra_fields:
        text = name.decode()
        assert text[0].isalpha() and len(text) <= 64 and not is_protected(text)
        value.decode()


def test_a_json_line_cannot_forge_the_resume_cursor():
    r = apply(b'{"msg":"x","JOURNALD_BRIDGE_CURSOR":"1:1:1:0:1","journald_bridge_cursor":"2:1"}')
    assert all(not name.upper().startswith(b"JOURNALD_BRIDGE") for name, _ in r.extra_fields)
