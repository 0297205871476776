from __future__ import annotations

import time

import pytest

from bridge.config import TransformsConfig
from bridge.core.record import RECORD_OVERHEAD_BYTES, Record, footprint
from bridge.transforms.structured import JsonParser

from .support import TS, build, label, rec

TRACEBACK = b"Traceback (most recent call last):"


def test_no_transforms_is_no_chain():
    chain, errors, _ = build()
    assert (chain, errors) == (None, [])


def test_labels_override_the_config():
    chain, errors, _ = build(labels=label(multiline="java", parse="json", rate_limit="100"))
    assert chain.multiline and chain.json and chain.rate_limit and not errors


def test_bad_label_values_are_reported_and_that_transform_is_off():
    chain, errors, _ = build(
        labels=label(multiline_start="(", multiline_continue="x", rate_limit="lots", parse="json")
    )
    assert chain.multiline is None and chain.rate_limit is None and chain.json is not None
    assert [k for k, _ in errors] == ["multiline", "rate_limit"]


def test_order_multiline_then_rate_limit_then_json():
    chain, _, _ = build(
        TransformsConfig(multiline="python", parse_json=True, rate_limit_lines_per_second=1)
    )
    lines = [b'{"msg":"a","level":"error"}', b'{"msg":"b","user":"x"}']
    out = chain.process([rec(m, i) for i, m in enumerate(lines, 1)], now=0.0)
    # The rate-limited line is not parsed: dropping it costs no JSON work (r21).
    assert [(r.message, r.priority, r.extra_fields, r.dropped) for r in out] == [
        (b"a", 3, (), None),
        (lines[1], None, (), "rate_limited"),
    ]
    assert chain.tick(100.0)[0].message == b"Suppressed 1 lines from container web"


def test_a_merged_stack_trace_is_one_line_for_the_rate_limit():
    chain, _, _ = build(
        TransformsConfig(multiline="python", rate_limit_lines_per_second=1, rate_limit_burst=1)
    )
    lines = [TRACEBACK, b'  File "x.py", line 1', b"ValueError: x", b"next"]
    out = chain.process([rec(m, i) for i, m in enumerate(lines, 1)], now=0.0)
    assert [(r.message.count(b"\n"), r.dropped) for r in out] == [(2, None), (0, "rate_limited")]


def test_poison_json_lines_pass_raw_and_the_chain_goes_on():
    chain, _, events = build(labels=label(parse="json"))
    nested = b'{"msg":"x","a":' + b"[" * 20000 + b"]" * 20000 + b"}"
    lines = [b'{"msg":"\\ud800"}', nested, b'{"msg":"ok","k":"\\udfff"}', b"plain"]
    out = chain.process([rec(m, i) for i, m in enumerate(lines, 1)], now=0.0)
    assert [r.message for r in out] == ["\ufffd".encode(), nested, b"ok", b"plain"]
    assert out[2].extra_fields == ((b"K", "\ufffd".encode()),)
    assert events.failed == ["json"]


def test_a_step_that_raises_passes_the_record_on_as_it_received_it(monkeypatch):
    def explode(self, record):
        record.message, record.priority = b"half-done", 0
        raise RuntimeError("bug")

    monkeypatch.setattr(JsonParser, "apply", explode)
    chain, _, events = build(labels=label(parse="json", detect_priority="all"))
    out = chain.process([rec(b'{"msg":"a"}', 1), rec(b"<3>b", 2)], now=0.0)
    # json failed on both (restored as received); priority still ran after it
    assert [(r.message, r.priority) for r in out] == [(b'{"msg":"a"}', None), (b"b", 3)]
    assert events.failed == ["json", "json"]


def test_a_failing_merger_releases_what_it_held_in_order():
    chain, _, events = build(labels=label(multiline="python"))
    original = chain.multiline._continuation

    def continuation(line: bytes) -> object:
        if line == b"  poison":
            raise MemoryError
        return original(line)

    chain.multiline._continuation = continuation
    lines = [TRACEBACK, b'  File "x.py"', b"  poison", b"after"]
    out = chain.process([rec(m, i) for i, m in enumerate(lines, 1)], now=0.0)
    assert [r.message for r in out] == lines  # held lines unmerged, then the poison line
    assert events.failed == ["multiline"]
    assert chain.held_bytes == 0 and chain.held_first() == {}


