"""LogFileSource: the watcher's catch kept until a reader claims it, for Docker and Podman."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.core.fields import ContainerInfo
from bridge.sources.logfiles.layout import DOCKER, podman
from bridge.sources.logfiles.rotation.numbered import NumberedFiles
from bridge.sources.logfiles.rotation.replaced import ReplacedFiles
from bridge.sources.logfiles.source import LogFileSource
from bridge.telemetry import Telemetry

from .rotating import Conmon, Reader, names
from .test_watch import write_log


def held_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def files_of(cid: str) -> list[str]:
    """The descriptors this process holds on files of the container (unlinked ones too)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if cid in target:
            found.append(target)
    return found


class Started(list[str]):
    def __call__(self, cid: str) -> None:
        self.append(cid)


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry(CollectorRegistry())


@pytest.fixture
def podman_source(tmp_path: Path, telemetry: Telemetry) -> Iterator[LogFileSource]:
    (tmp_path / "overlay-containers").mkdir()
    source = LogFileSource(str(tmp_path), telemetry, Started(), layout=podman())
    source.start()
    yield source
    source.stop()


def podman_container(source: LogFileSource) -> tuple[ContainerInfo, Conmon]:
    """`podman create`, then `start` (conmon creates ctr.log tens of ms after create)."""
    cid = secrets.token_hex(32)
    userdata = Path(source.root) / "overlay-containers" / cid / "userdata"
    userdata.mkdir(parents=True)
    deadline = time.monotonic() + 5
    while not source._watcher.watched(cid):  # userdata/ watched: conmon's create is an event
        assert time.monotonic() < deadline
        time.sleep(0.002)
    # The compat API's inspect says "json-file" for k8s-file.
    info = ContainerInfo(cid, "web", "busybox", "sha256:x", log_driver="json-file", engine="podman")
    return info, Conmon(str(userdata / "ctr.log"))


def gaps(telemetry: Telemetry) -> float:
    return telemetry.registry.get_sample_value("journald_bridge_rotation_gaps_total") or 0.0


def test_podman_files_replaced_before_and_after_the_claim_are_read_in_order(podman_source):
    source = podman_source
    before = held_fds()
    info, log = podman_container(source)
    log.lines(3)
    assert source.sync(5)
    assert source._on_start == [info.id]  # a new ctr.log: attach now
    for _ in range(2):  # replaced before any reader is there: no name leads to these files
        log.rotate()
        assert source.sync(5)  # (the watcher opens each before the next rotation)
        log.lines(3)
    assert source.path(info) == log.path
    assert source.on_disk(info.id) is None  # Podman keeps no name or labels on disk
    files = source.open(info)
    assert isinstance(files, ReplacedFiles)
    r = Reader(files)
    assert r.drain() == names(9)
    log.rotate()  # after the claim: handed over to the reader's set
    log.lines(2)
    assert source.sync(5)
    assert r.drain() == names(2, 9)
    assert r.restarts == ["start", "rotated", "rotated", "rotated"]
    files.close()
    source.released(info.id)
    # The current ctr.log is kept for a later reader: a restarted container appends to it.
    assert source.waiting(info.id) and held_fds() == before + 1
    source.stop()
    assert files_of(info.id) == []


def test_a_podman_file_missed_by_the_watcher_is_the_readers_gap(podman_source, telemetry):
    source = podman_source
    info, log = podman_container(source)
    log.lines(1)
    assert source.sync(5)
    files = source.open(info)
    assert files is not None
    r = Reader(files)
    assert r.drain() == names(1)
    source.on_missed(info.id)  # as the watcher reports it, after the newer file
    assert r.drain() == []
    assert files.gaps == 1
    assert gaps(telemetry) == 0  # counted once, by the reader, not here as well
    files.close()
    source.released(info.id)


def test_podman_drivers_without_a_file_are_not_read(podman_source):
    info, _ = podman_container(podman_source)
    journald = ContainerInfo(info.id, "web", "", "", log_driver="journald", engine="podman")
    assert podman_source.open(journald) is None
    created_only = ContainerInfo(secrets.token_hex(32), "x", "", "", engine="podman")
    assert podman_source.open(created_only) is None  # not started: no ctr.log yet


def test_docker_keeps_only_the_first_file_its_set_finds_the_rest_by_name(tmp_path, telemetry):
    (tmp_path / "containers").mkdir()
    source = LogFileSource(str(tmp_path), telemetry, Started())
    assert source.layout is DOCKER
    source.start()
    try:
        cid = secrets.token_hex(32)
        d = tmp_path / "containers" / cid
        d.mkdir()
        (d / "config.v2.json").write_bytes(b'{"Name":"/web","Config":{"Labels":{"a":"b"}}}')
        log = d / f"{cid}-json.log"
        line = b'{"log":"%d\\n","stream":"stdout","time":"2026-12-02T06:04:38.014497171Z"}\n'
        write_log(log, line % 1)
        assert source.sync(5)
        os.rename(log, f"{log}.1")
        write_log(log, line % 2)
        assert source.sync(5)
        assert source.on_disk(cid)["Name"] == "/web"  # type: ignore[index]
        files = source.open(ContainerInfo(cid, "web", "", ""))
        assert isinstance(files, NumberedFiles)
        assert Reader(files).drain() == [b"1", b"2"]
        files.close()
        source.released(cid)
    finally:
        source.stop()
