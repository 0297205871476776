"""Podman through its API alone (`source = "api"`: a remote or rootless Podman), on the real
Podman: a fast writer's lines each come out once, in order, though Podman's follow stream
would drop some and stamps whole seconds (the reader reads windows: sources/api/reader.py),
and though the connection is cut under the reader again and again.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import docker
from prometheus_client import CollectorRegistry

from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor
from bridge.core.fields import ContainerInfo
from bridge.core.queue import PendingQueue
from bridge.core.record import STDERR, STDOUT
from bridge.sources.api.reader import ApiReader
from bridge.sources.engine_api import ContainerStatus
from bridge.telemetry import Telemetry
from tests.integration.test_podman_log_files import (  # noqa: F401 (fixtures)
    MAX_LINE_BYTES,
    ON_EACH_PODMAN,
    Podman,
    drain,
    engine,
    podman,
    podman_api,
)

CUTS = 5


@ON_EACH_PODMAN
def test_a_fast_writers_lines_come_once_in_order_through_cut_connections(
    podman_api: docker.APIClient,  # noqa: F811 (the fixtures imported above)
    podman: Podman,  # noqa: F811
) -> None:
    lines = 20_000
    script = f"sleep 1; seq 1 {lines}; echo done >&2; sleep 2"
    cid = podman.run(script)
    data = podman_api.inspect_container(cid)
    handle = ContainerHandle.create(
        ContainerInfo.from_inspect(data, engine="podman"), b"", Cursor()
    )
    pending = PendingQueue(256 << 20)
    registry = CollectorRegistry()
    reader = ApiReader(
        podman_api,
        handle,
        pending,
        Telemetry(registry),
        MAX_LINE_BYTES,
        1.0,
        status=ContainerStatus.of(data["State"]),
        podman=True,
    )
    reader.start()
    stop = threading.Event()

    def cut() -> None:  # the connection breaks under a window, a few times
        done: list[socket.socket] = []
        while len(done) < CUTS and not stop.wait(0.005):
            sock = reader._sock
            if sock is not None and sock not in done:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                done.append(sock)
                stop.wait(0.3)

    cutter = threading.Thread(target=cut, daemon=True)
    cutter.start()
    try:
        records = drain(pending, reader, timeout=180)
    finally:
        stop.set()
        reader.stop()
        reader.join(10)
    out = [r.message for r in records if r.stream == STDOUT]
    assert out == [b"%d" % i for i in range(1, lines + 1)]
    assert [r.message for r in records if r.stream == STDERR] == [b"done"]
    assert registry.get_sample_value(
        "journald_bridge_stream_errors_total", {"kind": "StreamFormatError"}
    )
