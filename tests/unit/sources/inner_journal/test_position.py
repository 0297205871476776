from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.sources.inner_journal.position import (
    CursorParts,
    Gap,
    InnerPosition,
    ResumeFilter,
    compare,
    later,
    parse_cursor,
    resume,
    resume_position,
)

S1 = "699699a162ff478aae8f7278f2247e1c"
S2 = "e8bf23a78ef542e69da7c2d3630e8e8d"
B1 = "23c38030e34c43a2966f07e9586574dd"
B2 = "0123456789abcdef0123456789abcdef"
MID = "6504787f5ea3415483cafb9ed0d18600"


def cursor(s: str = S1, i: int = 1, b: str = B1, m: int = 100, t: int = 1000, x: int = 7) -> str:
    return f"s={s};i={i:x};b={b};m={m:x};t={t:x};x={x:x}"


def test_parse_a_real_cursor() -> None:
    parts = parse_cursor(
        "s=699699a162ff478aae8f7278f2247e1c;i=33;b=23c38030e34c43a2966f07e9586574dd;"
        "m=adcf9e08;t=661a2411af43b;x=8b435a543bd1bb1b"
    )
    assert parts == CursorParts(S1, 0x33, B1, 0xADCF9E08, 0x661A2411AF43B, 0x8B435A543BD1BB1B)


ids = st.text("0123456789abcdef", min_size=32, max_size=32)
u64 = st.integers(0, 2**64 - 1)


@given(ids, u64, ids, u64, u64, u64)
def test_cursors_round_trip(s, i, b, m, t, x) -> None:
    assert parse_cursor(cursor(s, i, b, m, t, x)) == CursorParts(s, i, b, m, t, x)


@given(st.text(max_size=300))
def test_garbage_is_a_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        parse_cursor(text)


@pytest.mark.parametrize(
    "text",
    ["", "s=x", cursor() + ";i=2", cursor().replace("i=1", "i=-1"), cursor() + ";" + "q=1" * 200],
)
def test_bad_cursors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cursor(text)


def test_positions_round_trip_and_refuse_garbage() -> None:
    pos = InnerPosition(cursor(), MID, drained=True)
    assert InnerPosition.from_json(pos.to_json()) == pos
    assert InnerPosition.from_json({"cursor": cursor()}) == InnerPosition(cursor())
    assert pos.boot_id == B1
    for bad in (
        None,
        [],
        {"cursor": 1},
        {"cursor": "x"},
        {"cursor": cursor(), "machine_id": "zz"},
        {"cursor": cursor(), "drained": "yes"},
    ):
        with pytest.raises(ValueError):
            InnerPosition.from_json(bad)


def test_compare_is_sd_journals_order() -> None:
    saved = parse_cursor(cursor(i=10, m=100, t=1000))
    assert compare(parse_cursor(cursor(i=11, m=1, t=1)), saved) > 0  # seqnum first
    assert compare(parse_cursor(cursor(i=9, m=999, t=9999)), saved) < 0
    other_seqnum_id = parse_cursor(cursor(s=S2, i=1, m=101, t=1))
    assert compare(other_seqnum_id, saved) > 0  # then monotonic, same boot
    other_boot = parse_cursor(cursor(s=S2, i=1, b=B2, m=1, t=1001))
    assert compare(other_boot, saved) > 0  # then realtime
    copy = parse_cursor(cursor(s=S2, i=99, m=100, t=1000))
    assert compare(copy, saved) == 0  # journald's flush to /var: same entry, new seqnum id


def test_without_a_position_everything_from_the_floor() -> None:
    f = ResumeFilter(None, floor_realtime_us=1000)
    assert not f.admit(cursor(t=999))
    assert f.admit(cursor(t=1000))
    assert f.gap is None


def test_vacuumed_entries_are_a_counted_gap() -> None:
    saved = InnerPosition(cursor(i=10, m=100, t=1000), MID)
    f = ResumeFilter(saved)
    assert f.admit(cursor(i=15, m=150, t=1500))
    assert f.gap == Gap("vacuumed", 4, saved, cursor(i=15, m=150, t=1500))
    assert f.admit(cursor(i=16, m=160, t=1600))


def test_no_gap_when_the_next_entry_follows() -> None:
    f = ResumeFilter(InnerPosition(cursor(i=10)))
    assert not f.admit(cursor(i=9, m=90))
    assert f.admit(cursor(i=11, m=110))
    assert f.gap is None


def test_a_new_journal_is_a_reset_unless_drained() -> None:
    saved = InnerPosition(cursor(i=10, m=100, t=1000))
    f = ResumeFilter(saved)
    new = cursor(s=S2, i=1, b=B2, m=5, t=2000)  # tmpfs that started empty, new boot
    assert f.admit(new)
    assert f.gap == Gap("reset", None, saved, new)
    drained = ResumeFilter(InnerPosition(saved.cursor, drained=True))
    assert drained.admit(new)
    assert drained.gap is None


