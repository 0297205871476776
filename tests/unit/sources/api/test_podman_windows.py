"""Podman read in windows: every line once, in order, though Podman stamps whole seconds and
the connection breaks anywhere.

The fake engine answers as Podman's compat logs handler does (pkg/api/handlers/compat/
containers_logs.go, libpod/container_log.go, 4.3 to 5.4): `since` is exclusive and compared
with the line's own nanosecond time in conmon's file, and the timestamps it writes are RFC3339
whole seconds. Lines land in the file as the engine's clock passes their time; a read may find
the newest one half written (once: conmon's write ends long before the next poll), and Podman
hands the half over as a line. The container stops once all are written, or is removed.
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor
from bridge.core.fields import ContainerInfo
from bridge.core.queue import Batch, PendingQueue
from bridge.core.timestamps import NS_PER_SECOND, parse_general
from bridge.sources.api import reader as api_reader
from bridge.sources.api.reader import ApiReader
from bridge.telemetry import Telemetry
from tests.unit.sources.api.test_frames import encode_frames

T0 = 1_700_000_000 * NS_PER_SECOND


class _Raw:
    def __init__(self, body: bytes, cut: int | None) -> None:
        self._body, self._cut = body, cut

    def stream(self, amount: int, decode_content: bool) -> Iterator[bytes]:
        if self._cut is None:
            yield self._body
            return
        yield self._body[: self._cut]
        raise requests.exceptions.ChunkedEncodingError("connection broken")


class _Response:
    def __init__(self, body: bytes, date_ns: int, cut: int | None = None) -> None:
        self.raw = _Raw(body, cut)
        length = len(body) if cut is None else len(body) + 1
        self.headers = {
            "Content-Length": str(length),
            "Date": email.utils.formatdate(date_ns // NS_PER_SECOND, usegmt=True),
        }

    def close(self) -> None:
        pass


class FakePodman:
    def __init__(self, lines: list[tuple[int, int, bytes]], step_ns: int, cuts: list[int]):
        self.to_write = sorted(lines, key=lambda line: line[1])
        self.file: list[tuple[int, int, bytes]] = []
        self.now = T0
        self.step_ns = step_ns
        self.cuts = list(cuts)  # for each logs request in turn: where its body breaks (-1: not)
        self.requests: list[dict[str, Any]] = []
        self.torn: set[int] = set()  # lines read half written once
        self.removed_after: int | None = None  # inspects answered before it is gone

    def _tick(self) -> None:
        self.now += self.step_ns
        while self.to_write and self.to_write[0][1] <= self.now:
            self.file.append(self.to_write.pop(0))

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        self._tick()
        if self.removed_after is not None:
            if self.removed_after == 0:
                gone = requests.Response()
                gone.status_code = 404
                raise docker.errors.NotFound("no such container", response=gone)
            self.removed_after -= 1
        return {"State": {"Running": self.running, "FinishedAt": "x"}}

    @property
    def running(self) -> bool:
        """Until its last line is written out (a stopped conmon tears nothing)."""
        return bool(self.to_write) or (
            bool(self.file) and self.now - self.file[-1][1] < NS_PER_SECOND
        )

    def _url(self, path: str, *args: str) -> str:
        return path.format(*args)

    def _raise_for_status(self, response: _Response) -> None:
        pass

    def _get(self, url: str, params: dict[str, Any] | None = None, **_: Any) -> _Response:
        if url == "/_ping":
            return _Response(b"OK", self.now)
        assert params is not None and params["follow"] == 0, "Podman is never followed"
        self.requests.append(params)
        assert "until" not in params
        since = parse_general(params["since"].encode()) if "since" in params else None
        frames = []
        for n, (stream, ts, message) in enumerate(self.file):
            if since is not None and ts <= since:
                continue
            if n == len(self.file) - 1 and self.running and n not in self.torn:
                self.torn.add(n)  # conmon is writing it: read half, this once
                message = message[: len(message) // 2]
            second = email.utils.formatdate(ts // NS_PER_SECOND, usegmt=True)
            stamp = email.utils.parsedate_to_datetime(second).strftime("%Y-%m-%dT%H:%M:%SZ")
            frames.append((stream, stamp.encode() + b" " + message + b"\n"))
        body = encode_frames(frames)
        cut = self.cuts.pop(0) if self.cuts else -1
        self._tick()
        return _Response(body, self.now, None if cut < 0 else cut % (len(body) + 1))


@pytest.fixture(autouse=True)
def no_waits(monkeypatch: Any) -> None:
    monkeypatch.setattr(api_reader, "_POLL_BUSY_SECONDS", 0.0)
    monkeypatch.setattr(api_reader, "_POLL_IDLE_SECONDS", 0.0)
    monkeypatch.setattr(api_reader, "_LINGER_SECONDS", 0.0)


def read(engine: FakePodman, start: Cursor | None = None) -> list[tuple[int, bytes]]:
    info = ContainerInfo("a" * 64, "web", "img", "sha256:b")
    handle = ContainerHandle.create(info, b"", start or Cursor())
    queue = PendingQueue(1 << 30)
    reader = ApiReader(
        engine,  # type: ignore[arg-type]
        handle,
        queue,
        Telemetry(CollectorRegistry()),
        1 << 20,
        0.0,
        podman=True,
    )
    reader._pause = lambda seconds: None  # type: ignore[method-assign]
    reader.start()
    reader.join(30)
    assert reader.finished
    out: list[tuple[int, bytes]] = []
    while not queue.empty():
        for item in queue.get_many(0, 1 << 30):
            if isinstance(item, Batch):
                out.extend((r.stream, r.message) for r in item.records)
    return out


lines_strategy = st.lists(
    st.tuples(st.sampled_from([1, 2]), st.integers(0, 6 * NS_PER_SECOND)), max_size=120
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines_strategy,
    st.integers(NS_PER_SECOND // 10, 2 * NS_PER_SECOND),
    st.lists(st.integers(-1, 4000), max_size=12),
)
def test_every_line_once_in_order_whatever_breaks(
    raw: list[tuple[int, int]], step_ns: int, cuts: list[int]
) -> None:
    lines = [(s, T0 + NS_PER_SECOND + t, b"line-%d" % i) for i, (s, t) in enumerate(raw)]
    lines.sort(key=lambda line: line[1])
    engine = FakePodman(lines, step_ns, cuts)
    got = read(engine)
    for stream in (1, 2):
        assert [m for s, m in got if s == stream] == [m for s, _, m in lines if s == stream]


def test_a_resume_from_a_whole_second_position_skips_exactly_what_was_read() -> None:
    lines = [(1, T0 + NS_PER_SECOND + i * 1000, b"line-%d" % i) for i in range(10)]
    second = (T0 + NS_PER_SECOND) // NS_PER_SECOND * NS_PER_SECOND
    engine = FakePodman(lines, NS_PER_SECOND, [])
    got = read(engine, Cursor(0, {1: (second, 4)}))
    assert [m for _, m in got] == [b"line-%d" % i for i in range(4, 10)]
    assert engine.requests[0]["since"].endswith(".999999999Z")  # inclusive of that second


def test_the_last_line_read_before_the_container_is_removed_is_queued() -> None:
    # `--rm`: the first read ends on the container's only line (held back: it may be half
    # written), and the engine has forgotten the container by the next look.
    lines = [(1, T0 + NS_PER_SECOND // 10, b"gone-at-once")]
    engine = FakePodman(lines, NS_PER_SECOND // 5, [])
    engine.removed_after = 1
    engine.torn.add(0)  # written whole
    assert read(engine) == [(1, b"gone-at-once")]


def test_an_idle_containers_last_line_comes_when_two_reads_ended_on_it() -> None:
    engine = FakePodman([(1, T0 + NS_PER_SECOND // 10, b"only")], NS_PER_SECOND, [])
    engine.to_write.append((1, T0 + 100 * NS_PER_SECOND, b"much-later"))  # runs on meanwhile
    engine._tick()
    info = ContainerInfo("a" * 64, "web", "img", "sha256:b")
    queue = PendingQueue(1 << 30)
    reader = ApiReader(
        engine,  # type: ignore[arg-type]
        ContainerHandle.create(info, b"", Cursor()),
        queue,
        Telemetry(CollectorRegistry()),
        1 << 20,
        0.0,
        podman=True,
    )
    assert reader._read(follow=False, hold_last=True) == 0  # read half written: held
    assert reader._read(follow=False, hold_last=True) == 0  # whole now, not as held: held
    assert reader._read(follow=False, hold_last=True) == 1  # the same again: queued
    (batch,) = queue.get_many(0, 1 << 30)
    assert isinstance(batch, Batch) and [r.message for r in batch.records] == [b"only"]
    assert reader._read(follow=False, hold_last=True) == 0  # nothing new, nothing again
