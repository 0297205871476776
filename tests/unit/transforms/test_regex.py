from __future__ import annotations

import random
import time

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bridge.transforms.multiline import PRESETS
from bridge.transforms.regex import (
    MATCH_PREFIX_BYTES,
    PatternRefused,
    compile_trusted,
    compile_untrusted,
)


def test_catastrophic_backtracking_patterns_run_in_linear_time():
    match = compile_untrusted("^(a|a)+$")
    started = time.perf_counter()
    assert not match(b"a" * 27 + b"!")
    assert match(b"a" * 27)
    assert time.perf_counter() - started < 0.01


@pytest.mark.parametrize(
    "pattern",
    [
        "^[ab]*a[ab]{20}$",  # DFA state blow-up
        "^((?:a|b)*a(?:a|b){15}){8}$",
        "(?:.*[0-4].{12}[5-9].{12}){4}$",
        "^(?:[\\x00-\\xff]*[\\x00-\\x7f][\\x00-\\xff]{30}){4}$",
    ],
)
def test_the_worst_patterns_under_the_caps_stay_around_a_millisecond(pattern):
    """RE2 falls back to its NFA when the DFA's memory runs out: bounded by the caps."""
    match = compile_untrusted(pattern)
    rng = random.Random(1)
    alphabets = [bytes(range(256)), b"ab" * 128, b"0123456789abcdef" * 16]
    lines = [rng.randbytes(1 << 20).translate(alphabet) for alphabet in alphabets]
    started = time.perf_counter()
    for line in lines:
        match(line)
    assert (time.perf_counter() - started) / len(lines) < 0.05


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(?=x)", "not a valid RE2 expression: invalid perl operator"),
        ("(a)\\1", "not a valid RE2 expression: invalid escape sequence"),
        ("\\Z", "not a valid RE2 expression"),
        ("(", "not a valid RE2 expression: missing )"),
        ("(?:.*a.{20}x){8}", "too complex"),
        ("(?:a{1000}){1000}", "not a valid RE2 expression"),
        ("x" * 1025, "longer than 1024 characters"),
        ("\ud800", "cannot be compiled (UnicodeEncodeError)"),
    ],
)
def test_refused_patterns_say_why_on_one_line(pattern, reason):
    with pytest.raises(PatternRefused) as refused:
        compile_untrusted(pattern)
    assert reason in str(refused.value) and "\n" not in str(refused.value)


def test_a_line_is_matched_on_its_first_bytes_only():
    ends_with_x = compile_untrusted("^[^!]*x$")
    assert ends_with_x(b"a" * (MATCH_PREFIX_BYTES - 1) + b"x" + b"!" * 100)
    assert not ends_with_x(b"a" * 10 + b"x!")


def test_bytes_are_matched_as_they_are_like_re_on_bytes():
    accent = compile_untrusted("^café")
    assert accent("café au lait".encode()) and not accent(b"cafe")
    assert compile_untrusted("^.x")(b"\xffx") and compile_trusted("^.x")(b"\xffx")


@given(st.binary(max_size=300))
def test_any_line_is_matched_without_raising_and_as_re_does(line):
    # The two known differences: \s takes \v in re only, and re's $ also matches before a
    # final line break (Docker strips line breaks).
    assume(b"\x0b" not in line and not line.endswith(b"\n"))
    for start, continuation in PRESETS.values():
        for pattern in (start, continuation):
            assert bool(compile_untrusted(pattern)(line)) == bool(compile_trusted(pattern)(line))
