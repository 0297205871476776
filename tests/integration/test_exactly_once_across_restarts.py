"""Nothing lost, nothing duplicated, across bridge, dockerd and journald trouble.

Every test compares the exact multiset of lines in the journal with what the containers wrote.
"""

from __future__ import annotations

import contextlib
import random
import time

import pytest

from tests.integration import dockerd
from tests.integration.conftest import (
    docker_logs,
    expected_keys,
    line_keys,
    wait_until,
    writer_script,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("each_source")]


def wait_complete(journald, container, expected, timeout=180):
    def done():
        counts = line_keys(journald.messages(container.id))
        return counts if sum(counts.values()) >= sum(expected.values()) else None

    with contextlib.suppress(AssertionError):  # the comparison below says what is missing
        wait_until(done, timeout, f"all lines of {container.name}", interval=1)
    time.sleep(1.5)  # anything duplicated late would show up now
    counts = line_keys(journald.messages(container.id))
    lost = [k for k in expected if k not in counts]
    duplicated = {k: n for k, n in counts.items() if n > 1}
    unexpected = [k for k in counts if k not in expected]
    assert (lost[:5], len(lost), duplicated, unexpected[:5]) == ([], 0, {}, [])
    return counts


@pytest.mark.engines("docker26:files")  # Podman: test_several_engines.py
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(bridge, journald, containers):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}")
    bridge.start()
    work = {f"k{n}": (20000 if n else 10000) for n in range(4)}  # k0 exits half-way
    started = {tag: containers.run(writer_script(tag, lines)) for tag, lines in work.items()}
    for _ in range(10):
        time.sleep(rng.uniform(0.2, 1.5))
        bridge.kill9()
        time.sleep(rng.uniform(0, 0.3))
        bridge.start(wait_ready=rng.random() < 0.5)
    for c in started.values():
        c.wait(timeout=300)
    totals = {}
    for tag, c in started.items():
        counts = wait_complete(journald, c, expected_keys(tag, work[tag]))
        totals[tag] = sum(counts.values())
    print(f"kill -9 x10: lines per container {totals}; 0 lost, 0 duplicated")
    assert sum(totals.values()) == 70000


def test_dockerd_restart_loses_and_duplicates_nothing_it_stored(
    bridge, journald, containers, docker_client
):
    bridge.start()
    # Each run of the container writes distinct lines (run number from a file that survives restarts).
    script = (
        "run=$(( $(cat /run.n 2>/dev/null || echo 0) + 1 )); echo $run > /run.n; "
        + writer_script("d$run", 6000, pace="0.1")
        + "; sleep 3600"
    )
    started = [containers.run(script, restart_policy={"Name": "always"}) for _ in range(2)]
    time.sleep(2)
    dockerd.restart()
    wait_until(
        lambda: all(c.reload() or c.status == "running" for c in started), 60, "containers back"
    )
    for c in started:
        wait_until(
            lambda c=c: b"d2-6000" in line_keys(journald.messages(c.id)),
            180,
            "the second run's last line",
            interval=1,
        )
    time.sleep(1.5)
    for c in started:
        stored = line_keys(docker_logs(c))
        journaled = line_keys(journald.messages(c.id))
        assert journaled == stored
        assert all(n == 1 for n in journaled.values())
        print(f"dockerd restart: {c.name}: {sum(journaled.values())} lines, each exactly once")
    assert bridge.metric("journald_bridge_docker_reconnects_total") >= 1


def test_journald_frozen_for_30s_holds_lines_in_bounded_memory(bridge, journald, containers):
    bound = 8 << 20
    bridge.configure(journal={"max_pending_bytes": bound})
    bridge.start()
    work = {"j0": 40000, "j1": 40000}
    started = {tag: containers.run(writer_script(tag, n, pace="0.05")) for tag, n in work.items()}
    time.sleep(3)
    rss_before = bridge.rss_bytes()
    journald.freeze()
    rss_max = pending_max = 0.0
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            rss_max = max(rss_max, bridge.rss_bytes())
            pending_max = max(pending_max, bridge.metric("journald_bridge_pending_bytes"))
            time.sleep(0.5)
    finally:
        journald.thaw()
    for tag, c in started.items():
        c.wait(timeout=300)
        wait_complete(journald, c, expected_keys(tag, work[tag]))
    print(
        f"journald frozen 30 s: RSS {rss_before / 2**20:.1f} -> max {rss_max / 2**20:.1f} MiB, pending max {pending_max / 2**20:.1f} MiB"
    )
    assert pending_max <= bound
    assert rss_max - rss_before < bound + (24 << 20)
    assert bridge.metric("journald_bridge_journal_backpressure_seconds_total") > 10


