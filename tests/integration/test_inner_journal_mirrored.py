"""Discovery finds a systemd container's own journal and the
bridge mirrors it, exactly once across a kill -9; a label opts a container out.

(test_inner_journal_reader.py drives the reader alone; this is the wiring: the watch, the readers per
container, the state file and the journal read-back of inner positions.)
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.integration.conftest import wait_until
from tests.integration.test_inner_journal_follower import SYSTEMD_IMAGE, Box

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def boxes(label: str) -> Iterator[list[Box]]:
    made: list[Box] = []
    yield made
    for box in made:
        box.remove()


def inner_messages(journald, cid: str, tag: str) -> list[bytes]:
    entries = journald.entries(CONTAINER_ID_FULL=cid, CONTAINER_STREAM="journal")
    return [e["MESSAGE"] for e in entries if e.get("SYSLOG_IDENTIFIER") == tag.encode()]


def cid_of(box: Box) -> str:
    return box.docker("inspect", "-f", "{{.Id}}", box.name).strip()


@pytest.mark.engines("docker26")
def test_a_logger_line_inside_arrives_with_the_containers_fields(
    bridge, journald, boxes, label, engine
):
    engine.provide(SYSTEMD_IMAGE)
    bridge.start()
    box = Box(label, host=engine.host)
    boxes.append(box)
    box.logger("innerapp", "hello from inside", priority="user.warning")
    cid = cid_of(box)
    entries = wait_until(
        lambda: [
            e
            for e in journald.entries(CONTAINER_ID_FULL=cid, CONTAINER_STREAM="journal")
            if e["MESSAGE"] == b"hello from inside"
        ],
        90,
        "the inner line",
        interval=0.5,
    )
    (entry,) = entries
    assert entry["PRIORITY"] == b"4"
    assert entry["SYSLOG_IDENTIFIER"] == b"innerapp"
    assert entry["CONTAINER_NAME"] == box.name.encode()
    assert entry["CONTAINER_ENGINE"] == engine.spec.name.encode()
    assert entry["INNER_COMM"] == b"logger"
    assert entry["INNER_MACHINE_ID"] == box.machine_id.encode()
    assert bridge.metric("journald_bridge_container_attach_total", source="inner_journal") >= 1


def test_kill_9_in_the_middle_of_5000_inner_lines_each_once(bridge, journald, boxes, label):
    bridge.start()
    box = Box(label)
    boxes.append(box)
    cid = cid_of(box)
    box.sh("logger -t warmup ready")
    wait_until(lambda: inner_messages(journald, cid, "warmup"), 90, "the inner journal followed")
    lines = 5000
    box.sh(
        f"i=1; while [ $i -le {lines} ]; do logger -t burst line-$i; "
        "[ $((i % 500)) -eq 0 ] && sleep 0.2; i=$((i+1)); done &"
    )
    wait_until(lambda: len(inner_messages(journald, cid, "burst")) > lines // 5, 120, "a fifth")
    bridge.kill9()
    time.sleep(1)
    bridge.start()
    wait_until(lambda: box.count("burst") >= lines, 180, "the writer inside to finish")
    wait_until(
        lambda: len(inner_messages(journald, cid, "burst")) >= lines, 180, "every line", interval=1
    )
    time.sleep(2)  # anything duplicated late would show up now
    counts = Counter(inner_messages(journald, cid, "burst"))
    expected = {f"line-{i}".encode() for i in range(1, lines + 1)}
    assert set(counts) == expected, sorted(expected - set(counts))[:5]
    assert {k: n for k, n in counts.items() if n > 1} == {}


def test_a_container_opts_out_with_a_label(bridge, journald, boxes, label):
    bridge.start()
    box = Box(label, extra=["--label", "journald-bridge.inner_journal=false"])
    boxes.append(box)
    followed = Box(label)
    boxes.append(followed)
    for b in (box, followed):
        b.sh("logger -t optout here")
    wait_until(lambda: inner_messages(journald, cid_of(followed), "optout"), 90, "the control")
    assert inner_messages(journald, cid_of(box), "optout") == []
