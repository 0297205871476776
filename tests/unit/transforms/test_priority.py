from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.record import Record
from bridge.transforms.priority import PriorityDetector, level_priority

TS = b"2026-11-28T00:13:57.123456789Z"


def apply(message: bytes, prefix=True, words=True) -> Record:
    return PriorityDetector(prefix=prefix, words=words).apply(
        Record(1, message, TS, (1, 1), (1, 1))
    )


def test_sd_daemon_prefix_is_stripped():
    r = apply(b"<3>failed")
    assert (r.priority, r.message) == (3, b"failed")


def test_level_words():
    assert apply(b"ERROR something").priority == 3
    assert apply(b"[warn] something").priority == 4
    assert apply(b"Debug: x").priority == 7
    assert apply(b"errors are fine").priority is None
    assert apply(b"ERROR x", words=False).priority is None


def test_off_by_default_keeps_stream_priority():
    r = apply(b"<3>x", prefix=False, words=False)
    assert (r.priority, r.message) == (None, b"<3>x")


@given(st.binary(max_size=50))
def test_priority_is_none_or_a_syslog_level(data):
    r = apply(data)
    assert r.priority is None or 0 <= r.priority <= 7


def test_level_priority_values():
    assert [level_priority(v) for v in ("info", "CRITICAL", 5, "7", 9, True, None)] == [
        6,
        2,
        5,
        7,
        None,
        None,
        None,
    ]
