"""ApiReader's per-line loop on a recorded Engine API body, cut anywhere; and what it makes of
an error the engine writes as the body of a `200 OK`.

The body is what dockerd sends for `GET /containers/{id}/logs?timestamps=1`: multiplexed
frames inside HTTP chunks. However the connection hands it over (every cut of the bytes), each
line comes out once, in order, with a long line's pieces joined; the cursor filter drops what
was already read before. Podman's JSON error for a container removed meanwhile ends the reader
as removed; another error is one warning and a retry.
"""

from __future__ import annotations

import itertools
import logging
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor, CursorFilter
from bridge.core.fields import ContainerInfo, encode_pairs
from bridge.core.queue import Batch, EndOfStream, PendingQueue
from bridge.core.record import STDERR, STDOUT
from bridge.sources.api import reader as api_reader
from bridge.sources.api.frames import EngineErrorBody
from bridge.sources.api.reader import ApiReader
from bridge.sources.engine_api import is_gone
from bridge.telemetry import Telemetry
from tests.unit.sources.api.test_frames import (
    PODMAN_GONE_BODY,
    PODMAN_REMOVED_BODY,
    encode_frames,
)

BASE_NS = 1_700_000_000 * 10**9


def stamp(i: int) -> bytes:
    return b"2023-11-14T22:13:20.%09dZ" % i


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def chunked(pieces: list[bytes]) -> bytes:
    """One HTTP chunk per frame, as dockerd flushes them."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def recorded() -> tuple[bytes, list[tuple[int, bytes]]]:
    """A body and the (stream, message) pairs it holds: plain lines on both streams, and one
    long line that dockerd split into three partial messages (no newline but the last)."""
    frames: list[bytes] = []
    expected: list[tuple[int, bytes]] = []
    for i in range(1, 6):
        stream = STDOUT if i % 2 else STDERR
        frames.append(frame(stream, stamp(i) + b" line %d\n" % i))
        expected.append((stream, b"line %d" % i))
    frames.append(frame(STDOUT, stamp(6) + b" " + b"a" * 300))
    frames.append(frame(STDOUT, stamp(7) + b" " + b"b" * 300))
    frames.append(frame(STDOUT, stamp(8) + b" " + b"c" * 10 + b"\n"))
    expected.append((STDOUT, b"a" * 300 + b"b" * 300 + b"c" * 10))
    frames.append(frame(STDERR, stamp(9) + b" last\n"))
    expected.append((STDERR, b"last"))
    return chunked(frames), expected


class Pieces:
    """A connection that hands the body over in the given pieces, one per read."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = list(pieces)

    def read1(self, _size: int) -> bytes:
        return self._pieces.pop(0) if self._pieces else b""


class Response:
    def __init__(self, pieces: list[bytes]) -> None:
        fp = Pieces(pieces)
        self.raw = type("Raw", (), {"_fp": type("HTTPResponse", (), {"fp": fp})()})()
        self.headers = {"Transfer-Encoding": "chunked"}


def read_all(pieces: list[bytes], start: Cursor) -> list[tuple[int, bytes]]:
    info = ContainerInfo(id="a" * 64, name="web", image_name="img", image_id="sha256:b")
    handle = ContainerHandle.create(info, b"", start)
    queue = PendingQueue(1 << 30)
    reader = ApiReader(None, handle, queue, Telemetry(CollectorRegistry()), 1 << 20, 1.0)
    reader._consume(Response(pieces), CursorFilter(start))  # type: ignore[arg-type]
    out: list[tuple[int, bytes]] = []
    while not queue.empty():
        for item in queue.get_many(0, 1 << 30):
            assert isinstance(item, Batch)
            out.extend((r.stream, r.message) for r in item.records)
    return out


def cut(body: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted(set(points)), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges) if b > a]


@pytest.fixture(autouse=True)
def no_linger(monkeypatch: Any) -> None:
    # The linger batches a trickle of small reads on a real socket; here it would only sleep.
    monkeypatch.setattr(api_reader, "_LINGER_SECONDS", 0.0)


def test_the_whole_body_at_once() -> None:
    body, expected = recorded()
    assert read_all([body], Cursor()) == expected


def test_the_body_cut_at_every_byte() -> None:
    body, expected = recorded()
    assert read_all([body[i : i + 1] for i in range(len(body))], Cursor()) == expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_body_cut_anywhere(data: st.DataObject) -> None:
    body, expected = recorded()
    points = data.draw(st.lists(st.integers(1, len(body) - 1), max_size=40))
    assert read_all(cut(body, points), Cursor()) == expected


def test_lines_already_read_are_not_read_again() -> None:
    body, expected = recorded()
    # Read up to line 3 before: a resumed stream starts at the same second and is filtered.
    first = Cursor()
    info = ContainerInfo(id="a" * 64, name="web", image_name="img", image_id="sha256:b")
    handle = ContainerHandle.create(info, b"", first)
    reader = ApiReader(
        None, handle, PendingQueue(1 << 30), Telemetry(CollectorRegistry()), 1 << 20, 1.0
    )
    filt = CursorFilter(first)
    cut_at = body.index(b"line 4") - len(stamp(4)) - 1 - 8  # the frame header of line 4
    cut_at = body.rindex(b"\r\n", 0, cut_at) + 2  # ... and its chunk's size line
    cut_at = body.rindex(b"\r\n", 0, cut_at - 2) + 2
    reader._consume(Response([body[:cut_at], b"0\r\n\r\n"]), filt)  # type: ignore[arg-type]
    resumed = filt.advanced(first)
    again = read_all([body], resumed)
    assert again == expected[3:]


def test_a_clock_step_back_admits_every_line_and_is_counted(caplog) -> None:
    """r27 on the API source: the stream's stamps go back 3 s; no line is dropped."""
    frames = []
    for i in range(300):
        ms = 10_000 + i * 20 if i < 100 else 9_000 + (i - 100) * 20
        ts = b"2026-11-28T00:00:%02d.%03d000000Z" % (ms // 1000, ms % 1000)
        frames.append(frame(STDOUT, ts + b" line %d\n" % i))
    info = ContainerInfo(id="a" * 64, name="web", image_name="img", image_id="sha256:b")
    handle = ContainerHandle.create(info, b"", Cursor())
    queue = PendingQueue(1 << 30)
    telemetry = Telemetry(CollectorRegistry())
    reader = ApiReader(None, handle, queue, telemetry, 1 << 20, 1.0)
    reader._consume(Response([chunked(frames)]), CursorFilter(Cursor()))  # type: ignore[arg-type]
    got = [r.message for item in queue.get_many(0, 1 << 30) for r in item.records]  # type: ignore[union-attr]
    assert got == [b"line %d" % i for i in range(300)]
    labels = {"source": "api"}
    assert telemetry.registry.get_sample_value("journald_bridge_clock_steps_total", labels) == 1
    assert caplog.text.count("stepped back by 2.980 s") == 1


# --- an error as the body of a 200 ------------------------------------------------------

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
    reader = ApiReader(engine, handle, queue, Telemetry(registry), 1 << 20, 0.1)  # type: ignore[arg-type]
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
