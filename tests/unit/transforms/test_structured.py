from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from bridge.fields import is_protected
from bridge.record import Record
from bridge.transforms.structured import MAX_FIELDS, MAX_VALUE_BYTES, JsonParser

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


def test_limits():
    data = {f"k{i}": "v" * (MAX_VALUE_BYTES + 10) for i in range(100)}
    r = apply(json.dumps(data).encode())
    assert len(r.extra_fields) == MAX_FIELDS
    assert all(len(v) == MAX_VALUE_BYTES for _, v in r.extra_fields)


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


@given(
    st.dictionaries(
        st.text(max_size=80),
        st.one_of(st.text(max_size=20), st.integers(), st.booleans()),
        max_size=80,
    )
)
def test_parsed_fields_are_always_valid_and_never_protected(data):
    r = apply(json.dumps(data).encode())
    assert len(r.extra_fields) <= MAX_FIELDS
    for name, _ in r.extra_fields:
        text = name.decode()
        assert text[0].isalpha() and len(text) <= 64 and not is_protected(text)
