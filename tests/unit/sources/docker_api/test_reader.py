"""The API reader against a fake engine: what it makes of an error written as a 200's body."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor
from bridge.core.fields import ContainerInfo, encode_pairs
from bridge.core.queue import Batch, EndOfStream, PendingQueue
from bridge.service.telemetry import Telemetry
from bridge.sources.docker_api.frames import EngineErrorBody
from bridge.sources.docker_api.reader import LogReader, is_gone
from tests.unit.sources.docker_api.test_frames import (
    PODMAN_GONE_BODY,
    PODMAN_REMOVED_BODY,
    encode_frames,
)

TS = b"2026-11-28T00:13:57.123456789Z "
STOPPED = {"Running": False, "FinishedAt": "2026-11-28T00:14:00Z"}


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, amount: int, decode_content: bool) -> Iterator[bytes]:
        yield self._body


class _Response:
    def __init__(self, body: bytes) -> None:
        self.raw = _Raw(body)
        self.headers = {"Content-Length": str(len(body))}

    def close(self) -> None:
        pass


class _Engine:
    """Answers each logs request with the next body, `200 OK` every time."""

    def __init__(self, *bodies: bytes) -> None:
        self.bodies = list(bodies)

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        return {"State": STOPPED}

    def _url(self, path: str, *args: str) -> str:
        return path.format(*args)

    def _get(self, url: str, **kwargs: Any) -> _Response:
        return _Response(self.bodies.pop(0))

    def _raise_for_status(self, response: _Response) -> None:
        pass


def _read(engine: _Engine) -> tuple[list[Any], CollectorRegistry]:
    info = ContainerInfo("a" * 64, "web", "img", "sha256:b")
    handle = ContainerHandle.create(info, encode_pairs([("CONTAINER_NAME", "web")]), Cursor())
    queue, registry = PendingQueue(1 << 20), CollectorRegistry()
    reader = LogReader(engine, handle, queue, Telemetry(registry), 1 << 20, 0.1)  # type: ignore[arg-type]
    reader.start()
    reader.join(10)
    assert reader.finished
    items: list[Any] = []
    while not queue.empty():
        items.extend(queue.get_many(0, 1 << 30))
    return items, registry


def _body_errors(registry: CollectorRegistry) -> float | None:
    labels = {"kind": "EngineErrorBody"}
    return registry.get_sample_value("journald_bridge_stream_errors_total", labels)


@pytest.mark.parametrize("body", [PODMAN_GONE_BODY, PODMAN_REMOVED_BODY])
def test_podmans_error_body_for_a_removed_container_ends_the_reader_quietly(caplog, body):
    with caplog.at_level(logging.INFO):
        items, registry = _read(_Engine(body))
    assert [type(i) for i in items] == [EndOfStream]
    assert [r.getMessage() for r in caplog.records] == ["container web: removed; stopped reading"]
    assert _body_errors(registry) is None


def test_another_error_body_is_one_warning_and_the_read_is_tried_again(caplog):
    failure = b'{"cause":"database is locked","message":"database is locked","response":500}\n'
    lines = encode_frames([(1, TS + b"one\n"), (2, TS + b"two\n")])
    with caplog.at_level(logging.WARNING):
        items, registry = _read(_Engine(failure, lines))
    assert [r.getMessage() for r in caplog.records] == [
        "container web: log stream interrupted (EngineErrorBody: the engine answered 500: "
        "database is locked); retrying"
    ]
    batches = [i for i in items if isinstance(i, Batch)]
    assert [r.message for b in batches for r in b.records] == [b"one", b"two"]
    assert isinstance(items[-1], EndOfStream)
    assert _body_errors(registry) == 1


def test_gone_reads_the_body_as_it_reads_a_non_200_answer():
    assert is_gone(
        EngineErrorBody(500, "container x does not exist in database: no such container")
    )
    assert is_gone(EngineErrorBody(500, "container has already been removed"))
    assert is_gone(EngineErrorBody(404, "anything"))
    assert not is_gone(EngineErrorBody(500, "database is locked"))
    # Without a status, the words alone do not say the engine meant this container.
    assert not is_gone(EngineErrorBody(None, "no such container"))
