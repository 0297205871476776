from __future__ import annotations

from bridge.config import TransformsConfig
from bridge.record import Record
from bridge.transforms import build_chain

TS = b"2026-11-28T00:13:57.123456789Z"


DEFAULT = TransformsConfig()


def chain(config=DEFAULT, labels=None):
    errors = []
    built = build_chain(
        config, labels or {}, 1 << 20, lambda: "web", lambda k, m: errors.append((k, m))
    )
    return built, errors


def test_no_transforms_is_no_chain():
    assert chain() == (None, [])


def test_labels_override_the_config():
    built, errors = chain(
        labels={
            "journald-bridge.multiline": "java",
            "journald-bridge.parse": "json",
            "journald-bridge.rate_limit": "100",
        }
    )
    assert built.multiline and built.json and built.rate_limit and not errors


def test_bad_label_values_are_reported_and_that_transform_is_off():
    built, errors = chain(
        labels={
            "journald-bridge.multiline_start": "(",
            "journald-bridge.multiline_continue": "x",
            "journald-bridge.rate_limit": "lots",
            "journald-bridge.parse": "json",
        }
    )
    assert built.multiline is None and built.rate_limit is None and built.json is not None
    assert [k for k, _ in errors] == ["multiline", "rate_limit"]


def test_order_multiline_then_json_then_rate_limit():
    built, _ = chain(
        TransformsConfig(multiline="python", parse_json=True, rate_limit_lines_per_second=1)
    )
    lines = [b'{"msg":"a","level":"error"}', b'{"msg":"b"}']
    out = built.process([Record(1, m, TS, (i, 1), (i, 1)) for i, m in enumerate(lines, 1)], now=0.0)
    assert [(r.message, r.priority, r.dropped) for r in out] == [
        (b"a", 3, None),
        (b"b", None, "rate_limited"),
    ]
    assert built.tick(100.0)[0].message == b"Suppressed 1 lines from container web"
