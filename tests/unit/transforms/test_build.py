from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bridge.transforms.build as build_module
from bridge.config import TransformsConfig
from bridge.transforms.multiline import PRESETS

from .support import build, label, rec

LIMITED = TransformsConfig(rate_limit_lines_per_second=100)
OPTIONS = TransformsConfig().label_overrides
HOSTILE = [
    "inf", "-inf", "nan", "1e999", "1e3", "-1", "0", "0.0", "", " ", "\uff11\uff10\uff10", "\u0661\u0660\u0660", "²",
    "9" * 5000, "99999999999999999999", "0x10", "1_000", "10\n", "\ud800", "lots", "none",
    "custom", "json", "all", "(", "^(a|a)+$", "(?=x)", "(a)\\1", "a{99999999999999999999}",
    "(?:" * 300 + "a" + ")" * 300, "[" * 600, "x" * 2000,
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    labels=st.dictionaries(
        st.one_of(
            st.sampled_from([f"journald-bridge.{o}" for o in (*OPTIONS, "enable", "")]),
            st.text(max_size=30),
        ),
        st.one_of(
            st.sampled_from(HOSTILE),
            st.text(st.characters(exclude_categories=()), max_size=40),
        ),
        max_size=8,
    ),
    config=st.sampled_from(
        [
            TransformsConfig(),
            LIMITED,
            TransformsConfig(multiline="java", parse_json=True, rate_limit_lines_per_second=0.5),
            TransformsConfig(label_overrides=("parse",)),
        ]
    ),
)
def test_no_labels_make_build_chain_or_the_chain_raise(labels, config):
    chain, errors, _ = build(config, labels)
    assert all(k in OPTIONS and "\n" not in m and len(m) < 400 for k, m in errors)
    assert len({k for k, _ in errors}) == len(errors)  # once each
    if chain is not None:
        out = chain.process([rec(b"a" * 30 + b"!", 1), rec(b"\xff{", 2)], now=0.0)
        out += chain.tick(1000.0, final=True)
        positions = [r.last for r in out]  # every line accounted for, in order
        assert positions == sorted(positions) and positions[-1] == (2, 1)


@pytest.mark.parametrize("value", HOSTILE[:17])
@pytest.mark.parametrize("option", ["rate_limit", "rate_limit_burst"])
def test_a_bad_rate_limit_label_is_reported_and_the_operators_limit_applies(option, value):
    chain, errors, _ = build(LIMITED, label(**{option: value}))
    assert [k for k, _ in errors] == [option]
    limiter = chain.rate_limit
    assert (limiter.lines_per_second, limiter.burst) == (100, 100)


@pytest.mark.parametrize("value", ["inf", "nan", "1e999", "0", "-1", ""])
def test_a_bad_rate_limit_label_without_an_operator_limit_is_no_limit(value):
    chain, errors, _ = build(labels=label(rate_limit=value))
    assert chain is None and [k for k, _ in errors] == ["rate_limit"]


def test_a_label_may_only_lower_the_operators_rate_limit():
    chain, errors, _ = build(LIMITED, label(rate_limit="1000", rate_limit_burst="500"))
    assert (chain.rate_limit.lines_per_second, chain.rate_limit.burst) == (100, 100)
    assert [k for k, _ in errors] == ["rate_limit", "rate_limit_burst"]
    chain, errors, _ = build(LIMITED, label(rate_limit="2.5", rate_limit_burst="50"))
    assert (chain.rate_limit.lines_per_second, chain.rate_limit.burst, errors) == (2.5, 50, [])
    chain, errors, _ = build(LIMITED, label(rate_limit="10"))  # burst: one second's worth
    assert (chain.rate_limit.lines_per_second, chain.rate_limit.burst, errors) == (10, 10, [])


def test_without_an_operator_limit_a_label_may_set_one():
    chain, errors, _ = build(labels=label(rate_limit="1000", rate_limit_burst="5000"))
    assert (chain.rate_limit.lines_per_second, chain.rate_limit.burst, errors) == (1000, 5000, [])


def test_labels_for_options_the_operator_does_not_allow_are_reported_and_ignored():
    config = TransformsConfig(rate_limit_lines_per_second=5, label_overrides=("parse",))
    labels = label(rate_limit="1", multiline="python", parse="json", enable="true", other="x")
    chain, errors, _ = build(config, labels)
    assert (
        chain.multiline is None
        and chain.json is not None
        and chain.rate_limit.lines_per_second == 5
    )
    assert sorted(k for k, _ in errors) == ["multiline", "rate_limit"]


