"""A container's own journal in the host journal, exactly once, on the real services.

A container of the project's debootstrap image runs systemd as PID 1 with its own journald (see
test_inner_journal_follower.py). The inner-journal reader is driven directly, with a real queue, a
real JournalWriter and JournalSocket, into a real journald (this test's namespace); discovery
is not involved. A bridge crash is played by abandoning the writer and dropping every object
that held a position: the next reader resumes only from what the host journal says.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from systemd import journal

from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor
from bridge.core.fields import (
    ContainerInfo,
    MetadataSelection,
    TagTemplate,
    container_fields,
    encode_field,
    encode_pairs,
)
from bridge.core.queue import PendingQueue
from bridge.sinks.journald.inner_readback import InnerJournalPositions
from bridge.sinks.journald.socket import JournalSocket
from bridge.sinks.journald.writer import JournalWriter
from bridge.sources.inner_journal import WorkerOptions
from bridge.sources.inner_journal.position import InnerPosition, resume_position
from bridge.sources.inner_journal.reader import InnerJournalReader
from bridge.telemetry import Telemetry
from tests.integration.conftest import Journald, wait_until
from tests.integration.test_inner_journal_follower import Box, docker

pytestmark = [pytest.mark.integration]

FAST = WorkerOptions(poll_seconds=0.2)


@pytest.fixture
def box(label: str) -> Iterator[Box]:
    instance = Box(label)
    try:
        yield instance
    finally:
        instance.remove()


class Bridge:
    """The pieces of the bridge that move inner entries: queue, writer, socket, readers."""

    def __init__(self, journald: Journald) -> None:
        self.journald = journald
        self.registry = CollectorRegistry()
        self.telemetry = Telemetry(self.registry)
        self.queue = PendingQueue(64 << 20)
        self.socket = JournalSocket(journald.socket, 8 << 20, self.telemetry)
        self.socket.connect()
        self.writer = JournalWriter(self.queue, self.socket, self.telemetry, lambda: None)
        self.writer.start()
        self.readers: list[InnerJournalReader] = []

    def handle(self, box: Box) -> ContainerHandle:
        data = json.loads(docker("inspect", box.name))[0]
        info = ContainerInfo.from_inspect(data)
        fields = container_fields(info, TagTemplate("{{.Name}}"), MetadataSelection())
        return ContainerHandle.create(info, encode_pairs(fields), Cursor())

    def follow(
        self, handle: ContainerHandle, box: Box, start: InnerPosition | None = None
    ) -> InnerJournalReader:
        reader = InnerJournalReader(
            handle, self.queue, self.telemetry, box.pid, start, options=FAST
        )
        reader.start()
        self.readers.append(reader)
        return reader

    def crash(self) -> None:
        """What a kill -9 leaves: the journal's entries and nothing else of this run."""
        self.writer.abandon()
        for reader in self.readers:
            reader.stop()
        for reader in self.readers:
            reader.join(15)
            assert reader.finished
        self.socket.close()

    def shutdown(self) -> None:
        for reader in self.readers:
            reader.stop()
        for reader in self.readers:
            reader.join(15)
        self.writer.drain_and_stop(10)
        self.socket.close()

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def bridge(journald: Journald) -> Iterator[Bridge]:
    instance = Bridge(journald)
    yield instance
    instance.shutdown()


def inner_entries(journald: Journald, container_id: str, **matches: str) -> list[dict[str, Any]]:
    return journald.entries(CONTAINER_ID_FULL=container_id, CONTAINER_STREAM="journal", **matches)


def wait_tagged(journald: Journald, cid: str, tag: str, count: int, timeout: float = 120) -> list:
    return wait_until(
        lambda: (
            len(found := inner_entries(journald, cid, SYSLOG_IDENTIFIER=tag)) >= count and found
        ),
        timeout,
        f"{count} inner entries tagged {tag}",
        interval=0.25,
    )


def sync(journald: Journald, timeout: float = 30) -> None:
    """Waits until journald stored everything sent before now (readback.py's marker, alone)."""
    token = uuid.uuid4().hex
    sock = JournalSocket(journald.socket, 1 << 20, Telemetry(CollectorRegistry()))
    sock.connect()
    try:
        sock.send(encode_field(b"JOURNALD_BRIDGE_SYNC", token.encode()), lambda: True)
    finally:
        sock.close()
    reader = journal.Reader(namespace=journald.namespace)
    try:
        reader.add_match(JOURNALD_BRIDGE_SYNC=token)
        wait_until(lambda: reader.seek_head() or reader.get_next(), timeout, "the sync marker")
    finally:
        reader.close()


