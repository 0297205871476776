"""The opener's real-time budget: a share of a CPU per window, then the normal policy."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.sources.logfiles.realtime import Budget


def test_a_flood_past_the_share_leaves_real_time_until_a_window_is_quiet() -> None:
    budget = Budget(share=0.2)
    assert budget.window(0.05, 1.0) is None  # within the share: stays in real time
    assert budget.window(0.3, 1.0) is False  # a container rotating its log flat out
    assert budget.window(0.3, 1.0) is None  # still flooding: stays normal
    assert budget.window(0.15, 1.0) is None  # under the share, not under half of it
    assert budget.window(0.05, 1.0) is True  # quiet again: real time
    assert (budget.realtime, budget.demotions) == (True, 1)


def test_a_window_of_no_length_changes_nothing() -> None:
    assert Budget().window(0.5, 0.0) is None


@given(st.lists(st.tuples(st.floats(0, 2), st.floats(0.01, 5)), max_size=50))
def test_switches_alternate_and_match_the_state(windows: list[tuple[float, float]]) -> None:
    budget = Budget()
    state = True
    for cpu, seconds in windows:
        switch = budget.window(cpu, seconds)
        if switch is not None:
            assert switch is not state  # a switch always changes the policy
            state = switch
        assert budget.realtime is state
