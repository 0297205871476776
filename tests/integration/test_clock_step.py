"""The host's wall clock stepped back while containers write: nothing lost, nothing repeated.

dockerd stamps every line with the wall clock, so a step back (NTP or chrony, a VM resumed from
a snapshot, `date -s`) makes a stream's timestamps go back. The test steps the real clock back
a few seconds while a container writes, kills the bridge with SIGKILL inside the step's window
(the journal's last entry is then stamped later than the lines still to come), starts it again,
steps the clock forward by as much, and compares the journal with what the container wrote.

It changes the host's clock, which every process on the machine sees: the step is small, and
the clock is always stepped forward again (in a `finally`), by the same amount.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import expected_keys, line_keys, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("each_source")]

STEP_SECONDS = 5
LINES = 360  # about 12 s at the pace below: the step and the restart fall in the middle


@contextlib.contextmanager
def clock_stepped_back(seconds: int) -> Iterator[None]:
    """The wall clock `seconds` behind until the block ends, then stepped forward again."""
    time.clock_settime(time.CLOCK_REALTIME, time.clock_gettime(time.CLOCK_REALTIME) - seconds)
    try:
        yield
    finally:
        time.clock_settime(time.CLOCK_REALTIME, time.clock_gettime(time.CLOCK_REALTIME) + seconds)


def window_entries(journald, container_id: str) -> int:
    """Entries the bridge wrote inside a step's window (their cursor field has five parts)."""
    return sum(
        1
        for e in journald.entries(CONTAINER_ID_FULL=container_id)
        if str(e.get("JOURNALD_BRIDGE_CURSOR", "")).count(":") == 4
    )


def test_a_clock_step_back_and_a_kill_9_inside_its_window_lose_and_repeat_nothing(
    bridge, journald, containers
):
    bridge.start()
    started = time.monotonic()
    script = (
        f"i=1; while [ $i -le {LINES} ]; do "
        'if [ $((i % 7)) -eq 0 ]; then echo "clk-$i" >&2; else echo "clk-$i"; fi; '
        "i=$((i + 1)); sleep 0.03; done"
    )
    c = containers.run(script)
    wait_until(lambda: len(journald.messages(c.id)) >= 60, 30, "the first lines")
    with clock_stepped_back(STEP_SECONDS):
        stepped_at = time.monotonic()
        time.sleep(1.0)
        in_window_at_kill = window_entries(journald, c.id)
        bridge.kill9()
        time.sleep(0.5)  # the container writes on while no bridge reads
        bridge.start()
        restarted_after = time.monotonic() - stepped_at
        time.sleep(max(0.0, 3.5 - restarted_after))
    c.wait(timeout=60)
    expected = expected_keys("clk", LINES)
    with contextlib.suppress(AssertionError):  # the comparison below says what is missing
        wait_until(
            lambda: sum(line_keys(journald.messages(c.id)).values()) >= LINES, 15, "every line"
        )
    time.sleep(1)  # a repeated line would show now
    counts = line_keys(journald.messages(c.id))
    lost = [k for k in expected if k not in counts]
    repeated = {k: n for k, n in counts.items() if n > 1}
    assert (lost[:5], len(lost), repeated) == ([], 0, {})
    assert in_window_at_kill > 0, "the kill must fall inside the window: entries stamped lower"
    assert restarted_after < STEP_SECONDS, "the restart must fall inside the window too"
    assert bridge.log().count("stepped back by") >= 1
    print(
        f"clock stepped back {STEP_SECONDS} s; SIGKILL 1.0 s into the window with "
        f"{in_window_at_kill} of its entries in the journal; ready again {restarted_after:.1f} s "
        f"into it; {LINES} lines: 0 lost, 0 repeated; {time.monotonic() - started:.0f} s"
    )
