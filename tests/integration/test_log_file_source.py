"""The engine's log files as the source, on the real dockerd and journald.

Short-lived `--rm` containers lose nothing; rotation (by renaming, and in place) loses and
repeats nothing; a container whose file cannot be read falls back to the Engine API.
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.integration.conftest import BRIDGE, line_keys, wait_until
from tests.integration.test_exactly_once_across_restarts import wait_complete

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run_rm_burst(containers, label: str, count: int) -> list[str]:
    """`count` containers started at once, each printing one stdout and one stderr line and
    exiting at once, removed by dockerd (`--rm`); returns their names. (No network at all
    rather than `--network none`: see conftest.Containers.)"""
    names = [f"burst-{label}-{i}" for i in range(count)]

    def run(name: str) -> None:
        containers.run(f"echo out-{name}; echo err-{name} >&2", name=name, auto_remove=True)

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return names


@pytest.mark.engines("docker26", "podman5")
@pytest.mark.parametrize("round_", [1, 2])
def test_100_rm_containers_at_once_lose_nothing(
    bridge, journald, containers, label, engine, round_
):
    if round_ > 1 and engine.spec.contained:
        pytest.skip("one round on an added engine version")
    bridge.start()
    names = run_rm_burst(containers, label, 100)
    expected = sorted([f"out-{n}".encode() for n in names] + [f"err-{n}".encode() for n in names])

    def arrived():
        got = [
            e["MESSAGE"] for e in journald.entries() if e["MESSAGE"].startswith((b"out-", b"err-"))
        ]
        return got if len(got) >= len(expected) else None

    with_timeout = wait_until(arrived, 120, "400 lines", interval=0.5) or []
    time.sleep(1.5)  # anything duplicated late would show up now
    got = sorted(
        e["MESSAGE"] for e in journald.entries() if e["MESSAGE"].startswith((b"out-", b"err-"))
    )
    assert got == expected, (len(with_timeout), len(got))
    print(
        f"round {round_}: {len(names)} --rm containers, {len(got)} of {len(expected)} lines, each once"
    )


@pytest.mark.engines("docker26", "podman5")
@pytest.mark.parametrize("driver", ["json-file", "local"])
def test_rotation_by_renaming_under_a_fast_writer(bridge, journald, containers, engine, driver):
    # 60,000 lines at about 20,000 a second, a 200 KB file every ~0.15 s and only two kept:
    # the bridge must read each file before dockerd deletes it two rotations later, and count
    # no rotation gap where none was lost (an unpaced writer: the next test). The local driver compresses each rotated file (gzip) by default. Podman's "json-file" is its
    # k8s-file, which conmon rotates at max-size (keeping no older file).
    if engine.spec.kind == "podman" and driver == "local":
        pytest.skip("Podman has no local log driver")
    bridge.start()
    lines = 60_000
    c = containers.run(
        f"seq 1 {lines} | sed 's/^/rot-/' | while read -r a; do echo $a; "
        "case $a in *000) sleep 0.05;; esac; done",
        log_config={"type": driver, "config": {"max-size": "200k", "max-file": "2"}},
    )
    c.wait(timeout=300)
    counts = wait_complete(journald, c, {f"rot-{i}".encode(): 1 for i in range(1, lines + 1)})
    assert len(counts) == lines
    assert bridge.metric("journald_bridge_rotation_gaps_total") == 0


def test_rotation_by_renaming_under_an_unpaced_writer(bridge, journald, containers):
    # `seq` unpaced into 200 KB files with only two kept: dockerd rotates every 10 ms or so and
    # deletes each file two rotations later. The opener (a process of its own, in real time)
    # holds every file from its creation: nothing is lost, repeated or counted as a gap.
    bridge.start()
    lines = 60_000
    c = containers.run(
        f"seq 1 {lines} | sed 's/^/rot-/'",
        log_config={"type": "json-file", "config": {"max-size": "200k", "max-file": "2"}},
    )
    c.wait(timeout=300)
    expected = {f"rot-{i}".encode(): 1 for i in range(1, lines + 1)}

    def done():
        counts = line_keys(journald.messages(c.id))
        gaps = bridge.metric("journald_bridge_rotation_gaps_total")
        return counts if sum(counts.values()) >= lines or gaps else None

    wait_until(done, 120, "every line, or a counted gap", interval=1)
    time.sleep(2)  # the rest of a gapped log, and anything repeated late
    counts = line_keys(journald.messages(c.id))
    gaps = bridge.metric("journald_bridge_rotation_gaps_total")
    lost = [k for k in expected if k not in counts]
    print(f"unpaced rotation: {lines - len(lost)} of {lines} lines, {gaps:.0f} gaps counted")
    assert "real-time priority" in bridge.log(), "the opener did not run in real time"
    assert {k: n for k, n in counts.items() if n > 1} == {}
    assert (len(lost), gaps) == (0, 0)


def test_a_container_rotating_its_log_flat_out_harms_no_one(bridge, journald, containers):
    # Whoever runs a container picks its log options: 1 KB files, written as fast as dockerd
    # takes them, are a flood of new files for the opener (held to its real-time budget) and
    # of held descriptors for the bridge (past select()'s 1024 once). A neighbour's lines all
    # arrive, once, and nothing in the bridge fails.
    bridge.start()
    flood = containers.run(
        "yes 0123456789012345678901234567890123456789 | head -c 10000000",
        log_config={"type": "json-file", "config": {"max-size": "1k", "max-file": "2"}},
    )
    lines = 2000
    good = containers.run(
        f"i=1; while [ $i -le {lines} ]; do echo good-$i; i=$((i+1)); "
        "[ $((i % 100)) -eq 0 ] && sleep 0.1; done"
    )
    flood.wait(timeout=300)
    good.wait(timeout=120)
    wait_complete(journald, good, {f"good-{i}".encode(): 1 for i in range(1, lines + 1)})
    log = bridge.log()
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
    assert "opened in the bridge" not in log  # the opener is still there
    assert bridge.get("/readyz")[0] == 200


@pytest.mark.engines("docker26")
def test_a_single_file_truncated_in_place_loses_and_repeats_nothing(bridge, journald, containers):
    # max-size with max-file=1: json-file truncates the same inode instead of renaming
    bridge.start()
    lines = 3000
    c = containers.run(
        f"i=1; while [ $i -le {lines} ]; do echo trunc-$i; i=$((i+1)); "
        "[ $((i % 100)) -eq 0 ] && sleep 0.05; done",
        log_config={"type": "json-file", "config": {"max-size": "50k", "max-file": "1"}},
    )
    c.wait(timeout=120)
    wait_complete(journald, c, {f"trunc-{i}".encode(): 1 for i in range(1, lines + 1)})


def test_a_container_whose_file_cannot_be_read_goes_through_the_api(bridge, journald, containers):
    # The bridge as an unprivileged member of the docker group: the socket answers, but
    # /var/lib/docker/containers is root's alone.
    docker_gid = grp.getgrnam("docker").gr_gid
    home = Path(tempfile.mkdtemp(prefix="jb-unprivileged-"))
    try:
        home.chmod(0o755)
        os.chown(home, 65534, docker_gid)
        bridge.config_path = home / "bridge.toml"
        bridge.state_dir = home / "state"
        bridge.configure(
            journal={"resume_from_journal": False}, state={"directory": str(bridge.state_dir)}
        )
        bridge.write_config()
        log = open(bridge.log_path, "ab")  # noqa: SIM115 -- handed to the child
        bridge.process = subprocess.Popen(
            ["setpriv", "--reuid", "65534", "--regid", str(docker_gid), "--clear-groups",
             BRIDGE, "run", "--config", str(bridge.config_path)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        bridge.wait_ready()
        c = containers.run("echo through-the-api")
        journald.wait_for_line(c.id, b"through-the-api")
        assert "reading its log through the Engine API" in bridge.log()
        assert bridge.metric("journald_bridge_container_attach_total", source="api") >= 1
        assert bridge.metric("journald_bridge_container_attach_total", source="files") == 0
    finally:
        if bridge.process is not None:
            bridge.stop()
        shutil.rmtree(home, ignore_errors=True)