def test_a_flushed_copy_is_the_saved_entry() -> None:
    """/run flushed to /var: the copies of entries up to the saved one are not sent again."""
    f = ResumeFilter(InnerPosition(cursor(s=S2, i=36, m=200, t=2000)))
    assert not f.admit(cursor(s=S1, i=35, m=100, t=1000))
    assert not f.admit(cursor(s=S1, i=36, m=200, t=2000))  # the copy
    assert f.admit(cursor(s=S1, i=37, m=300, t=3000))
    assert f.gap is None


class FakeJournal:
    """Entries by cursor; seek_cursor lands on the first entry not before it, like sd-journal."""

    def __init__(self, cursors: list[str]) -> None:
        self.cursors = cursors
        self.index = -1
        self.seeked = ""

    def seek_cursor(self, cursor: str) -> None:
        target = parse_cursor(cursor)
        self.index = next(
            (i - 1 for i, c in enumerate(self.cursors) if compare(parse_cursor(c), target) >= 0),
            len(self.cursors) - 1,
        )
        self.seeked = "cursor"

    def seek_head(self) -> None:
        self.index = -1
        self.seeked = "head"

    def _next(self, skip: int = 1) -> int:
        if self.index + 1 >= len(self.cursors):
            return 0
        self.index += 1
        return 1

    def test_cursor(self, cursor: str) -> bool:
        return self.cursors[self.index] == cursor

    def rest(self) -> list[str]:
        out = []
        while self._next():
            out.append(self.cursors[self.index])
        return out


def test_resume_after_a_cursor_that_is_there() -> None:
    entries = [cursor(i=i, m=i, t=i) for i in range(1, 6)]
    journal = FakeJournal(entries)
    assert resume(journal, InnerPosition(entries[1])) is None
    assert journal.rest() == entries[2:]


def test_resume_from_the_head_when_the_cursor_is_gone() -> None:
    entries = [cursor(i=i, m=i, t=i) for i in range(5, 9)]
    journal = FakeJournal(entries)
    f = resume(journal, InnerPosition(cursor(i=2, m=2, t=2)))
    assert f is not None and journal.seeked == "head"
    assert [c for c in journal.rest() if f.admit(c)] == entries
    assert f.gap is not None and f.gap.lost == 2


def test_resume_without_a_position_reads_from_the_head() -> None:
    entries = [cursor(i=i, m=i, t=i) for i in range(1, 4)]
    journal = FakeJournal(entries)
    f = resume(journal, None, floor_realtime_us=2)
    assert f is not None
    assert [c for c in journal.rest() if f.admit(c)] == entries[1:]


@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=30, unique=True),
    st.integers(1, 40),
)
def test_after_a_cursor_nothing_repeats_and_the_gap_is_exact(kept, saved_seqnum) -> None:
    """Whatever survived vacuuming, the entries admitted are exactly those after the saved one."""
    kept = sorted(kept)
    entries = [cursor(i=i, m=i * 10, t=i * 100) for i in kept]
    saved = InnerPosition(cursor(i=saved_seqnum, m=saved_seqnum * 10, t=saved_seqnum * 100))
    journal = FakeJournal(entries)
    f = resume(journal, saved)
    admitted = journal.rest() if f is None else [c for c in journal.rest() if f.admit(c)]
    assert admitted == [c for i, c in zip(kept, entries, strict=True) if i > saved_seqnum]
    later = [i for i in kept if i > saved_seqnum]
    # when the saved entry is still there, the seek lands on it and nothing is a gap
    expected_lost = later[0] - saved_seqnum - 1 if later and saved_seqnum not in kept else 0
    lost = f.gap.lost if f is not None and f.gap is not None else 0
    assert lost == expected_lost


def test_later_takes_the_position_further_on_and_a_drained_one_of_the_same_entry() -> None:
    a = InnerPosition(cursor(i=3, m=30, t=300))
    b = InnerPosition(cursor(i=5, m=50, t=500))
    assert later(a, b) == later(b, a) == b
    assert later(None, a) == later(a, None) == a
    assert later(None, None) is None
    drained = InnerPosition(a.cursor, drained=True)
    assert later(a, drained) == later(drained, a) == drained


def _pos(i: int, drained: bool = False) -> InnerPosition:
    return InnerPosition(cursor(i=i, m=i, t=1000 + i, x=i), drained=drained)


def test_resume_takes_the_later_of_the_state_file_and_the_journal(caplog):
    assert resume_position(None, None) is None
    assert resume_position(_pos(3).to_json(), None) == _pos(3)
    assert resume_position(_pos(3).to_json(), _pos(5).to_json()) == _pos(5)
    assert resume_position(_pos(7).to_json(), _pos(5).to_json()) == _pos(7)
    drained = _pos(5, drained=True).to_json()
    assert resume_position(drained, _pos(5).to_json()) == _pos(5, drained=True)
    assert resume_position({"cursor": "garbage"}, _pos(5).to_json()) == _pos(5)
    assert "unusable inner journal position from the state file" in caplog.text
