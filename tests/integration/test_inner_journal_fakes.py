"""200 containers that fake a journal beside a real one, through the whole daemon: the bridge
stays inside its memory budget, and the real journal is still read.

Half the fakes hold a 13-byte file named like a journal (no worker at all: its header is not a
journal's), half a file with a sound journal header and nothing else (a worker each, which
sd-journal refuses: they share `max_workers` slots in turns). The fakes are plain busybox
containers made through the API and started from a few threads: what the test costs is
dockerd's 200 starts, not 200 command lines.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import TEST_LABEL, wait_until
from tests.integration.test_inner_journal_follower import Box, docker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAKES = 200
SLOTS = 8
WORKER_ANON_KIB = 16 * 1024  # a worker is about 10 MiB of its own memory
BRIDGE_RSS_MIB = 256  # the bridge itself, 200 containers attached (its unit allows 512 MiB)
MID = "0123456789abcdef0123456789abcdef"
JOURNAL = f"/var/log/journal/{MID}"
# busybox sh: the first 104 bytes of a journal header (signature, header size 208, arena size
# 3888), then zeros to 4 KiB
SOUND_HEADER = (
    "printf LPKSHHRH; head -c 80 /dev/zero; printf '\\320\\0\\0\\0\\0\\0\\0\\0\\060\\017';"
    " head -c 3998 /dev/zero"
)
SCRIPTS = {
    "junk": f"mkdir -p {JOURNAL} && printf 'not a journal' > {JOURNAL}/x.journal",
    "header": f"mkdir -p {JOURNAL} && ({SOUND_HEADER}) > {JOURNAL}/system.journal",
}


def workers_anon_kib(bridge_pid: int) -> tuple[int, int]:
    """How many reader processes the bridge has, and their anonymous memory in KiB."""
    children: list[str] = []
    for task in Path(f"/proc/{bridge_pid}/task").iterdir():  # readers' threads start them
        try:
            children.extend((task / "children").read_text().split())
        except FileNotFoundError:
            continue
    count = anon = 0
    for child in children:
        try:
            if b"inner_journal.worker" not in Path(f"/proc/{child}/cmdline").read_bytes():
                continue
            status = Path(f"/proc/{child}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        count += 1
        anon += next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("RssAnon")),
            0,
        )
    return count, anon


def test_200_fakes_stay_inside_the_worker_budget_and_a_real_journal_is_read(
    bridge, journald, containers, docker_client, label
) -> None:
    started = time.monotonic()
    bridge.configure(inner_journal={"max_workers": SLOTS})
    bridge.start()
    real = Box(label)
    made: list[Any] = []

    def fake(kind: str) -> None:
        container = docker_client.containers.create(
            containers.image,
            ["sh", "-c", SCRIPTS[kind] + " && exec sleep 600"],
            labels={TEST_LABEL: label},
            network_disabled=True,
            network_mode="none",
        )
        made.append(container)
        container.start()

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(fake, ("junk", "header") * (FAKES // 2)))
        fakes_up = time.monotonic() - started
        real.logger("beside", "read beside 200 fakes")
        cid = docker("inspect", "-f", "{{.Id}}", real.name).strip()
        most = most_anon = most_rss = 0
        waited = most_metric = 0.0

        def arrived() -> bool:
            nonlocal most, most_anon, most_rss, waited, most_metric
            count, anon = workers_anon_kib(bridge.pid)
            most, most_anon = max(most, count), max(most_anon, anon)
            most_rss = max(most_rss, bridge.rss_bytes())
            running = bridge.metric("journald_bridge_inner_journal_workers", state="running")
            most_metric = max(most_metric, running)
            waited = max(
                waited, bridge.metric("journald_bridge_inner_journal_workers", state="waiting")
            )
            entries = journald.entries(CONTAINER_ID_FULL=cid, CONTAINER_STREAM="journal")
            return any(e["MESSAGE"] == b"read beside 200 fakes" for e in entries)

        wait_until(arrived, 90, "the real journal's line", interval=0.5)
        read = time.monotonic() - started
        attached = bridge.metric("journald_bridge_containers_attached", source="files")
    finally:
        real.remove()
        with ThreadPoolExecutor(8) as pool:  # one at a time, the fixture would take half a minute
            list(pool.map(lambda container: container.remove(force=True), made))
    print(
        f"\n{FAKES} fakes up after {fakes_up:.0f} s; the real line read after {read:.0f} s; "
        f"at most {most} workers ({most_metric:.0f} by the metric), "
        f"{most_anon / 1024:.1f} MiB anonymous; {waited:.0f} waiting; "
        f"bridge RSS at most {most_rss / 2**20:.0f} MiB"
    )
    assert attached >= FAKES  # every fake is attached by its log file: all were seen
    assert most <= SLOTS and most_metric <= SLOTS
    assert most_anon <= SLOTS * WORKER_ANON_KIB
    assert most_rss <= BRIDGE_RSS_MIB * 2**20
    assert 0 < waited <= FAKES // 2  # the header fakes queue; the junk ones never get a worker
