from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry

from bridge.config import Config, EngineConfig
from bridge.core.cursor import Cursor
from bridge.core.queue import PendingQueue
from bridge.core.state import ContainerState, State
from bridge.sources.engine import Engine
from bridge.sources.engine_api import engine_client, engine_kind
from bridge.sources.filters import ContainerFilter
from bridge.telemetry import Telemetry


def test_connection_pools_stay_small():
    # docker-py makes a pool per request URL and fills its queue to max_pool_size on creation:
    # at 4096 that was 8 ms of CPU per request, and 8 s to attach 500 containers.
    client = engine_client(EngineConfig(name="docker", host="unix:///run/x.sock"))
    try:
        adapter = client.get_adapter(client.base_url)
        assert adapter.max_pool_size <= 16
    finally:
        client.close()


def test_a_tls_engine_is_reached_over_https_with_its_files(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until connecting")
    client = engine_client(
        EngineConfig(name="edge", host="tcp://127.0.0.1:2376", tls_ca_file=str(ca))
    )
    try:
        assert client.base_url == "https://127.0.0.1:2376"
        assert client.verify == str(ca)
        assert not client.trust_env  # REQUESTS_CA_BUNDLE must not replace the engine's CA
    finally:
        client.close()


def test_podman_says_what_it_is_in_its_version_answer():
    assert engine_kind({"Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]}) == "podman"
    assert engine_kind({"Components": [{"Name": "Engine", "Version": "20.10.24"}]}) == "docker"
    for odd in (None, [], {"Components": "x"}, {"Components": [7]}):
        assert engine_kind(odd) == "docker"


def test_an_engine_that_does_not_answer_is_down_with_its_reason_and_stops_at_once(tmp_path, caplog):
    registry = CollectorRegistry()
    config = Config.model_validate(
        {"engines": [{"name": "podman", "host": f"unix://{tmp_path}/none.sock"}]}
    )
    state = State(first_run_ns=0)
    state.containers("podman")["c" * 64] = ContainerState(Cursor(0, {1: (5, 0)}))
    engine = Engine(
        config.engines[0],
        lambda: config,
        PendingQueue(1 << 20),
        Telemetry(registry),
        state.points("podman", 0),
        lambda: ContainerFilter(config.filter),
        lambda name: None,
    )
    caplog.set_level(logging.WARNING)
    engine.start()
    deadline = time.monotonic() + 5
    while "cannot connect" not in caplog.text:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not engine.up
    assert "none.sock: no such socket" in (engine.down_reason() or "")
    engine.checkpoint()
    assert list(state.containers("podman")) == ["c" * 64]  # its saved positions stand
    assert registry.get_sample_value("journald_bridge_engine_up", {"engine": "podman"}) == 0
    started = time.monotonic()
    engine.stop(5)
    assert engine.started.wait(5)
    assert time.monotonic() - started < 2
    assert caplog.text.count("engine podman: cannot connect") == 1  # once per reason