@pytest.mark.parametrize(
    "pattern",
    [
        "(?:" * 2000 + "a" + ")" * 2000,  # RecursionError in re
        "a{99999999999999999999}",  # OverflowError in re
        "a{4294967295}",
        "(" * 200 + ")" * 200,
        "(?=lookahead)",  # fine in re, not in RE2: the label never reaches re
        "(a)\\1",
        "(?:.*a.{20}x){8}",  # over the program-size cap
        "\ud800",
        "x" * 1025,
    ],
)
def test_label_patterns_are_refused_or_bounded_never_raised(pattern):
    """r23: label regexes that raise other than re.error at compile time."""
    chain, errors, _ = build(labels=label(multiline_start=pattern, multiline_continue="^x"))
    if chain is None or chain.multiline is None:
        assert [k for k, _ in errors] == ["multiline"]
        assert "\n" not in errors[0][1] and len(errors[0][1]) < 400
    else:
        assert errors == []


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_presets_as_label_patterns_work(preset):
    start, continuation = PRESETS[preset]
    chain, errors, _ = build(labels=label(multiline_start=start, multiline_continue=continuation))
    assert chain.multiline is not None and errors == []


@pytest.mark.parametrize("option", ["multiline", "parse", "detect_priority"])
@pytest.mark.parametrize("value", ["", "Python\n", "\ud800", "x" * 100_000])
def test_a_bad_mode_label_is_reported_once(option, value):
    config = TransformsConfig(multiline="java", parse_json=True, detect_level_words=True)
    chain, errors, _ = build(config, label(**{option: value}))
    assert [k for k, _ in errors] == [option]
    # multiline is off; parse and detect_priority stay as the operator set them
    assert chain.multiline is None if option == "multiline" else chain.multiline is not None
    assert chain.json is not None and chain.priority is not None


def test_custom_label_patterns_need_both():
    chain, errors, _ = build(labels=label(multiline_continue="^x"))
    assert chain is None and [k for k, _ in errors] == ["multiline"]


def test_the_operators_custom_patterns_are_used_by_a_custom_label():
    config = TransformsConfig(multiline_start="^(?=S)", multiline_continue="^ ")  # re only
    chain, errors, _ = build(config, label(multiline="custom"))
    assert chain.multiline is not None and errors == []
    chain.process([rec(b"Start", 1), rec(b" more", 2)], now=0.0)
    assert chain.tick(0.0, final=True)[0].message == b"Start\n more"


def test_max_lines_comes_from_the_config():
    chain, _, _ = build(TransformsConfig(multiline_max_lines=3), label(multiline="python"))
    lines = [b"Traceback (most recent call last):", b"  a", b"  b", b"  c"]
    out = chain.process([rec(m, i) for i, m in enumerate(lines)], now=0.0)
    out += chain.tick(0.0, final=True)
    assert [r.message for r in out] == [b"\n".join(lines[:3]), b"  c"]
    assert out[1].extra_fields == ((b"CONTAINER_MULTILINE_PART", b"2"),)


def test_an_unexpected_error_while_building_is_reported_not_raised(monkeypatch):
    def broken(*args):
        raise RuntimeError("bug")

    monkeypatch.setattr(build_module, "_json", broken)
    monkeypatch.setattr(build_module, "_priority", broken)
    chain, errors, _ = build(LIMITED, label(parse="json", detect_priority="all"))
    assert chain.json is None and chain.priority is None and chain.rate_limit is not None
    assert [k for k, _ in errors] == ["parse", "detect_priority"]


def test_the_operators_rate_limit_survives_an_error_in_the_labels(monkeypatch):
    class Hostile(dict):
        def get(self, key, default=None):
            if key.endswith("rate_limit"):
                raise RuntimeError("bug")
            return super().get(key, default)

    chain, errors, _ = build(LIMITED, Hostile(label(rate_limit="1")))
    assert chain.rate_limit.lines_per_second == 100 and [k for k, _ in errors] == ["rate_limit"]


def test_a_huge_label_value_is_quoted_short_in_the_report():
    _, errors, _ = build(labels=label(parse="x\n" * (1 << 20)))
    ((_, message),) = errors
    assert "\n" not in message and len(message) < 200
