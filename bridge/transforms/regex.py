"""Multiline patterns: the operator's through Python's `re`, a container's through RE2.

A pattern from a label is hostile input. Python's `re` backtracks, so `^(a|a)+$` takes seconds
on a 27-byte line while holding the GIL; RE2 (google-re2) runs in time linear in the text. Linear
is not cheap enough on its own: when RE2's DFA runs out of its memory budget it falls back to
simulating the NFA, whose cost per byte grows with the program size (measured: 3 s for one 1 MiB
line with a 1,250-instruction program). So a container's pattern is also bounded:

- at most MAX_PATTERN_CHARS characters and MAX_PROGRAM_SIZE RE2 instructions (the presets
  compile to at most 136), with MAX_MEM bytes of RE2 memory (compiled program and DFA cache);
- matched against the first MATCH_PREFIX_BYTES bytes of a line only: a multiline pattern decides
  from how a line starts, and a longer line is seen as if it ended there (`$` matches there).

Together that bounds one match to about a millisecond in the worst case measured (adversarial
patterns under the caps, random text), and RE2 memory per pattern to MAX_MEM. Patterns are
compiled on bytes in Latin-1 mode, so a pattern's UTF-8 bytes match a line's bytes as they are,
as Python's `re` does on bytes. Anything RE2 rejects, or that fails to compile for any other
reason, is refused with a one-line reason (`PatternRefused`); nothing here raises anything else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import re2

# Truthy when a line matches the pattern at its start (re's `Pattern.match` is one).
Matcher = Callable[[bytes], object]

MAX_PATTERN_CHARS: Final = 1024
MAX_PROGRAM_SIZE: Final = 256
MAX_MEM: Final = 64 << 10
MATCH_PREFIX_BYTES: Final = 1024


class PatternRefused(Exception):
    """A container's pattern that will not be used; str() is the one-line reason."""


def compile_trusted(pattern: str) -> Matcher:
    """The operator's pattern, with `re` on bytes (validated when the config was loaded)."""
    return re.compile(pattern.encode()).match


def compile_untrusted(pattern: str) -> Matcher:
    """A container's pattern through RE2, bounded as the module docstring says."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternRefused(f"is longer than {MAX_PATTERN_CHARS} characters")
    try:
        compiled = _re2_compile(pattern.encode())
    except re2.error as exc:
        raise PatternRefused(f"is not a valid RE2 expression: {_reason(exc)}") from None
    except Exception as exc:  # RecursionError, MemoryError, UnicodeEncodeError, ...
        raise PatternRefused(f"cannot be compiled ({type(exc).__name__})") from None
    size = int(compiled.programsize)
    if size > MAX_PROGRAM_SIZE:
        raise PatternRefused(
            f"is too complex ({size} RE2 instructions, at most {MAX_PROGRAM_SIZE})"
        )
    match = compiled.match

    def matches(line: bytes) -> bool:
        return match(line[:MATCH_PREFIX_BYTES]) is not None

    return matches


def _re2_compile(pattern: bytes) -> Any:  # re2 has no type hints
    options = re2.Options()
    options.max_mem = MAX_MEM
    options.encoding = re2.Options.Encoding.LATIN1
    options.never_capture = True  # only whether it matches counts: RE2 can skip submatches
    options.log_errors = False  # RE2 would write every rejected pattern to stderr
    try:
        return re2.compile(pattern, options)
    finally:
        # re2.compile keeps the last 128 patterns alive in a module-wide cache, each up to
        # MAX_MEM; each container's merger holds its own, so the cache only holds memory.
        re2.purge()


def _reason(exc: BaseException) -> str:
    reason = exc.args[0] if exc.args else ""
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    text = " ".join(str(reason).split())  # one line, whatever the pattern held
    return text[:200]
