"""The journal header check the bridge makes before it starts a worker: pure, split points."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.sources.inner_journal import header

from .journals import entry, needs_journal_remote, write


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A journal file journal-remote wrote (the same code as journald's)."""
    path = write(tmp_path_factory.mktemp("h") / "system.journal", [entry(1), entry(2)])
    return path.read_bytes()


@needs_journal_remote
def test_a_real_journal_passes(real: bytes) -> None:
    assert header.problem(real[: header.HEADER_READ], len(real)) is None


def test_a_small_file_named_like_a_journal_fails() -> None:
    assert header.problem(b"not a journal", 13) == "shorter than a journal header"
    assert header.problem(bytes(4096)[:256], 4096) == "not a journal file"


@needs_journal_remote
def test_every_cut_of_a_real_journal_inside_its_arena_fails(real: bytes) -> None:
    head = real[: header.HEADER_READ]
    arena_end = int.from_bytes(real[88:96], "little") + int.from_bytes(real[96:104], "little")
    for size in [*range(0, 300), arena_end - 1]:  # a file cut short, as by a copy or a crash
        assert header.problem(head[:size], size) is not None, size


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=1 << 40))
def test_any_bytes_are_judged_without_raising(head: bytes, size: int) -> None:
    verdict = header.problem(head, size)
    assert verdict is None or isinstance(verdict, str)


@given(st.integers(min_value=0, max_value=255), st.integers(min_value=0, max_value=7))
def test_any_change_of_the_signature_fails(value: int, at: int) -> None:
    head = bytearray(b"LPKSHHRH" + bytes(80) + (208).to_bytes(8, "little") + bytes(8))
    head = head.ljust(header.HEADER_READ, b"\0")
    assert header.problem(bytes(head), 4096) is None
    if head[at] != value:
        head[at] = value
        assert header.problem(bytes(head), 4096) == "not a journal file"


@given(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1))
def test_sizes_the_file_cannot_hold_fail(header_size: int, arena_size: int) -> None:
    head = b"LPKSHHRH" + bytes(80) + header_size.to_bytes(8, "little")
    head += arena_size.to_bytes(8, "little")
    head = head.ljust(header.HEADER_READ, b"\0")
    size = 1 << 20
    verdict = header.problem(head, size)
    sound = header_size >= 208 and header_size % 8 == 0 and header_size + arena_size <= size
    assert (verdict is None) == sound
