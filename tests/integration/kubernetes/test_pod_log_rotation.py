"""Exactly once through the kubelet's rotation, on a real containerd: rename, ReopenContainerLog,
gzip, MaxFiles deletions, a failed reopen renamed back; with the bridge killed or stopped
meanwhile."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from ..conftest import Bridge, Journald, wait_until
from .conftest import k8s_bridge
from .kubelet import Container, Kubelet

pytestmark = pytest.mark.integration

MAX_SIZE = 64 * 1024


def paced_seq(total: int, chunk: int = 1000, pause_us: int = 100_000) -> str:
    """`seq 1 total` in chunks with pauses: the log passes 64 KiB often, so the emulated
    kubelet (at most one rotation a second, like its names) rotates many times."""
    return (
        f"i=0; while [ $i -lt {total // chunk} ]; do "
        f"seq $((i*{chunk}+1)) $((i*{chunk}+{chunk})); i=$((i+1)); usleep {pause_us}; done"
    )


def assert_each_once(journald: Journald, c: Container, total: int, timeout: float = 120) -> None:
    # The last line through the journal's index (cheap), then every entry once.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journald.entries(CONTAINER_ID_FULL=c.id, MESSAGE=str(total)):
            break
        time.sleep(0.5)
    time.sleep(1)  # anything repeated would arrive by now
    numbers = [int(m) for m in journald.messages(c.id)]
    counts = Counter(numbers)
    missing = sorted(set(range(1, total + 1)) - set(counts))
    twice = sorted(n for n, k in counts.items() if k > 1)
    assert (missing, twice) == ([], []), (
        f"{len(numbers)} entries for {total} lines; missing {len(missing)}: {_ranges(missing)}; "
        f"repeated {len(twice)}: {_ranges(twice)}"
    )


def _ranges(numbers: list[int]) -> str:
    out: list[str] = []
    for n in numbers:
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out[:20])


@pytest.mark.parametrize("max_files", [2, 5])
def test_200000_lines_through_rotation_at_64_kib_each_once(
    bridge: Bridge, journald: Journald, kubelet: Kubelet, max_files: int
):
    k8s_bridge(bridge, kubelet).start()
    pod = kubelet.run_pod(f"seq-{max_files}", "load")
    c = kubelet.start(pod, "seq", paced_seq(200_000))
    kubelet.rotate_while_running(c, MAX_SIZE, max_files)
    kubelet.wait_exited(c, timeout=180)
    kubelet.stop_rotating()
    assert kubelet.rotations >= 10
    assert_each_once(journald, c, 200_000)
    assert bridge.metric("journald_bridge_rotation_gaps_total") == 0


def test_bridge_killed_during_rotation_then_stopped_across_two_rotations(
    bridge: Bridge, journald: Journald, kubelet: Kubelet
):
    # Rotations are the test's own here: the bridge is never down longer than the files last
    # (MaxFiles 5 keeps three rotated files; a longer outage is a counted gap by design).
    k8s_bridge(bridge, kubelet).start()
    pod = kubelet.run_pod("restarts", "load")
    c = kubelet.start(pod, "seq", paced_seq(60_000, chunk=500, pause_us=100_000))
    for _ in range(2):
        kubelet.rotate_now(c, 5)
    kubelet.rotate_now(c, 5, between=bridge.kill9)  # killed between the rename and the reopen
    bridge.start()
    kubelet.rotate_now(c, 5)
    bridge.stop()
    for _ in range(2):
        kubelet.rotate_now(c, 5)  # two rotations while stopped: catch up through the .gz
    bridge.start()
    kubelet.rotate_while_running(c, MAX_SIZE, 5)
    kubelet.wait_exited(c, timeout=180)
    kubelet.stop_rotating()
    assert any(name.endswith(".gz") for name in os.listdir(os.path.dirname(c.log_path)))
    assert_each_once(journald, c, 60_000)
    assert bridge.metric("journald_bridge_rotation_gaps_total") == 0


def test_a_failed_reopen_renamed_back_repeats_nothing(
    bridge: Bridge, journald: Journald, kubelet: Kubelet
):
    k8s_bridge(bridge, kubelet).start()
    pod = kubelet.run_pod("reopen", "load")
    c = kubelet.start(pod, "seq", "seq 1 1000; sleep 2; seq 1001 2000")
    wait_until(lambda: os.path.getsize(c.log_path) > 0, 30, "the first lines")
    kubelet.wait_exited(c)
    # The container exited: ReopenContainerLog fails ("not running") and the kubelet renames
    # the file back.
    assert kubelet.rotate(c, 5) is False and kubelet.failed_reopens == 1
    assert os.path.exists(c.log_path)
    assert_each_once(journald, c, 2000)
