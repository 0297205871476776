"""The API source: one reader thread per container, from its log stream to the queue.

A reader opens GET /containers/{id}/logs with `since` at its cursor, decodes the body itself
(chunked encoding, frames, timestamps, cursor filter, partial-line joiner) and puts batches on
the pipeline queue. When the stream ends it asks dockerd why: still running (dockerd restarted,
or the container restarted) means reopen at the cursor; stopped means one more pass without
follow, so that nothing the follow stream missed at the stop is lost; removed means done.

Podman (`podman=True`) is read in windows instead of a follow stream. Its follow stream drops
lines of a fast writer, and its compat API stamps lines in whole seconds (up to 5.4 at least),
so a position `(second, k)` counted on a stream that dropped lines points at the wrong line.
What Podman does keep exact: `since` and `until` are compared with each line's own nanosecond
time from conmon's file, and a read without follow is a full read of that file. So while the
container runs, each poll reads from the position's second to an edge, without follow: the edge
is the engine's clock minus `_SETTLE_NS` (every line stamped before it is whole in the file),
and the lines of the position's second are numbered again from its first, so `k` is exact
whatever broke before. After the stop, one last read without an edge takes the rest. The
cost: Podman reads the container's log file from its start at each poll (its API takes no
offset), and lines arrive `_SETTLE_NS` plus one poll late.

Errors are transient (connection refused, broken stream, 5xx: retry with backoff) or permanent
for this container (404/409: it is gone). An error the engine writes as the body of a `200 OK`
(Podman, for a container being removed) is classified the same way. Either way only this
container is affected.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import requests

from bridge.core.container import ContainerHandle
from bridge.core.cursor import Cursor, CursorFilter
from bridge.core.queue import PendingQueue
from bridge.core.record import STDERR, STDOUT, Record
from bridge.core.timestamps import TimestampParser, format_rfc3339_nano, format_since
from bridge.sources.api.clock import EngineClock
from bridge.sources.api.frames import (
    SYSTEM_ERROR,
    ChunkedDecoder,
    EngineErrorBody,
    FrameParser,
    RawStreamParser,
    StreamFormatError,
)
from bridge.sources.engine_api import (
    TRANSIENT_ERRORS,
    ContainerGone,
    ContainerStatus,
    container_status,
    is_gone,
)
from bridge.sources.reader import ReaderThread
from bridge.telemetry import Telemetry

log = logging.getLogger(__name__)

_READ_BYTES = 256 * 1024
# After a small read, wait this long before the next one. dockerd sends each line as its own
# HTTP chunk, so a reader that keeps up wakes once per line or two, and the per-wake-up costs
# (system calls, GIL hand-overs, a batch through the queue and a sendmmsg) outweigh the lines.
# Waiting lets the lines of the next millisecond arrive together; it adds at most this much
# latency, and nothing when the stream is busy enough to fill a read.
_LINGER_SECONDS = 0.002
_LINGER_BELOW_BYTES = 64 * 1024
# Podman's windows end this long before the engine's clock: the newest line of conmon's file may
# be half written, and Podman would hand its first half over as a whole line. A line is whole in
# the file within microseconds of its timestamp; a second covers a descheduled conmon. (A line
# even later than that is still read if its second is the position's own: each window numbers
# a second's lines again from its first.)
_SETTLE_NS = 1_000_000_000
_POLL_BUSY_SECONDS = 0.25  # the next window after one that had lines
_POLL_IDLE_SECONDS = 2.0  # at most this after empty ones


class ApiReader(ReaderThread):
    """Reads one container through the Engine API until its log ends for good."""

    source = "api"

    def __init__(
        self,
        api: docker.APIClient,
        handle: ContainerHandle,
        queue: PendingQueue,
        telemetry: Telemetry,
        max_line_bytes: int,
        max_backoff: float,
        *,
        status: ContainerStatus | None = None,
        podman: bool = False,
    ) -> None:
        super().__init__(handle, queue, telemetry, max_line_bytes)
        self._api = api
        self._podman = podman  # read in windows, never through a follow stream
        self._clock = EngineClock()
        self._edge_ns = 0  # Podman: every line stamped before this was read (this run)
        self._poll = _POLL_BUSY_SECONDS
        # The container's State as just seen (inspect or start event): the first pass uses it
        # instead of asking dockerd again (with --rm there is no time to lose).
        self._status = status  # the engine just said so: not asked again at first
        self._max_backoff = max_backoff
        self._timestamps = TimestampParser()
        self._sock: socket.socket | None = None

    def stop(self) -> None:
        """Stops reading; what was read is already queued."""
        super().stop()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        handle = self._handle
        if handle.read_cursor is None:
            handle.read_cursor = handle.start
        backoff = 0.1
        failing_since: float | None = None
        while not self._stop.is_set():
            try:
                status, self._status = self._status, None
                if status is None:
                    status = container_status(self._api, handle.id)
                running = status.running
                windowed = self._podman and running
                if windowed:
                    read = self._read(follow=False, until_ns=self._next_edge())
                else:
                    self._read(follow=running)
                if failing_since is not None:  # once a read went through, not before
                    log.info("container %s: reading again", self.name)
                    failing_since, backoff = None, 0.1
            except (docker.errors.APIError, EngineErrorBody) as exc:
                if is_gone(exc):
                    raise ContainerGone from exc
                failing_since = self._transient(exc, failing_since)
            except TRANSIENT_ERRORS as exc:
                if self._stop.is_set():
                    return
                failing_since = self._transient(exc, failing_since)
            else:
                if self._stop.is_set():
                    return  # stopped mid-read: the rest is read at the next start
                if not running and self._finish(status.finished_at):
                    return
                if windowed:
                    self._poll = (
                        _POLL_BUSY_SECONDS if read else min(2 * self._poll, _POLL_IDLE_SECONDS)
                    )
                    self._stop.wait(self._poll)
                continue
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    def _transient(self, exc: BaseException, failing_since: float | None) -> float:
        if failing_since is None:
            kind = type(exc).__name__
            self._telemetry.stream_error(kind)
            log.warning(
                "container %s: log stream interrupted (%s: %s); retrying", self.name, kind, exc
            )
            return time.monotonic()
        return failing_since

    def _next_edge(self) -> int:
        """Where the next Podman window ends: the engine's clock less the settling time,
        never before the last edge (the clock estimate moves within a second)."""
        if not self._clock.known:
            self._clock.observe(self._api._get(self._api._url("/_ping")))
        self._edge_ns = max(self._edge_ns, self._clock.now_ns() - _SETTLE_NS)
        return self._edge_ns

    def _read(self, *, follow: bool, until_ns: int = 0) -> int:
        """One request from the read cursor (to `until_ns`, exclusive, when given); returns
        how many lines it queued."""
        handle = self._handle
        cursor = handle.read_cursor or handle.start
        params: dict[str, Any] = {"stdout": 1, "stderr": 1, "timestamps": 1, "follow": int(follow)}
        if until_ns:
            params["until"] = format_rfc3339_nano(until_ns)
        tail = handle.backlog_tail
        if tail is not None and not cursor.streams:
            params["tail"] = str(tail)
            cursor_filter = CursorFilter(Cursor())  # the tail is exactly what is wanted
            # Should this stream break before a line arrives, reopening reads from here on.
            cursor = handle.start = Cursor(until_ns or time.time_ns(), {})
            handle.backlog_tail = None
        else:
            params["tail"] = "all"
            since = cursor.since_ns()
            if since > 0 and self._podman:  # Podman's `since` is exclusive
                params["since"] = format_rfc3339_nano(since - 1)
            elif since > 0:
                params["since"] = format_since(since)
            cursor_filter = CursorFilter(cursor)
        log.debug("container %s: reading logs %s from %s", self.name, params, cursor)
        try:
            response = self._api._get(
                self._api._url("/containers/{0}/logs", handle.id),
                params=params,
                stream=True,
                timeout=None,
            )
            self._api._raise_for_status(response)
            if self._podman:
                self._clock.observe(response)
            try:
                return self._consume(response, cursor_filter)
            finally:
                self._sock = None
                response.close()
        finally:
            handle.read_cursor = cursor_filter.advanced(cursor)
            if cursor_filter.gap_streams:
                self._rotation_gap()

    def _consume(self, response: requests.Response, cursor_filter: CursorFilter) -> int:
        parser: FrameParser | RawStreamParser = (
            RawStreamParser() if self._handle.info.tty else FrameParser()
        )
        queued = 0
        for body in self._body(response):
            records = self._records(parser.feed(body), cursor_filter)
            queued += len(records)
            self._put(records)
        records = self._records(parser.flush(), cursor_filter)
        self._put(records)
        return queued + len(records)

    def _records(
        self, frames: list[tuple[int, bytes]], cursor_filter: CursorFilter
    ) -> list[Record]:
        # The hot loop of the API source (once per line): locals and a plain-line shortcut
        # keep it cheap (bench/results.md). logfiles/reader.py's `_records` is its twin on
        # purpose: a shared helper would cost a call per line.
        records: list[Record] = []
        append = records.append
        admit = cursor_filter.admit
        joiner = self._joiner
        idle = joiner.idle
        parse = self._timestamps.parse
        for stream, payload in frames:
            if stream != STDOUT and stream != STDERR:
                if stream == SYSTEM_ERROR:
                    log.warning(
                        "container %s: dockerd: %s",
                        self.name,
                        payload.decode(errors="replace").strip(),
                    )
                continue
            space = payload.find(b" ", 0, 64)
            try:
                if space < 0:
                    raise ValueError("no timestamp")
                timestamp = payload[:space]
                ts_ns = parse(timestamp)
            except ValueError as exc:
                self._malformed(f"no valid timestamp: {exc}")
                continue
            k = admit(stream, ts_ns)
            if k is None:
                continue
            if idle and payload[-1] == 10:  # a whole line, nothing pending: no joiner needed
                position = (ts_ns, k)
                append(Record(stream, payload[space + 1 : -1], timestamp, position, position))
            else:
                records.extend(joiner.push(stream, timestamp, (ts_ns, k), payload[space + 1 :]))
                idle = joiner.idle
        return records

    def _body(self, response: requests.Response) -> Iterator[bytes]:
        """The response body, read in large blocks straight from the connection."""
        fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
        if fp is None or not hasattr(fp, "read1"):  # not http.client underneath: the slow way
            yield from response.raw.stream(_READ_BYTES, decode_content=False)
            return
        raw = getattr(fp, "raw", None)
        self._sock = getattr(raw, "_sock", None)
        if self._stop.is_set():
            return
        chunked = "chunked" in response.headers.get("Transfer-Encoding", "").lower()
        decoder = ChunkedDecoder() if chunked else None
        remaining = int(response.headers.get("Content-Length", "-1"))
        linger = 0.0
        while remaining != 0:
            if linger:
                time.sleep(linger)
            data = fp.read1(_READ_BYTES)
            linger = _LINGER_SECONDS if len(data) < _LINGER_BELOW_BYTES else 0.0
            if not data:
                if decoder is not None and not decoder.done and not self._stop.is_set():
                    raise StreamFormatError("log stream ended in the middle of a chunk")
                return
            if decoder is not None:
                body = decoder.feed(data)
                if body:
                    yield body
                if decoder.done:
                    return
            else:
                if remaining > 0:
                    data = data[:remaining]
                    remaining -= len(data)
                yield data