def test_a_logger_line_arrives_with_its_fields_and_the_containers(
    box: Box, bridge: Bridge, journald: Journald
) -> None:
    handle = bridge.handle(box)
    bridge.follow(handle, box)
    box.logger("innerapp", "hello-inside", priority="user.warning", unit="innerdemo")
    (hello,) = wait_tagged(journald, handle.id, "innerapp", 1)
    assert hello["MESSAGE"] == b"hello-inside"
    assert hello["PRIORITY"] == b"4"
    assert hello["SYSLOG_IDENTIFIER"] == b"innerapp"  # the inner one, and only it
    assert hello["SYSLOG_FACILITY"] == b"1"
    assert hello["CONTAINER_STREAM"] == b"journal"
    assert hello["CONTAINER_NAME"] == box.name.encode()
    assert hello["CONTAINER_ID"] == handle.id[:12].encode()
    assert hello["CONTAINER_TAG"] == box.name.encode()
    assert hello["IMAGE_NAME"] == b"bridge-test/systemd:latest"
    assert hello["INNER_SYSTEMD_UNIT"] == b"innerdemo.service"
    assert hello["INNER_COMM"] == b"logger"
    assert int(hello["INNER_PID"]) > 1
    assert hello["INNER_MACHINE_ID"] == box.machine_id.encode()
    assert hello["_UID"] == str(os.geteuid()).encode()
    assert b"s=" in hello["JOURNALD_BRIDGE_INNER_CURSOR"]
    # "the unit inside container web" is one journalctl line
    out = subprocess.run(
        [
            "journalctl", f"--namespace={journald.namespace}", "-o", "cat",
            f"CONTAINER_NAME={box.name}", "INNER_SYSTEMD_UNIT=innerdemo.service",
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "hello-inside" in out.splitlines()
    # the container's boot made entries of its own: they came along, counted under "journal"
    forwarded = bridge.sample("journald_bridge_lines_forwarded_total", stream="journal")
    assert forwarded is not None and forwarded > 1


@pytest.mark.slow
def test_5000_lines_with_a_crash_in_the_middle_arrive_once(
    box: Box, bridge: Bridge, journald: Journald
) -> None:
    total = 5000
    handle = bridge.handle(box)
    bridge.follow(handle, box)
    box.sh("logger -t mark started")
    wait_tagged(journald, handle.id, "mark", 1)
    # paced, so that the crash lands while lines are still being written and forwarded
    script = (
        f"seq {total} | while read i; do echo $i; "
        "[ $((i % 250)) = 0 ] && sleep 0.2; done | systemd-cat -t load"
    )
    writing = subprocess.Popen(["docker", "exec", box.name, "sh", "-c", script])
    try:
        wait_tagged(journald, handle.id, "load", 1500)
        # journald stalls: entries pile up read but not sent, or sent but not committed
        journald.freeze()
        try:
            stream = handle.inner
            assert stream is not None
            wait_until(lambda: stream.read != stream.committed, 30, "entries in flight")
            time.sleep(1)
            bridge.crash()
        finally:
            journald.thaw()
        before = len(inner_entries(journald, handle.id, SYSLOG_IDENTIFIER="load"))
        assert writing.poll() is None, "the lines were all written before the crash"

        # the next run: nothing of the last one but the host journal
        sync(journald)
        positions = InnerJournalPositions(namespace=journald.namespace)
        try:
            saved = positions.position(handle.id)
        finally:
            positions.close()
        start = resume_position(None, saved)
        assert start is not None
        after = Bridge(journald)
        try:
            after.follow(after.handle(box), box, start)
            writing.wait(120)
            entries = wait_tagged(journald, handle.id, "load", total)
            time.sleep(2)  # a few more polls: anything repeated would show now
            entries = inner_entries(journald, handle.id, SYSLOG_IDENTIFIER="load")
        finally:
            after.shutdown()
    finally:
        if writing.poll() is None:
            writing.kill()
        writing.wait()
    assert 1500 <= before < total
    assert [int(e["MESSAGE"]) for e in entries] == list(range(1, total + 1))
    cursors = [e["JOURNALD_BRIDGE_INNER_CURSOR"] for e in inner_entries(journald, handle.id)]
    assert len(cursors) == len(set(cursors))


def test_a_stop_and_start_brings_new_lines_and_repeats_nothing(
    box: Box, bridge: Bridge, journald: Journald
) -> None:
    handle = bridge.handle(box)
    first = bridge.follow(handle, box)
    box.sh("logger -t before one; logger -t before two")
    wait_tagged(journald, handle.id, "before", 2)
    docker("stop", "-t", "30", box.name)
    first.join(60)
    assert first.finished and not first.wake()
    end = first.committed_position()
    assert end is not None and end.drained  # read to its end after the exit
    stopped = inner_entries(journald, handle.id)
    assert stopped[-1]["MESSAGE"] == b"Journal stopped"
    # a crash now, before the state file is saved: the host journal alone says drained, so
    # the journal that starts empty on tmpfs is no "reset" gap
    sync(journald)
    positions = InnerJournalPositions(namespace=journald.namespace)
    try:
        read_back = resume_position(None, positions.position(handle.id))
    finally:
        positions.close()
    assert read_back is not None and read_back.drained and read_back.cursor == end.cursor

    docker("start", box.name)
    box.wait_running()
    second = bridge.follow(handle, box)  # the same handle: its inner stream goes on
    box.sh("logger -t after three")
    wait_tagged(journald, handle.id, "after", 1)
    time.sleep(2)  # a few more polls
    entries = inner_entries(journald, handle.id)
    assert [
        e["MESSAGE"] for e in inner_entries(journald, handle.id, SYSLOG_IDENTIFIER="before")
    ] == [
        b"one",
        b"two",
    ]
    cursors = [e["JOURNALD_BRIDGE_INNER_CURSOR"] for e in entries]
    assert len(cursors) == len(set(cursors))
    assert entries[: len(stopped)] == stopped  # the first boot's entries, once
    assert bridge.sample("journald_bridge_inner_journal_gaps_total", kind="reset") == 0
    assert second.committed_position() is not None
