from __future__ import annotations

import signal
import time
from pathlib import Path

from bridge.app import Bridge, docker_client
from bridge.config import Config
from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor
from bridge.core.fields import ContainerInfo, encode_pairs
from bridge.core.queue import Batch
from bridge.core.record import Record

FIELDS = encode_pairs([("CONTAINER_NAME", "web")])


def test_docker_connection_pools_stay_small():
    # docker-py makes a pool per request URL and fills its queue to max_pool_size on creation:
    # at 4096 that was 8 ms of CPU per request, and 8 s to attach 500 containers.
    client = docker_client(Config.model_validate({"docker": {"host": "unix:///run/x.sock"}}))
    try:
        adapter = client.get_adapter(client.base_url)
        assert adapter.max_pool_size <= 16
    finally:
        client.close()


def test_readiness_follows_the_journal_writer(tmp_path):
    bridge = Bridge(_config(tmp_path))
    assert bridge.readiness() == "the journal writer has stopped"
    bridge.writer.start()
    try:
        assert bridge.readiness() == "not connected to dockerd"
    finally:
        bridge.writer.drain_and_stop(5)
    assert bridge.readiness() == "the journal writer has stopped"


def test_a_second_stop_signal_abandons_the_drain(tmp_path):
    bridge = Bridge(_config(tmp_path))  # its journal socket does not exist: sends wait
    bridge.writer.start()
    handle = ContainerHandle.create(
        ContainerInfo("a" * 64, "web", "img", "sha256:b"),
        FIELDS,
        Cursor(),
    )
    bridge.queue.put(Batch(handle, [Record(1, b"x", b"2026-11-28T00:00:00Z", (1, 1), (1, 1))], 1))
    bridge._on_signal(signal.SIGTERM, None)
    bridge._on_signal(signal.SIGTERM, None)
    started = time.monotonic()
    assert not bridge.writer.drain_and_stop(30)
    assert time.monotonic() - started < 10
    assert handle.committed == {}  # not written: read again at the next start


def _config(tmp_path: Path) -> Config:
    return Config.model_validate(
        {
            "journal": {"socket": str(tmp_path / "missing"), "resume_from_journal": False},
            "state": {"directory": str(tmp_path / "state")},
            "metrics": {"enabled": False},
        }
    )