def test_lines_written_while_the_bridge_is_down_arrive_once_and_removed_containers_are_pruned(
    bridge, journald, containers
):
    bridge.start()
    script = (
        writer_script("{tag}", 100, pace_every=1000)
        + "; sleep 4; "
        + writer_script("{tag}b", 100, pace_every=1000)
    )
    started = {tag: containers.run(script.replace("{tag}", tag)) for tag in ("s0", "s1", "s2")}
    for c in started.values():
        journald.wait_messages(c.id, 100)
    assert bridge.stop() == 0
    assert set(bridge.state()["engines"]["docker"]) >= {c.id for c in started.values()}
    for c in started.values():
        c.wait(timeout=60)
    removed = started.pop("s2")
    removed.remove()
    bridge.start()
    for tag, c in started.items():
        wait_complete(journald, c, {**expected_keys(tag, 100), **expected_keys(f"{tag}b", 100)})
    wait_until(
        lambda: removed.id not in bridge.state()["engines"]["docker"],
        10,
        "the removed container's pruning",
    )
    assert {c.id for c in started.values()} <= set(bridge.state()["engines"]["docker"])


@pytest.mark.parametrize(
    ("backlog", "expected"),
    [
        ("none", [b"late-1", b"late-2"]),
        ("all", [b"early-1", b"early-2", b"early-3", b"late-1", b"late-2"]),
        ("2", [b"early-2", b"early-3", b"late-1", b"late-2"]),
    ],
)
def test_backlog_of_containers_that_existed_before_the_first_run(
    bridge, journald, containers, backlog, expected
):
    bridge.configure(forward={"backlog": backlog})
    c = containers.run(
        "echo early-1; echo early-2; echo early-3; sleep 4; echo late-1; echo late-2; sleep 30"
    )
    wait_until(lambda: len(docker_logs(c)) == 3, 10, "the early lines")
    bridge.start()
    journald.wait_messages(c.id, len(expected), timeout=30)
    time.sleep(1)
    assert journald.messages(c.id) == expected
    # A container created after the first run is forwarded from its first line, whatever the backlog.
    assert bridge.stop() == 0
    later = containers.run("echo first; echo second")
    later.wait(timeout=30)
    bridge.start()
    assert journald.wait_messages(later.id, 2) == [b"first", b"second"]


def test_sigterm_writes_what_was_read_and_exits_0(bridge, journald, containers):
    bridge.start()
    c = containers.run(writer_script("t", 5000, pace_every=5000))
    time.sleep(0.5)
    assert bridge.stop() == 0
    assert "stopped;" in bridge.log()
    c.wait(timeout=60)
    bridge.start()
    wait_complete(journald, c, expected_keys("t", 5000))


def test_lines_rotated_away_while_the_bridge_was_down_are_reported_not_hidden(
    bridge, journald, containers
):
    bridge.start()
    c = containers.run(
        "echo first; sleep 3; "
        + writer_script("r", 5000, pace_every=5000, long_every=10**9)
        + "; sleep 30",
        log_config={"type": "json-file", "config": {"max-size": "20k", "max-file": "2"}},
    )
    assert journald.wait_messages(c.id, 1) == [b"first"]
    assert bridge.stop() == 0
    time.sleep(5)  # 5000 lines through two 20 kB files: most are rotated away
    bridge.start()
    wait_until(
        lambda: bridge.metric("journald_bridge_rotation_gaps_total") == 1,
        30,
        "the gap to be counted",
    )
    assert bridge.log().count("log rotation removed lines") == 1
    keys = line_keys([e["MESSAGE"] for e in journald.wait_for_line(c.id, b"r-5000")])
    assert all(n == 1 for n in keys.values())
    assert sum(keys.values()) < 5001  # some lines are gone for good; the bridge said so


def test_journald_restarted_under_load_duplicates_nothing(bridge, journald, containers):
    """A standalone journald owns its socket: datagrams queued in it when it stops are lost with
    it (on a systemd host PID 1 holds the socket and they survive). That is the one case the
    bridge cannot cover; everything else arrives exactly once."""
    bridge.start()
    work = {"x0": 20000, "x1": 20000}
    started = {
        tag: containers.run(writer_script(tag, n, pace="0.05", long_every=10**9))
        for tag, n in work.items()
    }
    time.sleep(3)
    journald.stop()
    time.sleep(10)
    assert bridge.get("/readyz")[0] == 503
    journald.start()
    for c in started.values():
        c.wait(timeout=300)
    time.sleep(3)
    for tag, c in started.items():
        journald.wait_for_line(c.id, f"{tag}-{work[tag]}".encode(), timeout=120)
        counts = line_keys(journald.messages(c.id))
        lost = sum(1 for k in expected_keys(tag, work[tag]) if k not in counts)
        assert all(n == 1 for n in counts.values())
        print(
            f"journald restart: {tag}: {sum(counts.values())} lines once each, {lost} lost in journald's queue"
        )
        assert lost <= 512  # at most one socket queue (net.unix.max_dgram_qlen)
    assert "journal socket" in bridge.log() and "is back" in bridge.log()