def test_tick_never_raises():
    chain, _, events = build(TransformsConfig(rate_limit_lines_per_second=1, rate_limit_burst=1))

    def name() -> str:
        raise RuntimeError("no name")

    chain.container_name = name
    chain.process([rec(b"a", 1), rec(b"b", 2)], now=0.0)
    assert chain.tick(100.0, final=True) == []
    assert events.failed == ["rate_limit"]


def test_the_notice_never_carries_a_position_older_than_one_forwarded():
    """r3: lines forwarded after the drops must not be followed by an older position."""
    chain, _, _ = build(TransformsConfig(rate_limit_lines_per_second=10, rate_limit_burst=10))
    burst = chain.process([rec(b"x", i) for i in range(1, 101)], now=0.0)  # 90 dropped
    assert sum(r.dropped is not None for r in burst) == 90
    later = chain.process([rec(b"x", i) for i in range(101, 111)], now=5.0)
    assert all(r.dropped is None for r in later)
    (notice,) = chain.tick(10.5)
    assert notice.message == b"Suppressed 90 lines from container web"
    assert notice.first == notice.last == (110, 1)


def test_held_bytes_and_held_first_follow_the_open_records():
    chain, _, _ = build(labels=label(multiline="python"))
    held = [rec(TRACEBACK, 1, stream=2), rec(b'  File "x.py"', 3, stream=2)]
    assert chain.process([held[0], rec(b"out", 2, stream=1), held[1]], now=0.0)[0].message == b"out"
    assert chain.held_first() == {2: (1, 1)}
    assert chain.held_bytes == footprint(held)
    (merged,) = chain.tick(0.0, final=True)
    assert (merged.first, merged.last) == ((1, 1), (3, 1))
    assert chain.held_bytes == 0 and chain.held_first() == {}


def test_a_flood_of_continuation_lines_holds_at_most_max_lines_and_goes_on_in_parts():
    """r8: 300,000 continuation lines after a Traceback start (once 300,002 entries)."""
    chain, _, _ = build(labels=label(multiline="python"))
    max_lines = TransformsConfig().multiline_max_lines
    bound = max_lines * (1 + RECORD_OVERHEAD_BYTES)
    assert chain.process([rec(TRACEBACK, 0)], now=0.0) == []
    lines = out = peak = 0
    for start in range(1, 300_001, 1000):
        for n in range(start, start + 1000):
            out += len(chain.process([Record(1, b" ", TS, (n, 1), (n, 1))], now=0.0))
            peak = max(peak, chain.held_bytes)
            lines += 1
    out += len(chain.tick(0.0, final=True))
    assert 0 < peak <= bound
    assert out == -(-(lines + 1) // max_lines)  # records of max_lines lines, not one per line


def test_a_catastrophic_label_pattern_runs_in_linear_time():
    """r7: `^(a|a)+$` takes seconds in Python's re on a 27-byte line."""
    chain, errors, _ = build(labels=label(multiline_start="^(a|a)+$", multiline_continue="^x"))
    assert chain.multiline is not None and not errors
    for n in (26, 40, 1 << 20):
        started = time.perf_counter()
        chain.process([rec(b"a" * n + b"!")], now=0.0)
        assert time.perf_counter() - started < 0.05


@pytest.mark.parametrize("final", [False, True])
def test_records_a_timer_releases_go_through_the_per_line_steps(final):
    config = TransformsConfig(
        multiline="custom",
        multiline_start="^ERROR",
        multiline_continue=r"^\s",
        detect_level_words=True,
    )
    chain, _, _ = build(config)
    assert chain.process([rec(b"ERROR boom", 1), rec(b"  at x", 2)], now=0.0) == []
    assert chain.next_deadline() == 0.5
    (merged,) = chain.tick(0.0 if final else 0.5, final=final)
    assert (merged.message, merged.priority) == (b"ERROR boom\n  at x", 3)
    assert chain.next_deadline() is None


def test_a_continued_part_keeps_its_mark_through_the_json_parser():
    chain, _, _ = build(
        TransformsConfig(multiline_max_lines=2),
        label(multiline="custom", multiline_start="^[{]", multiline_continue="^ ", parse="json"),
    )
    lines = [b"{", b' "a": 1', b' {"msg": "m", "k": "v", "container_multiline_part": "9"}']
    out = chain.process([rec(m, i) for i, m in enumerate(lines)], now=0.0)
    out += chain.tick(0.0, final=True)
    assert [r.message for r in out] == [b'{\n "a": 1', b"m"]
    assert out[1].extra_fields == ((b"CONTAINER_MULTILINE_PART", b"2"), (b"K", b"v"))
