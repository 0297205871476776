from __future__ import annotations

import logging
import signal
import socket
import time
from pathlib import Path

from bridge.app import Bridge
from bridge.config import EX_CONFIG, Config, load_config
from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor
from bridge.core.fields import ContainerInfo, encode_pairs
from bridge.core.queue import Batch
from bridge.core.record import Record
from bridge.sources.filters import ContainerFilter

FIELDS = encode_pairs([("CONTAINER_NAME", "web")])


def test_readiness_follows_the_journal_writer(tmp_path):
    bridge = Bridge(_config(tmp_path))
    assert bridge.readiness() == "the journal writer has stopped"
    bridge.writer.start()
    try:
        assert "is not accepting entries" in (bridge.readiness() or "")
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


def test_a_taken_metrics_port_is_one_error_line_and_exit_78(tmp_path, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        bridge = Bridge(_config(tmp_path, metrics={"listen": listen}))
        with caplog.at_level(logging.INFO):
            assert bridge.run() == EX_CONFIG
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in errors] == [
        f"metrics: cannot serve http://{listen}/metrics: Address already in use"
    ]
    assert all(r.exc_info is None for r in caplog.records)
    # Nothing was started, so nothing is stopped: no "stopping" lines, no state file.
    assert "stopping" not in caplog.text
    assert not bridge.writer.alive
    assert not (tmp_path / "state").exists()


def _config(tmp_path: Path, metrics: dict[str, object] | None = None) -> Config:
    return Config.model_validate(
        {
            "journal": {"socket": str(tmp_path / "missing"), "resume_from_journal": False},
            "state": {"directory": str(tmp_path / "state")},
            "metrics": metrics or {"enabled": False},
        }
    )


class _Engine:
    def __init__(self, name: str, reason: str | None) -> None:
        self.name, self._reason = name, reason

    def down_reason(self) -> str | None:
        return self._reason


def test_readiness_names_every_engine_that_is_down(tmp_path):
    bridge = Bridge(_config(tmp_path))
    bridge.writer.start()
    bridge.journal.writable = lambda: True  # type: ignore[method-assign]
    try:
        bridge.engines = [_Engine("docker", None), _Engine("podman", "reconnecting")]  # type: ignore[list-item]
        assert bridge.readiness() == "engines down: podman (reconnecting)"
        bridge.engines = [_Engine("docker", None)]  # type: ignore[list-item]
        assert bridge.readiness() is None
    finally:
        bridge.writer.drain_and_stop(5)


class _Reconfigured:
    """An engine that keeps the filters a reload gives it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.attached, self.up = 0, True
        self.filters: list[ContainerFilter] = []

    def reconfigure(self, config: Config, container_filter: ContainerFilter) -> None:
        self.filters.append(container_filter)


def _web(name: str) -> ContainerInfo:
    return ContainerInfo("c" * 64, name, "img", "sha256:b")


def test_a_reload_applies_an_engine_filter_at_once_and_other_engine_keys_at_restart(
    tmp_path, caplog
):
    base = f'[journal]\nsocket = "{tmp_path}/missing"\n[metrics]\nenabled = false\n'
    base += f'[state]\ndirectory = "{tmp_path}/state"\n'
    path = tmp_path / "bridge.toml"
    path.write_text(base + '[[engines]]\nname = "podman"\n')
    bridge = Bridge(load_config(path), str(path))
    docker, podman = _Reconfigured("docker"), _Reconfigured("podman")
    bridge.engines = [docker, podman]  # type: ignore[list-item]

    path.write_text(base + '[[engines]]\nname = "podman"\nfilter = {exclude_names = ["web"]}\n')
    bridge._do_reload()
    assert "next restart" not in caplog.text
    assert docker.filters[-1].reason_to_skip(_web("web")) is None
    assert podman.filters[-1].reason_to_skip(_web("web")) == "excluded by name or image"

    # With its host changed too, the whole table waits for the restart, its filter included.
    path.write_text(
        base + '[[engines]]\nname = "podman"\nhost = "unix:///elsewhere.sock"\n'
        'filter = {exclude_names = ["db"]}\n'
    )
    bridge._do_reload()
    assert "changes to [engines] take effect at the next restart" in caplog.text
    assert podman.filters[-1].reason_to_skip(_web("web")) == "excluded by name or image"
    assert podman.filters[-1].reason_to_skip(_web("db")) is None
